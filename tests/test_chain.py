"""The chain port's shared types and helpers."""

from __future__ import annotations

import pytest

from validator.chain import BlockRef, ChainError, CommitmentTooLong, check_commitment_text, version_key


def test_block_ref_validates_hash() -> None:
    BlockRef(1, "0x" + "a" * 64)
    for bad in ("a" * 64, "0x" + "A" * 64, "0x" + "a" * 63):
        with pytest.raises(ValueError):
            BlockRef(1, bad)
    with pytest.raises(ValueError):
        BlockRef(-1, "0x" + "a" * 64)


@pytest.mark.parametrize(("version", "key"), [("0.1.0", 100), ("1.2.3", 10203), ("2.0", 20000), ("0.1.0rc1", 100)])
def test_version_key(version: str, key: int) -> None:
    assert version_key(version) == key


def test_version_key_defaults_to_package_and_rejects_garbage() -> None:
    assert version_key() == 100
    with pytest.raises(ValueError):
        version_key("dev")
    with pytest.raises(ValueError):
        version_key("1.100.0")


def test_commitment_text_limits_are_bytes_not_characters() -> None:
    assert check_commitment_text("a" * 128) == b"a" * 128
    with pytest.raises(CommitmentTooLong):
        check_commitment_text("\u00e9" * 65)
    with pytest.raises(ChainError):
        check_commitment_text("")

"""The chain port's shared types and helpers."""

from __future__ import annotations

import pytest

from validator.chain.port import (
    BlockRef,
    ChainError,
    CommitmentTooLong,
    check_commitment_text,
    normalized_weights,
    version_key,
    weights_match,
    weights_standing,
)


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


def test_weights_match_up_to_u16_rounding_and_only_the_same_vector() -> None:
    king = ([0, 1, 2], [0.0, 1.0, 0.0])
    assert normalized_weights(*king) == {1: 1.0}
    assert weights_match({1: 1.0}, *king)
    assert weights_match({1: 0.6667, 2: 0.3333}, [1, 2], [2.0, 1.0])  # fractions as subtensor's u16 row gives them
    assert not weights_match({2: 1.0}, *king)  # another king
    assert not weights_match({1: 0.5, 2: 0.5}, *king)
    assert not weights_match({}, *king) and not weights_match(None, *king)


def test_weights_standing_names_the_first_thing_missing() -> None:
    ok = {"registered": True, "permit": True, "stake": 10.0, "min_stake": 10.0}
    assert weights_standing(**ok) is None
    assert weights_standing(**{**ok, "registered": False})[0] == "not_registered"
    assert weights_standing(**{**ok, "permit": False})[0] == "no_permit"
    assert weights_standing(**{**ok, "stake": 9.99})[0] == "low_stake"

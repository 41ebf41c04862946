"""Strict safetensors header parsing: real files from the reference writer, and hostile ones."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from eval.model_store.safetensors_header import MAX_HEADER_BYTES, HeaderError, parse_header, read_header_from_file


def _raw(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if length is None else length) + body + data


def _parse(blob: bytes):
    return parse_header(blob, len(blob))


def test_reads_reference_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.zeros(3, 4), "b": torch.ones(5, dtype=torch.bfloat16)}, str(path), metadata={"format": "pt"})
    h = read_header_from_file(str(path))
    assert h.tensors["a"].shape == (3, 4) and h.tensors["a"].dtype == "F32"
    assert h.tensors["b"].dtype == "BF16"
    assert h.params == 17
    assert h.metadata == {"format": "pt"}
    assert h.data_start + 12 * 4 + 5 * 2 == path.stat().st_size


@pytest.mark.parametrize("length", [0, 1, MAX_HEADER_BYTES + 1, 2**64 - 1, 2**63])
def test_rejects_absurd_header_length(length):
    # 2**64-1 is what a "negative" i64 length looks like as the unsigned prefix.
    with pytest.raises(HeaderError, match="header length"):
        _parse(_raw(b"{}", length=length))


def test_rejects_header_longer_than_file():
    with pytest.raises(HeaderError, match="truncated"):
        _parse(_raw(b'{"a":1}', length=1000))


def test_rejects_file_shorter_than_prefix():
    with pytest.raises(HeaderError, match="too short"):
        parse_header(b"\x01\x02", 2)


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe{}", b"[1, 2]", b'"s"', b"[" * 200_000 + b"]" * 200_000])
def test_rejects_invalid_or_non_object_json(body):
    with pytest.raises(HeaderError):
        _parse(_raw(body))


def test_rejects_overlapping_offsets():
    hdr = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    with pytest.raises(HeaderError, match="overlaps"):
        _parse(_raw(hdr, b"\0" * 12))


def test_rejects_offsets_past_end_of_file():
    hdr = {"a": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}
    with pytest.raises(HeaderError, match="truncated"):
        _parse(_raw(hdr, b"\0" * 16))


def test_rejects_holes_and_trailing_bytes():
    hdr = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    with pytest.raises(HeaderError, match="hole"):
        _parse(_raw(hdr, b"\0" * 8))
    hdr = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    with pytest.raises(HeaderError, match="trailing"):
        _parse(_raw(hdr, b"\0" * 8))


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]},  # size mismatch (hides data)
        {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1},
        {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]},
        "not an object",
    ],
)
def test_rejects_malformed_entries(entry):
    with pytest.raises(HeaderError):
        _parse(_raw({"a": entry}, b"\0" * 8))


def test_rejects_bad_metadata():
    with pytest.raises(HeaderError, match="__metadata__"):
        _parse(_raw({"__metadata__": {"k": 1}}))


def test_empty_model_header_is_valid():
    assert _parse(_raw({})).tensors == {}

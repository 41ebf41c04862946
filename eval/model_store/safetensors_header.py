"""Strict parser for safetensors headers: hostile files are rejected, never trusted.

A safetensors file is ``u64 little-endian N`` + ``N`` bytes of JSON + a data
buffer. Admission reads only the header, so everything it concludes (parameter
count, dtypes, marker tensors) rests on this parser: lengths are bounded, the
JSON must be a flat object of well-formed entries, and the offsets must tile the
data buffer exactly (inside the file, no overlap, no gaps).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from eval.errors import KlhillError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit the reference implementation enforces
MAX_TENSORS = 200_000
MAX_NAME_CHARS = 512
MAX_RANK = 8
PREFIX_READ = 64 * 1024  # one read usually holds the whole header

DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}


class HeaderError(KlhillError):
    """The safetensors header is malformed or hostile (the file is rejected, not retried)."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets relative to the start of the data buffer
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: tensors in file order plus the optional string metadata."""

    header_len: int
    file_size: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        return 8 + self.header_len

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors.values())


def header_length(prefix: bytes, file_size: int) -> int:
    """Validate the 8-byte length prefix against the file size and the global bound."""
    if file_size < 8 or len(prefix) < 8:
        raise HeaderError(f"file too short for a safetensors header ({file_size} bytes)")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n < 2 or n > MAX_HEADER_BYTES:
        raise HeaderError(f"header length {n} outside [2, {MAX_HEADER_BYTES}]")
    if 8 + n > file_size:
        raise HeaderError(f"header length {n} runs past the end of the file ({file_size} bytes): truncated?")
    return n


def parse_header(header_bytes: bytes, file_size: int) -> SafetensorsHeader:
    """Parse ``header_bytes`` (prefix + JSON, at least ``8 + N`` bytes) of a file of ``file_size`` bytes."""
    n = header_length(header_bytes, file_size)
    if len(header_bytes) < 8 + n:
        raise HeaderError("header bytes incomplete")
    raw = header_bytes[8 : 8 + n]
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HeaderError(f"header is not valid UTF-8 JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise HeaderError("header JSON is not an object")
    if len(doc) > MAX_TENSORS + 1:
        raise HeaderError(f"too many header entries ({len(doc)} > {MAX_TENSORS})")
    metadata = _metadata(doc.pop("__metadata__", {}))
    tensors = {name: _entry(name, value) for name, value in doc.items()}
    _check_tiling(tensors, file_size - 8 - n)
    return SafetensorsHeader(header_len=n, file_size=file_size, tensors=tensors, metadata=metadata)


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise HeaderError("__metadata__ must map strings to strings")
    return value


def _entry(name: str, value: Any) -> TensorInfo:
    if not name or len(name) > MAX_NAME_CHARS:
        raise HeaderError(f"tensor name of length {len(name)} outside [1, {MAX_NAME_CHARS}]")
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data_offsets"}:
        raise HeaderError(f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise HeaderError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_nonneg_int(d) for d in shape):
        raise HeaderError(f"tensor {name!r}: shape must be a list of <= {MAX_RANK} non-negative ints")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_nonneg_int(o) for o in offsets):
        raise HeaderError(f"tensor {name!r}: data_offsets must be two non-negative ints")
    begin, end = offsets
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if end < begin or end - begin != expected:
        raise HeaderError(f"tensor {name!r}: {end - begin} bytes for shape {shape} {dtype} (expected {expected:g})")
    return TensorInfo(dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _is_nonneg_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63


def _check_tiling(tensors: dict[str, TensorInfo], data_len: int) -> None:
    """Offsets must cover [0, data_len) exactly once: no overlap, no hole, nothing past the end."""
    pos = 0
    for name, t in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if t.begin < pos:
            raise HeaderError(f"tensor {name!r} overlaps the previous tensor (offset {t.begin} < {pos})")
        if t.begin > pos:
            raise HeaderError(f"hole in the data buffer before tensor {name!r} ({pos}..{t.begin})")
        pos = t.end
    if pos > data_len:
        raise HeaderError(f"tensor data ends at {pos} but the file holds {data_len} data bytes: truncated")
    if pos < data_len:
        raise HeaderError(f"{data_len - pos} trailing bytes after the last tensor")


def read_header_from_file(path: str, file_size: int | None = None) -> SafetensorsHeader:
    """Read and parse a local file's header, touching only the header bytes."""
    with open(path, "rb") as fh:
        size = file_size if file_size is not None else fh.seek(0, 2)
        fh.seek(0)
        n = header_length(fh.read(8), size)
        return parse_header(struct.pack("<Q", n) + fh.read(n), size)

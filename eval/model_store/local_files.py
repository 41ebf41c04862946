"""Bounded reads of files on this machine, shared by the stores that serve local directories.

``LocalHub`` and ``LinkedDirs`` read repo files the same way: a small file at most
``max_bytes`` long (one byte more is read to tell "exactly the limit" from "larger"), a
safetensors header without touching tensor data, a sha256 in 1 MiB chunks. Each helper
returns how many bytes it read, so a store can account for them (tests assert on it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from eval.model_store.port import UnsafeRepoContent
from eval.model_store.safetensors_header import SafetensorsHeader, header_length, parse_header


def read_bounded(path: Path, max_bytes: int, name: str) -> bytes:
    """The whole file, or ``UnsafeRepoContent`` naming ``name`` when it is larger than ``max_bytes``.

    Reads at most ``max_bytes + 1`` bytes whatever the file's size, so an oversized file costs
    no more than the limit. The returned length is what was read.
    """
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeRepoContent(f"{name!r} is larger than {max_bytes} bytes")
    return data


def read_safetensors_header(path: Path) -> tuple[SafetensorsHeader, int]:
    """The parsed header and the number of bytes read (the 8-byte prefix and the JSON header only)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        prefix = fh.read(8)
        body = fh.read(header_length(prefix, size))
    return parse_header(prefix + body, size), len(prefix) + len(body)


def sha256_file(path: Path, counter: list[int] | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks; ``counter[0]`` grows by the bytes read."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            if counter is not None:
                counter[0] += len(chunk)
    return h.hexdigest()

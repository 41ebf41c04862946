"""Copy-detection hashes: one cheap (file metadata), one canonical (tensor content).

``metadata_hash`` catches byte-identical re-uploads before any download.
``content_hash`` catches re-sharded copies (LESSONS 3): it hashes what the
model *is* - each tensor's name, dtype, shape and raw bytes, in name order -
not how it happens to be split into files. It streams tensor bytes straight
from the files using the header offsets, so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from eval.errors import KlhillError
from eval.model_store.port import FileInfo
from eval.model_store.safetensors_header import read_header_from_file

CHUNK = 1 << 20


class HashingError(KlhillError):
    """A model directory cannot be hashed (missing shards, duplicate tensor names, bad headers)."""


def metadata_hash(files: list[FileInfo]) -> str:
    """sha256 over the sorted per-file sha256 of the ``*.safetensors`` files."""
    shas = []
    for f in files:
        if f.path.endswith(".safetensors"):
            if not f.sha256:
                raise HashingError(f"no sha256 known for {f.path}")
            shas.append(f.sha256)
    if not shas:
        raise HashingError("no safetensors files")
    return hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()


def content_hash(model_dir: Path) -> str:
    """Shard-invariant sha256 over sorted (name, dtype, shape, raw bytes) of every tensor."""
    model_dir = Path(model_dir)
    shards = sorted(p for p in model_dir.rglob("*.safetensors") if p.is_file())
    if not shards:
        raise HashingError(f"no safetensors files in {model_dir}")
    where: dict[str, tuple[Path, int, str, tuple[int, ...], int, int]] = {}
    for shard in shards:
        header = read_header_from_file(str(shard))
        for name, t in header.tensors.items():
            if name in where:
                raise HashingError(f"tensor {name!r} appears in more than one shard")
            where[name] = (shard, header.data_start, t.dtype, t.shape, t.begin, t.end)
    h = hashlib.sha256(b"klhill-content-v1\n")
    handles: dict[Path, object] = {}
    try:
        for name in sorted(where):
            shard, start, dtype, shape, begin, end = where[name]
            meta = f"{name}\0{dtype}\0{','.join(map(str, shape))}\0".encode()
            h.update(struct.pack("<Q", len(meta)) + meta + struct.pack("<Q", end - begin))
            fh = handles.get(shard) or handles.setdefault(shard, open(shard, "rb"))  # noqa: SIM115
            fh.seek(start + begin)  # type: ignore[attr-defined]
            remaining = end - begin
            while remaining:
                chunk = fh.read(min(CHUNK, remaining))  # type: ignore[attr-defined]
                if not chunk:
                    raise HashingError(f"{shard.name} is truncated inside tensor {name!r}")
                h.update(chunk)
                remaining -= len(chunk)
    finally:
        for fh in handles.values():
            fh.close()  # type: ignore[attr-defined]
    return h.hexdigest()

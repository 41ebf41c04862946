"""Copy hashes: metadata hash over file hashes; content hash invariant to sharding (LESSONS 3)."""

from __future__ import annotations

import random

import pytest
import torch
from admission_fixtures import tensors, write_model

from eval import hashing
from eval.hashing import HashingError, content_hash, metadata_hash
from eval.model_store.local import LocalHub
from eval.model_store.port import FileInfo


def test_content_hash_is_shard_invariant(tmp_path):
    one = content_hash(write_model(tmp_path / "a", shards=1))
    three = content_hash(write_model(tmp_path / "b", shards=3))
    four_no_index = content_hash(write_model(tmp_path / "c", shards=4, index=False))
    assert one == three == four_no_index


def test_vulnerable_first_shard_file_hash_would_miss_resharding(tmp_path):
    # LESSONS 3: the old rule hashed shard files; a re-sharded copy changes every file hash.
    hub = LocalHub(tmp_path / "hub")
    ra = hub.publish("o/a", write_model(tmp_path / "a", shards=1))
    rb = hub.publish("o/b", write_model(tmp_path / "b", shards=2))
    assert metadata_hash(hub.files("o/a", ra)) != metadata_hash(hub.files("o/b", rb))
    assert content_hash(tmp_path / "a") == content_hash(tmp_path / "b")


def test_content_hash_sees_any_change(tmp_path):
    base = content_hash(write_model(tmp_path / "a"))
    t = tensors()
    t["model.layers.0.input_layernorm.weight"][3] += 1e-3
    assert content_hash(write_model(tmp_path / "b", tensor_dict=t)) != base
    t = tensors()
    t["model.layers.9.extra.weight"] = t.pop("model.layers.1.input_layernorm.weight")  # rename only
    assert content_hash(write_model(tmp_path / "c", tensor_dict=t)) != base
    assert content_hash(write_model(tmp_path / "d", tensor_dict=tensors(torch.bfloat16))) != base
    t = tensors()
    t["model.layers.0.mlp.up_proj.weight"] = t["model.layers.0.mlp.up_proj.weight"].reshape(8, 16)
    assert content_hash(write_model(tmp_path / "e", tensor_dict=t)) != base  # same bytes, other shape


def test_content_hash_streams_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "CHUNK", 7)
    small = content_hash(write_model(tmp_path / "a"))
    monkeypatch.setattr(hashing, "CHUNK", 1 << 20)
    assert small == content_hash(tmp_path / "a")


def test_content_hash_rejects_duplicates_and_empty(tmp_path):
    write_model(tmp_path / "a", shards=2)
    (tmp_path / "a" / "model-00003-of-00002.safetensors").write_bytes(
        (tmp_path / "a" / "model-00001-of-00002.safetensors").read_bytes()
    )
    with pytest.raises(HashingError, match="more than one shard"):
        content_hash(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HashingError):
        content_hash(tmp_path / "empty")


def test_metadata_hash_orders_and_filters():
    a = FileInfo("model-1.safetensors", 1, "a" * 64)
    b = FileInfo("model-2.safetensors", 1, "b" * 64)
    cfg = FileInfo("config.json", 1, "c" * 64)
    assert metadata_hash([a, b, cfg]) == metadata_hash([b, a])
    assert metadata_hash([a]) != metadata_hash([a, b])
    with pytest.raises(HashingError):
        metadata_hash([cfg])
    with pytest.raises(HashingError):
        metadata_hash([FileInfo("m.safetensors", 1, None)])


def _write_raw(path, items: list[tuple[str, torch.Tensor]], header_order: list[str]) -> None:
    """A valid safetensors file whose data buffer follows ``items`` order and whose JSON keys follow ``header_order``.

    The reference writer sorts tensors; a hostile (or just different) writer need not, so the hash must not care.
    """
    import json
    import struct

    offsets, blobs, pos = {}, [], 0
    for name, t in items:
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        offsets[name] = (t, pos, pos + len(raw))
        blobs.append(raw)
        pos += len(raw)
    dt = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
    header = {
        n: {
            "dtype": dt[offsets[n][0].dtype],
            "shape": list(offsets[n][0].shape),
            "data_offsets": [offsets[n][1], offsets[n][2]],
        }
        for n in header_order
    }
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + b"".join(blobs))


def test_content_hash_ignores_shard_sizes_and_tensor_order_in_the_files(tmp_path):
    # LESSONS 3: 1, 2, 3 and 5 shards, and hand-laid files with reversed / shuffled data and header order.
    base = content_hash(write_model(tmp_path / "one", shards=1))
    for n in (2, 3, 5):
        assert content_hash(write_model(tmp_path / f"s{n}", shards=n)) == base, n
    ts = tensors()
    names = sorted(ts)
    rev = tmp_path / "reversed"
    rev.mkdir()
    _write_raw(rev / "model.safetensors", [(n, ts[n]) for n in reversed(names)], names)
    assert content_hash(rev) == base
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shuffled = names[:]
    random.Random(7).shuffle(shuffled)
    groups = [shuffled[:2], shuffled[2:7], shuffled[7:]]  # unequal shard sizes, names interleaved across files
    for i, group in enumerate(groups):
        _write_raw(mixed / f"part-{i}.safetensors", [(n, ts[n]) for n in group], list(reversed(group)))
    assert content_hash(mixed) == base
    from eval.model_store.safetensors_header import read_header_from_file

    for i, group in enumerate(groups):  # the files really are laid out differently from the reference writer's
        h = read_header_from_file(str(mixed / f"part-{i}.safetensors"))
        assert [n for n, _ in sorted(h.tensors.items(), key=lambda kv: kv[1].begin)] == group


def test_content_hash_of_a_real_model_saved_with_three_shard_sizes(tmp_path):
    from scripts.tiny_models import save_model_dir, tiny_config, tiny_model

    model = tiny_model(tiny_config(256), seed=0)
    dirs = [save_model_dir(model, None, tmp_path / str(size), max_shard_size=size) for size in (None, "150KB", "60KB")]
    counts = [len(list(d.glob("*.safetensors"))) for d in dirs]
    assert counts[0] == 1 and counts[0] < counts[1] < counts[2], counts
    hashes = {content_hash(d) for d in dirs}
    assert len(hashes) == 1

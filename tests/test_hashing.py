"""Copy hashes: metadata hash over file hashes; content hash invariant to sharding (LESSONS 3)."""

from __future__ import annotations

import pytest
import torch
from admission_fixtures import tensors, write_model

from eval import hashing
from eval.hashing import HashingError, content_hash, metadata_hash
from eval.stores import FileInfo, LocalHub


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

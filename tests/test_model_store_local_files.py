"""The one bounded reader behind LocalHub and LinkedDirs: both refuse an oversized file the same way."""

from __future__ import annotations

import hashlib

import pytest
from admission_fixtures import write_model

from eval.model_store.linked import LinkedDirs
from eval.model_store.local import LocalHub
from eval.model_store.local_files import read_bounded, read_safetensors_header, sha256_file
from eval.model_store.port import UnsafeRepoContent


def test_read_bounded_takes_exactly_the_limit_and_refuses_one_byte_more(tmp_path):
    f = tmp_path / "config.json"
    f.write_bytes(b"x" * 10)
    assert read_bounded(f, 10, "config.json") == b"x" * 10
    with pytest.raises(UnsafeRepoContent, match="'config.json' is larger than 9 bytes"):
        read_bounded(f, 9, "config.json")


def test_header_read_stops_at_the_header(tmp_path):
    model = write_model(tmp_path / "m")
    header, n = read_safetensors_header(model / "model.safetensors")
    assert n == header.data_start < (model / "model.safetensors").stat().st_size


def test_sha256_counts_what_it_reads(tmp_path):
    f = tmp_path / "blob"
    f.write_bytes(b"a" * 3_000_000)
    counter = [0]
    assert sha256_file(f, counter) == hashlib.sha256(b"a" * 3_000_000).hexdigest() and counter == [3_000_000]


def test_both_local_stores_bound_reads_alike(tmp_path):
    """LinkedDirs once had its own copy of the bounded read; both now answer through one helper."""
    model = write_model(tmp_path / "m")
    hub = LocalHub(tmp_path / "hub")
    hub_rev = hub.publish("org/m", model)
    linked = LinkedDirs()
    linked_rev = linked.add("local/m", model)
    size = (model / "config.json").stat().st_size
    for store, repo, rev in ((hub, "org/m", hub_rev), (linked, "local/m", linked_rev)):
        assert store.read_file(repo, rev, "config.json", size) == (model / "config.json").read_bytes()
        with pytest.raises(UnsafeRepoContent, match=f"larger than {size - 1} bytes"):
            store.read_file(repo, rev, "config.json", size - 1)
        assert (
            store.safetensors_header(repo, rev, "model.safetensors")
            == read_safetensors_header(model / "model.safetensors")[0]
        )

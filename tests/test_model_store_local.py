"""LocalHub: immutable revisions, exact pins, safe reads, byte accounting."""

from __future__ import annotations

import os

import pytest
from admission_fixtures import write_model

from eval.model_store.local import LocalHub
from eval.model_store.local_files import sha256_file
from eval.model_store.port import (
    ModelStore,
    RepoNotFound,
    RevisionNotFound,
    UnsafeRepoContent,
    validate_revision,
)


@pytest.fixture
def hub(tmp_path):
    return LocalHub(tmp_path / "hub")


def test_publish_is_deterministic_and_resolves_head(hub, tmp_path):
    src = write_model(tmp_path / "m", shards=2)
    rev = hub.publish("org/m", src)
    assert len(rev) == 40 and int(rev, 16) >= 0
    assert hub.publish("org/m", src) == rev  # same content, same id (like a commit id)
    assert hub.resolve("org/m") == rev
    assert hub.resolve("org/m", rev) == rev
    (src / "config.json").write_text('{"vocab_size": 1}')
    rev2 = hub.publish("org/m", src)
    assert rev2 != rev and hub.resolve("org/m") == rev2
    # the old revision is immutable and still readable
    assert b'"architectures"' in hub.read_file("org/m", rev, "config.json", 10_000)
    assert isinstance(hub, ModelStore)


def test_files_carry_sizes_and_sha256_without_reading(hub, tmp_path):
    src = write_model(tmp_path / "m", shards=2)
    rev = hub.publish("org/m", src)
    files = {f.path: f for f in hub.files("org/m", rev)}
    assert set(files) >= {"config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json"}
    for name, info in files.items():
        assert info.size == (src / name).stat().st_size
        assert info.sha256 == sha256_file(src / name)
    assert hub.bytes_read == 0  # the manifest written at publish time answers


def test_header_read_touches_only_header_bytes(hub, tmp_path):
    src = write_model(tmp_path / "m")
    rev = hub.publish("org/m", src)
    h = hub.safetensors_header("org/m", rev, "model.safetensors")
    assert hub.bytes_read == h.data_start < (src / "model.safetensors").stat().st_size


def test_missing_repo_and_revision_are_definite(hub, tmp_path):
    rev = hub.publish("org/m", write_model(tmp_path / "m"))
    with pytest.raises(RepoNotFound):
        hub.files("org/other", rev)
    with pytest.raises(RevisionNotFound):
        hub.files("org/m", "0" * 40)
    hub.delete("org/m")
    with pytest.raises(RepoNotFound):
        hub.files("org/m", rev)


@pytest.mark.parametrize("bad", ["main", "abc123", "A" * 40, "0" * 39, "0" * 41, "refs/heads/main"])
def test_reads_reject_branch_names_and_short_shas(hub, tmp_path, bad):
    hub.publish("org/m", write_model(tmp_path / "m"))
    with pytest.raises(ValueError, match="40-character"):
        hub.files("org/m", bad)
    with pytest.raises(ValueError):
        validate_revision(bad)


def test_symlink_escaping_repo_is_refused(hub, tmp_path):
    rev = hub.publish("org/m", write_model(tmp_path / "m"))
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    os.symlink(secret, hub.root / "org/m" / rev / "README.md")
    with pytest.raises(UnsafeRepoContent, match="outside"):
        hub.files("org/m", rev)
    with pytest.raises(UnsafeRepoContent, match="outside"):
        hub.read_file("org/m", rev, "README.md", 100)


def test_path_traversal_is_refused(hub, tmp_path):
    rev = hub.publish("org/m", write_model(tmp_path / "m"))
    for path in ["../../../etc/passwd", "/etc/passwd", "a/../config.json", ""]:
        with pytest.raises(UnsafeRepoContent):
            hub.read_file("org/m", rev, path, 100)


def test_read_file_is_bounded(hub, tmp_path):
    rev = hub.publish("org/m", write_model(tmp_path / "m"))
    with pytest.raises(UnsafeRepoContent, match="larger"):
        hub.read_file("org/m", rev, "model.safetensors", 10)


def test_download_respects_allow_patterns(hub, tmp_path):
    rev = hub.publish("org/m", write_model(tmp_path / "m", shards=2))
    out = hub.download("org/m", rev, tmp_path / "dl", ["*.safetensors", "config.json"])
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]


def test_publish_refuses_symlinks(hub, tmp_path):
    src = write_model(tmp_path / "m")
    os.symlink("/etc/hostname", src / "README.md")
    with pytest.raises(UnsafeRepoContent):
        hub.publish("org/m", src)


@pytest.mark.parametrize("kind", ["dangling", "loop", "self", "dir-outside"])
def test_broken_looping_and_directory_symlinks_are_refused_not_crashes(hub, tmp_path, kind):
    # A hostile repo may hold any symlink; listing and reading it must answer UnsafeRepoContent, never OSError.
    rev = hub.publish("org/m", write_model(tmp_path / "m"))
    d = hub.root / "org/m" / rev
    if kind == "dangling":
        os.symlink("missing.json", d / "README.md")
    elif kind == "loop":
        os.symlink("LICENSE", d / "README.md")
        os.symlink("README.md", d / "LICENSE")
    elif kind == "self":
        os.symlink("README.md", d / "README.md")
    else:
        os.symlink(tmp_path, d / "sub", target_is_directory=True)
    with pytest.raises(UnsafeRepoContent):
        hub.files("org/m", rev)
    if kind != "dir-outside":
        with pytest.raises(UnsafeRepoContent):
            hub.read_file("org/m", rev, "README.md", 100)
        with pytest.raises(UnsafeRepoContent):
            hub.safetensors_header("org/m", rev, "README.md")


def test_symlink_inside_the_repo_is_allowed(hub, tmp_path):
    rev = hub.publish("org/m", write_model(tmp_path / "m"))
    os.symlink("config.json", hub.root / "org/m" / rev / "README.md")
    assert "README.md" in {f.path for f in hub.files("org/m", rev)}
    assert hub.read_file("org/m", rev, "README.md", 10_000) == hub.read_file("org/m", rev, "config.json", 10_000)

"""The model-store port: the id and path validators every adapter applies before reading anything."""

from __future__ import annotations

import pytest

from eval.model_store.port import UnsafeRepoContent, validate_file_path, validate_repo, validate_revision


@pytest.mark.parametrize("repo", ["../x", "org/..", "org/a/b", "https://hf.co/a", "org /m", "a" * 97 + "/m", "org"])
def test_repo_id_validation(repo):
    with pytest.raises(ValueError):
        validate_repo(repo)


@pytest.mark.parametrize("bad", ["main", "abc123", "A" * 40, "0" * 39, "0" * 41, "refs/heads/main", None])
def test_revision_validation_takes_only_a_full_lowercase_sha(bad):
    with pytest.raises(ValueError, match="40-character"):
        validate_revision(bad)
    assert validate_revision("0a" * 20) == "0a" * 20


@pytest.mark.parametrize("path", ["../../../etc/passwd", "/etc/passwd", "a/../config.json", "", "a//b", "a\\b", "./x"])
def test_file_paths_must_stay_inside_the_repo(path):
    with pytest.raises(UnsafeRepoContent):
        validate_file_path(path)
    assert validate_file_path("sub/model.safetensors") == "sub/model.safetensors"

"""Disk bounds before every download: free space kept, our own footprint capped, links never counted."""

from __future__ import annotations

import shutil

import pytest

from eval.downloads import MODEL_PATTERNS, DiskLimits, check_disk, dir_bytes, is_disk_full, job_dir_name
from eval.errors import InfraError


def test_free_space_reserve_and_workdir_bound(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    check_disk(tmp_path, DiskLimits(min_free_bytes=0), need_bytes=0)
    with pytest.raises(InfraError, match="disk nearly full"):
        check_disk(tmp_path, DiskLimits(min_free_bytes=free + 1))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "w.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "elsewhere.bin").write_bytes(b"x" * 1000)  # outside the job folders: not ours to count
    check_disk(tmp_path, DiskLimits(min_free_bytes=0, max_workdir_bytes=150), need_bytes=50)
    with pytest.raises(InfraError, match="workdir bound reached: 100 bytes used, 51 needed"):
        check_disk(tmp_path, DiskLimits(min_free_bytes=0, max_workdir_bytes=150), need_bytes=51)


def test_dir_bytes_counts_files_not_links(tmp_path):
    assert dir_bytes(tmp_path / "missing") == 0
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert dir_bytes(tmp_path) == 10


def test_names_and_patterns_that_keep_the_pod_safe():
    assert job_dir_name("..") == "job-.." and "/" not in job_dir_name("j1")
    assert not any(p.endswith((".py", ".bin", ".pt", ".pkl")) for p in MODEL_PATTERNS)
    assert is_disk_full(OSError(28, "No space left on device")) and not is_disk_full(OSError(2, "missing"))

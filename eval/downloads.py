"""Model files on the pod's disk: what is fetched, the bounds checked first, retries, one teacher snapshot.

Only weights, config and tokenizer files are downloaded (``MODEL_PATTERNS``:
no code, no pickle). Every download is checked against ``DiskLimits`` first and
retried a few times on transient store errors; a store that stays down is an
``InfraError`` (the machine's fault, never the model's, LESSONS 21). The teacher
is cached by revision, one snapshot at a time (LESSONS 24).
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from eval.errors import InfraError, TransientError
from eval.model_store.port import ModelStore

log = logging.getLogger(__name__)

# Only weights, config and tokenizer files are ever fetched: no code, no pickle (LESSONS 7/8).
MODEL_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
DEFAULT_MIN_FREE_BYTES = 2 * 1024**3
DOWNLOAD_ATTEMPTS = 3


@dataclass(frozen=True)
class DiskLimits:
    """Bounds checked before every download: free space on the disk and our own footprint."""

    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    max_workdir_bytes: int | None = None


def job_dir_name(job_id: str) -> str:
    """Directory name for a job's scratch space; a bare job id of ``..`` must never name the workdir itself."""
    return f"job-{job_id}"


def dir_bytes(path: Path) -> int:
    """Total size of the regular files under ``path`` (0 when it does not exist)."""
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def check_disk(workdir: Path, limits: DiskLimits, need_bytes: int = 0) -> None:
    """Raise InfraError when a download of ``need_bytes`` would break a disk bound."""
    free = shutil.disk_usage(workdir).free
    if free - need_bytes < limits.min_free_bytes:
        raise InfraError(f"disk nearly full: {free} bytes free, {need_bytes} needed, {limits.min_free_bytes} reserved")
    if limits.max_workdir_bytes is not None:
        used = sum(dir_bytes(workdir / d) for d in ("models", "teacher-cache", "teacher"))
        if used + need_bytes > limits.max_workdir_bytes:
            raise InfraError(f"workdir bound reached: {used} bytes used, {need_bytes} needed")


def is_disk_full(exc: BaseException) -> bool:
    """A full disk or quota is the machine's fault, wherever it shows up."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def download_size(store: ModelStore, repo: str, revision: str) -> int:
    """Bytes a download will take, from the store's listing (transient errors: retried by download)."""
    try:
        infos = store.files(repo, revision)
    except TransientError:
        return 0
    return sum(i.size for i in infos if any(fnmatch(i.path, pat) for pat in MODEL_PATTERNS))


def download(store: ModelStore, repo: str, revision: str, dest: Path) -> Path:
    """Download with a few retries on transient errors; a hub that stays down is an infra failure."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            return store.download(repo, revision, dest, allow_patterns=list(MODEL_PATTERNS))
        except TransientError as exc:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise InfraError(f"{repo}@{revision}: model store unavailable: {exc}") from exc
            time.sleep(min(2.0**attempt, 10.0))
            shutil.rmtree(dest, ignore_errors=True)
    raise AssertionError("unreachable")


def _forget_other_teachers(root: Path, keep: str) -> None:
    """Only one teacher snapshot is cached: a new teacher revision replaces the old one on disk."""
    if root.is_dir():
        for old in root.iterdir():
            if old.name != keep:
                log.info("removing old teacher snapshot %s", old.name)
                shutil.rmtree(old, ignore_errors=True)


def fetch_teacher(store: ModelStore, repo: str, revision: str, workdir: Path, limits: DiskLimits) -> Path:
    """The teacher's directory at ``revision``: downloaded once (a ``.complete`` marker), older snapshots removed."""
    dest = workdir / "teacher" / f"{repo.replace('/', '--')}@{revision}"
    marker = dest / ".complete"
    if not marker.exists():
        _forget_other_teachers(workdir / "teacher", keep=dest.name)
        shutil.rmtree(dest, ignore_errors=True)
        check_disk(workdir, limits, download_size(store, repo, revision))
        download(store, repo, revision, dest)
        marker.write_text(revision)
    return dest

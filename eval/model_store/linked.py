"""A model store that serves local directories as pinned revisions, by linking, never copying.

``miner.py eval`` scores a miner's own model directory with the exact pod routine
(``eval.runner.run_job``), which only knows stores and 40-hex revisions. Publishing a
multi-gigabyte directory into a ``LocalHub`` would copy it twice (publish, then download);
this store gives the directory a stable pseudo-revision and "downloads" it as symlinks.
Anything not registered here is delegated to a fallback store (Hugging Face or a LocalHub),
so one job can mix a local model with a hub teacher or a hub king.

It trusts the directories it was given (they are the caller's own files): no manifest and no
hashing on listing; the runner still computes the canonical content hash after "download".
"""

from __future__ import annotations

import hashlib
import os
from fnmatch import fnmatch
from pathlib import Path

from eval.model_store.local_files import read_bounded, read_safetensors_header
from eval.model_store.port import (
    FileInfo,
    ModelStore,
    RepoNotFound,
    UnsafeRepoContent,
    validate_file_path,
    validate_repo,
)
from eval.model_store.safetensors_header import SafetensorsHeader


def pseudo_revision(path: Path) -> str:
    """A stable 40-hex id for a directory (sha1 of its resolved path): same dir, same revision."""
    return hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()


class LinkedDirs:
    """``ModelStore`` over registered local directories, with an optional fallback store."""

    def __init__(self, fallback: ModelStore | None = None) -> None:
        self.fallback = fallback
        self._dirs: dict[tuple[str, str], Path] = {}

    def add(self, repo: str, path: Path | str) -> str:
        """Serve ``path`` as ``repo`` at a pseudo-revision, which is returned."""
        directory = Path(path).resolve()
        if not directory.is_dir():
            raise NotADirectoryError(f"{path} is not a directory")
        revision = pseudo_revision(directory)
        self._dirs[(validate_repo(repo), revision)] = directory
        return revision

    def has(self, repo: str, revision: str) -> bool:
        """Whether ``repo@revision`` is one of the registered directories."""
        return (repo, revision) in self._dirs

    def _local(self, repo: str, revision: str) -> Path | None:
        return self._dirs.get((repo, revision))

    def _other(self, repo: str) -> ModelStore:
        if self.fallback is None:
            raise RepoNotFound(f"{repo} is neither a local directory given on the command line nor in a store")
        return self.fallback

    def _file(self, root: Path, path: str) -> Path:
        target = (root / validate_file_path(path)).resolve()
        if not target.is_file():
            raise UnsafeRepoContent(f"{path!r} is not a regular file in {root}")
        return target

    def _walk(self, root: Path) -> list[str]:
        out = []
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                full = Path(dirpath) / name
                if full.is_file():
                    out.append(full.relative_to(root).as_posix())
        return sorted(out)

    # --- ModelStore --------------------------------------------------------------------------

    def files(self, repo: str, revision: str) -> list[FileInfo]:
        root = self._local(repo, revision)
        if root is None:
            return self._other(repo).files(repo, revision)
        return [FileInfo(path=rel, size=(root / rel).stat().st_size, sha256=None) for rel in self._walk(root)]

    def read_file(self, repo: str, revision: str, path: str, max_bytes: int) -> bytes:
        root = self._local(repo, revision)
        if root is None:
            return self._other(repo).read_file(repo, revision, path, max_bytes)
        return read_bounded(self._file(root, path), max_bytes, path)

    def safetensors_header(self, repo: str, revision: str, path: str) -> SafetensorsHeader:
        root = self._local(repo, revision)
        if root is None:
            return self._other(repo).safetensors_header(repo, revision, path)
        return read_safetensors_header(self._file(root, path))[0]

    def download(self, repo: str, revision: str, dest: Path, allow_patterns: list[str]) -> Path:
        """Link each allowed file into ``dest``; removing ``dest`` later leaves the originals alone."""
        root = self._local(repo, revision)
        if root is None:
            return self._other(repo).download(repo, revision, dest, allow_patterns)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for rel in self._walk(root):
            if any(fnmatch(rel, pat) for pat in allow_patterns):
                link = dest / rel
                link.parent.mkdir(parents=True, exist_ok=True)
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(self._file(root, rel))
        return dest

    def resolve(self, repo: str, ref: str = "main") -> str:
        for (name, revision), _ in self._dirs.items():
            if name == repo and ref in ("main", revision):
                return revision
        return self._other(repo).resolve(repo, ref)

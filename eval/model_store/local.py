"""``LocalHub``: a directory of repos with immutable revisions, the embedded model store.

The demo, the tests and ``--hub-dir`` use it in place of Hugging Face. It answers with
the port's typed errors exactly where the hub would (missing repo or revision: definite;
anything that escapes the revision directory: hostile content), so admission and the pod
cannot tell the difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from fnmatch import fnmatch
from pathlib import Path

from eval.model_store.local_files import read_bounded, read_safetensors_header, sha256_file
from eval.model_store.port import (
    REVISION_RE,
    FileInfo,
    RepoNotFound,
    RevisionNotFound,
    UnsafeRepoContent,
    validate_file_path,
    validate_repo,
    validate_revision,
)
from eval.model_store.safetensors_header import SafetensorsHeader

MAX_LISTED_FILES = 1024  # beyond this a local listing skips hashing: admission rejects on count anyway


class LocalHub:
    """A directory of repos with immutable revisions: ``<root>/<org>/<name>/<revision>/...``.

    ``publish`` writes a manifest of file sizes and sha256 next to each revision
    (the local analogue of the hub's LFS metadata), so admission reads no tensor
    data. ``bytes_read`` counts every byte read from repo files (tests assert on it).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.bytes_read = 0

    # --- layout ----------------------------------------------------------
    def _repo_dir(self, repo: str) -> Path:
        return self.root / validate_repo(repo)

    def _rev_dir(self, repo: str, revision: str) -> Path:
        validate_revision(revision)
        repo_dir = self._repo_dir(repo)
        if not repo_dir.is_dir():
            raise RepoNotFound(f"repo {repo} not found in local hub")
        rev_dir = repo_dir / revision
        if not rev_dir.is_dir():
            raise RevisionNotFound(f"revision {revision} not found in {repo}")
        return rev_dir

    def _safe_path(self, repo: str, revision: str, path: str) -> Path:
        """Resolve a file inside the revision dir; anything that leaves it is refused."""
        rev_dir = self._rev_dir(repo, revision).resolve()
        target = _resolve_inside(rev_dir / validate_file_path(path), path)
        if not target.is_relative_to(rev_dir):
            raise UnsafeRepoContent(f"{path!r} points outside the repo")
        if not target.is_file():
            raise UnsafeRepoContent(f"{path!r} is not a regular file")
        return target

    # --- ModelStore --------------------------------------------------------
    def files(self, repo: str, revision: str) -> list[FileInfo]:
        rev_dir = self._rev_dir(repo, revision)
        manifest = self._read_manifest(repo, revision)
        paths = self._walk(rev_dir)
        out = []
        for rel in paths:
            p = rev_dir / rel  # _walk already refused anything leaving the revision dir
            size = p.stat().st_size
            if manifest is not None and manifest.get(rel, {}).get("size") == size:
                sha = manifest[rel]["sha256"]
            elif len(paths) <= MAX_LISTED_FILES:
                counter = [0]
                sha = sha256_file(p, counter)
                self.bytes_read += counter[0]
            else:
                sha = None
            out.append(FileInfo(path=rel, size=size, sha256=sha))
        return out

    def _walk(self, rev_dir: Path) -> list[str]:
        """List files without following symlinked directories; symlinks must stay inside."""
        base = rev_dir.resolve()
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(rev_dir, followlinks=False):
            for d in list(dirnames):
                full = Path(dirpath) / d
                if full.is_symlink():
                    raise UnsafeRepoContent(f"symlinked directory {full.relative_to(rev_dir)} in repo")
            for f in filenames:
                full = Path(dirpath) / f
                rel = full.relative_to(rev_dir).as_posix()
                if not _resolve_inside(full, rel).is_relative_to(base):
                    raise UnsafeRepoContent(f"{rel!r} is a symlink pointing outside the repo")
                if not stat.S_ISREG(full.stat().st_mode):
                    raise UnsafeRepoContent(f"{rel!r} is not a regular file")
                out.append(rel)
        return sorted(out)

    def read_file(self, repo: str, revision: str, path: str, max_bytes: int) -> bytes:
        p = self._safe_path(repo, revision, path)
        try:
            data = read_bounded(p, max_bytes, path)
        except UnsafeRepoContent:
            self.bytes_read += max_bytes + 1  # what the bounded read consumed before refusing
            raise
        self.bytes_read += len(data)
        return data

    def safetensors_header(self, repo: str, revision: str, path: str) -> SafetensorsHeader:
        header, n = read_safetensors_header(self._safe_path(repo, revision, path))
        self.bytes_read += n
        return header

    def download(self, repo: str, revision: str, dest: Path, allow_patterns: list[str]) -> Path:
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for info in self.files(repo, revision):
            if any(fnmatch(info.path, pat) for pat in allow_patterns):
                target = dest / info.path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self._safe_path(repo, revision, info.path), target)
        return dest

    def resolve(self, repo: str, ref: str = "main") -> str:
        repo_dir = self._repo_dir(repo)
        if not repo_dir.is_dir():
            raise RepoNotFound(f"repo {repo} not found in local hub")
        if REVISION_RE.match(ref):
            self._rev_dir(repo, ref)
            return ref
        refs = self._refs(repo)
        if ref not in refs:
            raise RevisionNotFound(f"ref {ref!r} not found in {repo}")
        return refs[ref]

    # --- publishing ----------------------------------------------------------
    def publish(self, repo: str, src_dir: Path | str, ref: str = "main") -> str:
        """Copy a model directory in as a new immutable revision and move ``ref`` to it."""
        src = Path(src_dir)
        entries: dict[str, dict[str, object]] = {}
        for p in sorted(src.rglob("*")):
            if p.is_symlink():
                raise UnsafeRepoContent(f"refusing to publish symlink {p}")
            if p.is_file():
                entries[p.relative_to(src).as_posix()] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
        digest = hashlib.sha1(json.dumps(entries, sort_keys=True).encode()).hexdigest()
        repo_dir = self._repo_dir(repo)
        rev_dir = repo_dir / digest
        if not rev_dir.exists():
            repo_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=repo_dir, prefix=".tmp-"))
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            os.replace(tmp, rev_dir)
        _atomic_write(repo_dir / f".{digest}.manifest.json", json.dumps(entries, sort_keys=True))
        refs = self._refs(repo)
        refs[ref] = digest
        _atomic_write(repo_dir / ".refs.json", json.dumps(refs, sort_keys=True))
        return digest

    def delete(self, repo: str) -> None:
        """Remove a repo entirely (the 'repo deleted by its owner' scenario)."""
        shutil.rmtree(self._repo_dir(repo), ignore_errors=True)

    def _refs(self, repo: str) -> dict[str, str]:
        path = self._repo_dir(repo) / ".refs.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _read_manifest(self, repo: str, revision: str) -> dict[str, dict] | None:
        path = self._repo_dir(repo) / f".{revision}.manifest.json"
        return json.loads(path.read_text()) if path.is_file() else None


def _resolve_inside(path: Path, rel: str) -> Path:
    """Resolve ``path`` strictly: a dangling or looping symlink is hostile content, not a crash."""
    try:
        return path.resolve(strict=True)
    except FileNotFoundError:
        if path.is_symlink():
            raise UnsafeRepoContent(f"{rel!r} is a dangling symlink") from None
        raise UnsafeRepoContent(f"{rel!r} is not in the repo") from None
    except (OSError, RuntimeError) as exc:  # ELOOP (or RuntimeError on older Pythons), EACCES, ENAMETOOLONG
        raise UnsafeRepoContent(f"{rel!r} cannot be resolved ({type(exc).__name__})") from None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

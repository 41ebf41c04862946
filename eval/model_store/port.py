"""Model stores: the one port through which admission and the pod see a repo.

This module holds the protocol, its typed errors and the id/path validators; the
adapters live beside it (``local.LocalHub``, ``huggingface.HuggingFaceStore``,
``linked.LinkedDirs``).

Every read names an exact 40-hex revision (LESSONS 11); only ``resolve`` turns a
branch into one. Failures are typed: ``TransientError`` means "ask again later"
(never disqualifies, LESSONS 21); a ``DefiniteStoreError`` is a real answer
(missing repo, missing revision, private/gated, hostile content).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from eval.errors import KlhillError
from eval.model_store.safetensors_header import SafetensorsHeader
from eval.schemas import REPO_ID_PATTERN

REVISION_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_RE = re.compile(REPO_ID_PATTERN)


class DefiniteStoreError(KlhillError):
    """The store gave a definite answer that the model cannot be used."""


class RepoNotFound(DefiniteStoreError):
    """No such repository (never existed or deleted)."""


class RevisionNotFound(DefiniteStoreError):
    """The repository exists but the pinned revision does not."""


class RepoInaccessible(DefiniteStoreError):
    """Private, gated or disabled."""


class UnsafeRepoContent(DefiniteStoreError):
    """The repo's content cannot be read safely (symlink out of the repo, special file, bad path)."""


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    sha256: str | None


@runtime_checkable
class ModelStore(Protocol):
    def files(self, repo: str, revision: str) -> list[FileInfo]: ...

    def read_file(self, repo: str, revision: str, path: str, max_bytes: int) -> bytes: ...

    def safetensors_header(self, repo: str, revision: str, path: str) -> SafetensorsHeader: ...

    def download(self, repo: str, revision: str, dest: Path, allow_patterns: list[str]) -> Path: ...

    def resolve(self, repo: str, ref: str = "main") -> str: ...


def validate_repo(repo: str) -> str:
    """Repo id: ``org/name``, bounded, no ``..``, no URL, no whitespace."""
    if not isinstance(repo, str) or not REPO_RE.match(repo) or ".." in repo:
        raise ValueError(f"invalid repo id {repo!r}: expected org/name (letters, digits, . _ -; no '..')")
    return repo


def validate_revision(revision: str) -> str:
    """Only a full lowercase 40-hex commit id pins content; branches and short SHAs move."""
    if not isinstance(revision, str) or not REVISION_RE.match(revision):
        raise ValueError(f"invalid revision {revision!r}: expected a 40-character lowercase hex commit id")
    return revision


def validate_file_path(path: str) -> str:
    """Relative POSIX path inside a repo, no ``..`` segments, no absolute paths."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise UnsafeRepoContent(f"unsafe file path {path!r}")
    return path

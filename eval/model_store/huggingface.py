"""Hugging Face adapter for the ModelStore port.

One ``model_info(files_metadata=True)`` call gives the file list with LFS
sha256; headers come from HTTP range reads of the pinned revision; small files
from one bounded GET. Everything read for a (repo, revision) is cached in
memory, so a revision already admitted costs zero HTTP calls; only the listing
(which also says the repo is still public) expires after ``LISTING_TTL_S``, so
the king's repo check really asks the hub each epoch. Every call has a timeout.

Only the hub's repository answers (``RepoNotFound``, ``RevisionNotFound``, gated,
disabled) are definite; 429/5xx/timeouts become ``TransientError`` (LESSONS 21)
and a 401/403 without a repository error code becomes ``HubAuthError``: the hub
rejected our token, not the repo (LESSONS 28, see ``eval.model_store.errors``). The
token comes from ``HF_TOKEN`` and is never put in a message.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.utils import get_session, hf_raise_for_status

from eval.errors import HubAuthError, TransientError
from eval.model_store.errors import HubAnswer, classify_hub_error
from eval.model_store.port import (
    REVISION_RE,
    FileInfo,
    RepoInaccessible,
    RepoNotFound,
    RevisionNotFound,
    UnsafeRepoContent,
    validate_file_path,
    validate_repo,
    validate_revision,
)
from eval.model_store.safetensors_header import PREFIX_READ, SafetensorsHeader, header_length, parse_header

DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_CACHED_REVISIONS = 64
"""Revisions whose listings, small files and headers stay in memory (LESSONS 24: caches are bounded)."""
LISTING_TTL_S = 60.0
"""A listing says the repo is still there: it expires (the king's repo check each epoch asks again), while
files and headers read at a pinned commit never change and stay cached."""


class HuggingFaceStore:
    def __init__(
        self,
        token: str | None = None,
        endpoint: str | None = None,
        timeout: float = 20.0,
        max_cached_revisions: int = MAX_CACHED_REVISIONS,
        listing_ttl_s: float = LISTING_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token = token if token is not None else os.environ.get("HF_TOKEN") or None
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.timeout = timeout
        self._api = HfApi(endpoint=self.endpoint, token=self._token or False)
        self._files: dict[tuple[str, str], tuple[float, list[FileInfo]]] = {}
        self._listing_ttl_s, self._clock = listing_ttl_s, clock
        self._blobs: dict[tuple[str, str, str], bytes] = {}
        self._headers: dict[tuple[str, str, str], SafetensorsHeader] = {}
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._max_revisions = max(1, max_cached_revisions)
        self.http_calls = 0

    def __repr__(self) -> str:  # never show the token
        return f"HuggingFaceStore(endpoint={self.endpoint!r}, token={'set' if self._token else 'none'})"

    def _touch(self, repo: str, revision: str) -> None:
        """Mark a revision as recently read; forget everything cached for the oldest beyond the bound."""
        self._recent[(repo, revision)] = None
        self._recent.move_to_end((repo, revision))
        while len(self._recent) > self._max_revisions:
            old = self._recent.popitem(last=False)[0]
            self._files.pop(old, None)
            for cache in (self._blobs, self._headers):
                for k in [k for k in cache if k[:2] == old]:
                    del cache[k]

    # --- ModelStore ------------------------------------------------------------
    def files(self, repo: str, revision: str) -> list[FileInfo]:
        key = (validate_repo(repo), validate_revision(revision))
        self._touch(*key)
        cached = self._files.get(key)
        if cached is None or self._clock() - cached[0] > self._listing_ttl_s:
            info = self._call(
                repo, revision, self._api.model_info, repo, revision=revision, files_metadata=True, timeout=self.timeout
            )
            if getattr(info, "sha", None) not in (None, revision):
                raise RevisionNotFound(f"{repo}: the hub answered revision {info.sha}, not {revision}")
            if getattr(info, "disabled", False) or getattr(info, "private", False) or getattr(info, "gated", False):
                raise RepoInaccessible(f"{repo} is private, gated or disabled")
            self._files[key] = (self._clock(), [_file_info(s) for s in (info.siblings or [])])
        return list(self._files[key][1])

    def read_file(self, repo: str, revision: str, path: str, max_bytes: int) -> bytes:
        key = (validate_repo(repo), validate_revision(revision), validate_file_path(path))
        self._touch(repo, revision)
        if key not in self._blobs:
            data = self._get(repo, revision, path, None, max_bytes)
            if len(data) > max_bytes:
                raise UnsafeRepoContent(f"{path!r} is larger than {max_bytes} bytes")
            self._blobs[key] = data
        return self._blobs[key]

    def safetensors_header(self, repo: str, revision: str, path: str) -> SafetensorsHeader:
        key = (validate_repo(repo), validate_revision(revision), validate_file_path(path))
        self._touch(repo, revision)
        if key not in self._headers:
            size = next((f.size for f in self.files(repo, revision) if f.path == path), None)
            if size is None:
                raise UnsafeRepoContent(f"{path!r} is not in {repo}@{revision}")
            prefix = self._get(repo, revision, path, (0, min(PREFIX_READ, size) - 1), PREFIX_READ)
            n = header_length(prefix, size)
            if len(prefix) < 8 + n:  # header longer than the first read: one more range read
                prefix += self._get(repo, revision, path, (len(prefix), 8 + n - 1), 8 + n - len(prefix))
            self._headers[key] = parse_header(prefix[: 8 + n], size)
        return self._headers[key]

    def download(self, repo: str, revision: str, dest: Path, allow_patterns: list[str]) -> Path:
        validate_repo(repo)
        validate_revision(revision)
        path = self._call(
            repo,
            revision,
            snapshot_download,
            repo_id=repo,
            revision=revision,
            local_dir=str(dest),
            allow_patterns=allow_patterns,
            token=self._token or False,
            endpoint=self.endpoint,
            etag_timeout=self.timeout,
        )
        return Path(path)

    def resolve(self, repo: str, ref: str = "main") -> str:
        validate_repo(repo)
        info = self._call(repo, ref, self._api.model_info, repo, revision=ref, timeout=self.timeout)
        sha = getattr(info, "sha", None)
        if not isinstance(sha, str) or not REVISION_RE.match(sha):
            raise TransientError(f"{repo}: the hub returned no commit id for {ref!r}")
        return sha

    # --- HTTP ----------------------------------------------------------------------
    def _get(self, repo: str, revision: str, path: str, byte_range: tuple[int, int] | None, limit: int) -> bytes:
        """One bounded GET of a file at the pinned revision (a Range read when ``byte_range`` is given)."""
        url = f"{self.endpoint}/{repo}/resolve/{revision}/{path}"
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        if byte_range is not None:
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"

        def fetch() -> bytes:
            with get_session().stream("GET", url, headers=headers, timeout=self.timeout, follow_redirects=True) as r:
                if r.status_code >= 400:
                    r.read()
                    hf_raise_for_status(r)
                out = bytearray()
                for chunk in r.iter_bytes():
                    out += chunk
                    if len(out) > limit:
                        break
                return bytes(out[: limit + 1])

        return self._call(repo, revision, fetch)

    def _call(self, repo: str, revision: str, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Run one hub call and translate its failure into the store's error classes (``eval.model_store.errors``)."""
        self.http_calls += 1
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            meaning = classify_hub_error(exc)
            if meaning is None:
                raise
            raise _store_error(*meaning, repo, revision) from None


def _store_error(answer: HubAnswer, reason: str, repo: str, revision: str) -> Exception:
    """Only the repo's own answers are definite; our credentials and outages give no verdict."""
    if answer == "repo_not_found":
        return RepoNotFound(f"{repo} not found (or private): {reason}")
    if answer == "revision_not_found":
        return RevisionNotFound(f"revision {revision} not found in {repo}: {reason}")
    if answer in ("gated", "disabled"):
        return RepoInaccessible(f"{repo} is {answer}: {reason}")
    if answer == "entry_not_found":
        return UnsafeRepoContent(f"a listed file of {repo}@{revision} is missing: {reason}")
    if answer == "auth":
        return HubAuthError(
            f"the hub rejected the token in HF_TOKEN (expired, revoked or without read access) "
            f"while reading {repo}: {reason}; nothing is known about the repo"
        )
    return TransientError(f"{repo}@{revision}: hub unreachable or overloaded: {reason}")


def _file_info(sibling: Any) -> FileInfo:
    lfs = getattr(sibling, "lfs", None)
    size = lfs.size if lfs is not None else sibling.size
    return FileInfo(path=sibling.rfilename, size=int(size or 0), sha256=lfs.sha256 if lfs is not None else None)

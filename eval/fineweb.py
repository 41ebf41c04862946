"""FineWeb (any parquet dataset on the Hub with a "text" column) as a ``PromptSource``, read as it really is.

Three things the live hub taught this adapter:

- **List only the subset.** ``datasets.load_dataset_builder`` resolves the dataset
  card, whose first config globs every dump: thousands of files listed on every
  start. Here one ``HfApi.list_repo_tree`` call lists ``rules.dataset_path`` at
  ``rules.dataset_revision``, and the answer is kept on disk per revision (a
  commit never changes), so a restart lists nothing.
- **Read at the pinned commit.** Every byte comes from
  ``datasets/<repo>@<revision>/<path>``: a republished dataset cannot change a
  round's prompts (the revision is a rules field: it enters the digest and the seed).
- **Read little.** Each shard's parquet footer is read once per process; a round
  then reads the "text" column chunk of the row groups it needs, with exact
  ranged reads (``cache_type="none"``: no read-ahead block on top). Measured in
  ``docs/benchmarks.md``.

Every failure of the hub, the HTTP client, fsspec or pyarrow while listing or
reading becomes a typed ``PromptSourceUnavailable`` (a ``TransientError``) or
``HubAuthError``: the round waits and nobody is judged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from eval.errors import HubAuthError, KlhillError, PromptError, PromptSourceUnavailable
from eval.model_store.errors import classify_hub_error
from eval.prompts import parquet_texts
from eval.rules import ContestRules

log = logging.getLogger(__name__)

Listing = list[tuple[str, int]]
"""(path in the repo, size in bytes), sorted by path."""


class FineWebSource:
    """Shards are the parquet files under ``rules.dataset_path``, named by their path in the dataset repo.

    ``list_files`` and ``open_file(path, size)`` are the two I/O seams; by default
    they call the hub (``HfApi.list_repo_tree``, ``HfFileSystem``) at the pinned
    revision. ``cache_dir`` keeps listings on disk (the validator uses its state folder).
    """

    def __init__(
        self,
        rules: ContestRules,
        *,
        cache_dir: str | Path | None = None,
        endpoint: str | None = None,
        token: str | None = None,
        list_files: Callable[[], Sequence[tuple[str, int]]] | None = None,
        open_file: Callable[[str, int], BinaryIO] | None = None,
    ) -> None:
        self.rules = rules
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.endpoint = endpoint
        self._token = token if token is not None else os.environ.get("HF_TOKEN") or None
        self._list_files = list_files or self._hub_listing
        self._open_file = open_file or self._hub_open
        self._files: dict[str, int] | None = None
        self._footers: dict[str, Any] = {}

    def __repr__(self) -> str:  # never show the token
        return f"FineWebSource({self.rules.dataset}@{self.rules.dataset_revision}/{self.rules.dataset_path})"

    # --- PromptSource ------------------------------------------------------------------------------
    def shards(self) -> list[str]:
        return sorted(self._listing())

    def num_rows(self, shard: str) -> int:
        return int(self._footer(shard).num_rows)

    def read(self, shard: str, start: int) -> Iterator[str]:
        footer = self._footer(shard)
        with self._translated(f"reading {shard}"), self._open_file(shard, self._listing()[shard]) as f:
            yield from parquet_texts(f, start, footer)

    # --- listing -----------------------------------------------------------------------------------
    def _listing(self) -> dict[str, int]:
        if self._files is None:
            files = self._load_cached()
            if files is None:
                with self._translated("listing the dataset"):
                    files = sorted((str(p), int(n)) for p, n in self._list_files() if str(p).endswith(".parquet"))
                if files:
                    self._save_cached(files)
            if not files:
                r = self.rules
                raise PromptError(f"no parquet files under {r.dataset}@{r.dataset_revision}/{r.dataset_path}")
            self._files = dict(files)
        return self._files

    def _hub_listing(self) -> Listing:
        """One tree listing of the subset's folder at the pinned commit (recursive inside it, nothing else)."""
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        r = self.rules
        api = HfApi(endpoint=self.endpoint, token=self._token or False)
        entries = api.list_repo_tree(
            r.dataset, path_in_repo=r.dataset_path, revision=r.dataset_revision, repo_type="dataset", recursive=True
        )
        return [(e.path, int(e.size)) for e in entries if isinstance(e, RepoFile)]

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        r = self.rules
        where = hashlib.sha256(f"{r.dataset}\n{r.dataset_path}".encode()).hexdigest()[:16]
        return self.cache_dir / f"{r.dataset.replace('/', '--')}@{r.dataset_revision}-{where}.json"

    def _load_cached(self) -> Listing | None:
        path = self._cache_file()
        if path is None or not path.is_file():
            return None
        r = self.rules
        try:
            doc = json.loads(path.read_text())
            if (doc["dataset"], doc["revision"], doc["path"]) != (r.dataset, r.dataset_revision, r.dataset_path):
                raise ValueError("the cached listing names another dataset")
            return [(str(p), int(n)) for p, n in doc["files"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the cached dataset listing %s (%s); listing again", path, exc)
            return None

    def _save_cached(self, files: Listing) -> None:
        path = self._cache_file()
        if path is None:
            return
        r = self.rules
        doc = {"dataset": r.dataset, "revision": r.dataset_revision, "path": r.dataset_path, "files": files}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, path)
        except OSError as exc:  # a cache that cannot be written costs one listing per start, nothing more
            log.warning("cannot cache the dataset listing at %s: %s", path, exc)

    # --- reading -----------------------------------------------------------------------------------
    def _footer(self, shard: str) -> Any:
        """The shard's parquet metadata, read once per process (a footer never changes at a pinned commit)."""
        if shard not in self._footers:
            import pyarrow.parquet as pq

            size = self._listing().get(shard)
            if size is None:
                raise PromptError(f"unknown shard {shard!r}")
            with self._translated(f"reading the footer of {shard}"), self._open_file(shard, size) as f:
                self._footers[shard] = pq.ParquetFile(f).metadata
        return self._footers[shard]

    def _hub_open(self, path: str, size: int) -> BinaryIO:
        from huggingface_hub import HfFileSystem

        r = self.rules
        fs = HfFileSystem(endpoint=self.endpoint, token=self._token or False)
        # size from the listing: no info() call; cache_type "none": exact ranged reads, no read-ahead block
        return fs.open(
            f"datasets/{r.dataset}@{r.dataset_revision}/{path}",
            "rb",
            size=size,  # type: ignore[no-any-return]
            cache_type="none",
        )

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Library failures -> typed, transient errors that name the dataset and the revision."""
        try:
            yield
        except KlhillError:
            raise
        except Exception as exc:
            meaning = classify_hub_error(exc)
            if meaning is None and not _is_read_error(exc):
                raise
            answer, reason = meaning or ("transient", f"{type(exc).__name__}: {str(exc)[:200]}")
            r = self.rules
            where = f"{r.dataset}@{r.dataset_revision}"
            if answer == "auth":
                raise HubAuthError(
                    f"the hub rejected the token in HF_TOKEN (expired, revoked or without read access) "
                    f"while {what} of {where}: {reason}"
                ) from exc
            if answer in ("repo_not_found", "revision_not_found"):
                reason = f"{reason}: the pinned dataset or revision is not on the hub (check the rules)"
            raise PromptSourceUnavailable(f"{what} of {where} failed: {reason}") from exc


def _is_read_error(exc: BaseException) -> bool:
    """pyarrow's own errors (a truncated or corrupt parquet answer) are read failures too."""
    try:
        from pyarrow.lib import ArrowException
    except ImportError:  # pragma: no cover - pyarrow is a dependency of datasets
        return False
    return isinstance(exc, ArrowException)

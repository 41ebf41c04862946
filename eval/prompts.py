"""Block-seeded prompt sampling.

The host draws each round's prompts from a seed derived from the block *hash*
(LESSONS 13: a block number is known in advance, a hash is not) and the rules
digest, then ships the texts in the job so the pod cannot influence them.

Selection is one pure routine over a small ``PromptSource`` port (sorted shard
names, row counts, rows from an offset). Production reads one FineWeb parquet
shard from the Hub at a pinned revision (``eval.fineweb``); tests and the demo
read a local directory or the Python help topics. All random draws are sha256
counters, not a library RNG, so a miner can reproduce a round's prompts in any
language and any numpy version.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from eval.errors import PromptError
from eval.rules import ContestRules
from eval.schemas import BLOCK_HASH_PATTERN, MAX_PROMPTS_PER_JOB

_HASH_RE = re.compile(BLOCK_HASH_PATTERN)
_SEED_DOMAIN = b"klhill/prompts/v1"
# A sentence ends at . ! or ?, optionally followed by a closing quote/bracket, then whitespace or the end.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")
_SENTENCE_START = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=\S)")


# --- seeds and draws -------------------------------------------------------------------------


def prompt_seed(block_hash: str, rules: ContestRules) -> int:
    """64-bit seed from the block hash and the rules digest (never the block number)."""
    if not isinstance(block_hash, str) or not _HASH_RE.match(block_hash):
        raise PromptError(f"malformed block hash {block_hash!r}: expected 0x followed by 64 lowercase hex digits")
    material = _SEED_DOMAIN + bytes.fromhex(block_hash[2:]) + bytes.fromhex(rules.digest())
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big")


def draw(seed: int, label: str) -> int:
    """A deterministic 64-bit draw named by ``label``: sha256(seed || label)."""
    return int.from_bytes(hashlib.sha256(seed.to_bytes(8, "big") + label.encode()).digest()[:8], "big")


def prompt_sha256(text: str) -> str:
    """Hex sha256 over the prompt's UTF-8 bytes: published per round for audits."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- cutting a prompt from a document ----------------------------------------------------------


def normalise(text: str) -> str:
    """Collapse every whitespace run to one space and strip the ends."""
    return " ".join(text.split())


def cut_prompt(document: str, min_chars: int, max_chars: int, choice: int) -> str | None:
    """A prompt of min_chars..max_chars characters from ``document``, or None if it is too short.

    Whitespace is normalised first. A short document is used whole. A long one
    starts at a sentence start picked by ``choice`` (among those leaving room for
    ``min_chars``), and ends at the last sentence end inside the window, else at
    the last space, else at ``max_chars`` exactly.
    """
    text = normalise(document)
    if len(text) < min_chars:
        return None
    if len(text) <= max_chars:
        return text
    starts = [0] + [m.end() for m in _SENTENCE_START.finditer(text) if m.end() <= len(text) - min_chars]
    start = starts[choice % len(starts)]
    window = text[start : start + max_chars]
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() >= min_chars]
    if ends:
        return window[: ends[-1]]
    space = window.rfind(" ", min_chars)
    return window[:space] if space >= min_chars else window


# --- the source port --------------------------------------------------------------------------


class PromptSource(Protocol):
    """Documents in a fixed order: sorted shard names, each with a row count and rows from an offset."""

    def shards(self) -> list[str]: ...

    def num_rows(self, shard: str) -> int: ...

    def read(self, shard: str, start: int) -> Iterator[str]:
        """Texts of rows ``start`` .. end of the shard, in order; rows without text are yielded as ''."""
        ...


def sample_prompts(block_hash: str, rules: ContestRules, source: PromptSource, n: int | None = None) -> list[str]:
    """``n`` (default rules.prompts_per_round) distinct prompts, fixed by the block hash and the rules.

    One shard and a row offset are drawn from the seed; rows are read from the
    offset, wrapping once around the shard; too-short documents and duplicate
    prompts are skipped. Same hash, same rules, same corpus: the same prompts byte for byte.
    """
    n = rules.prompts_per_round if n is None else n
    if not 1 <= n <= MAX_PROMPTS_PER_JOB:
        raise PromptError(f"prompt count must be in 1..{MAX_PROMPTS_PER_JOB}, got {n}")
    seed = prompt_seed(block_hash, rules)
    names = sorted(source.shards())
    if not names:
        raise PromptError("the prompt source has no shards")
    shard = names[draw(seed, "shard") % len(names)]
    rows = source.num_rows(shard)
    if rows <= 0:
        raise PromptError(f"shard {shard!r} is empty")
    start = draw(seed, "row") % rows
    prompts: list[str] = []
    seen: set[str] = set()
    for offset, text in enumerate(_wrapped(source, shard, start, rows)):
        row = (start + offset) % rows
        prompt = cut_prompt(text, rules.prompt_min_chars, rules.prompt_max_chars, draw(seed, f"cut:{shard}:{row}"))
        if prompt is None or prompt in seen:
            continue
        seen.add(prompt)
        prompts.append(prompt)
        if len(prompts) == n:
            return prompts
    raise PromptError(f"shard {shard!r} yielded only {len(prompts)} usable prompts, {n} needed")


def _wrapped(source: PromptSource, shard: str, start: int, rows: int) -> Iterator[str]:
    """Rows start..end, then 0..start-1: each row at most once."""
    count = 0
    for text in source.read(shard, start):
        yield text
        count += 1
    if count >= rows:
        return
    for text in source.read(shard, 0):
        yield text
        count += 1
        if count >= rows:
            return


# --- parquet reading shared by both adapters ---------------------------------------------------


def parquet_rows(fileobj: BinaryIO) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(fileobj).metadata.num_rows)


def parquet_texts(fileobj: BinaryIO, start: int, metadata: Any = None) -> Iterator[str]:
    """The "text" column from row ``start`` on, reading only the row groups that hold those rows.

    ``metadata`` (a ``pyarrow.parquet.FileMetaData`` read before) saves reading the footer again.
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(fileobj, metadata=metadata)
    if "text" not in pf.schema_arrow.names:
        raise PromptError("parquet file has no 'text' column")
    first = 0
    for g in range(pf.num_row_groups):
        size = pf.metadata.row_group(g).num_rows
        if first + size > start:
            column = pf.read_row_group(g, columns=["text"]).column("text").to_pylist()
            for value in column[max(0, start - first) :]:
                yield value if isinstance(value, str) else ""
        first += size


# --- adapters ---------------------------------------------------------------------------------


class LocalCorpus:
    """A directory of .jsonl / .parquet files in FineWeb's schema, or (no path) the Python help topics.

    The fallback needs nothing but the standard library (``pydoc_data.topics``,
    sorted by key), so the demo and tests run anywhere.
    """

    PYDOC_SHARD = "pydoc_data.topics"

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None and not self.path.is_dir():
            raise PromptError(f"corpus directory {str(self.path)!r} does not exist")

    def shards(self) -> list[str]:
        if self.path is None:
            return [self.PYDOC_SHARD]
        return sorted(
            p.relative_to(self.path).as_posix()
            for p in self.path.rglob("*")
            if p.is_file() and p.suffix in (".jsonl", ".parquet")
        )

    def num_rows(self, shard: str) -> int:
        if self.path is None:
            return len(self._pydoc())
        if shard.endswith(".parquet"):
            with open(self._file(shard), "rb") as f:
                return parquet_rows(f)
        with open(self._file(shard), encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())

    def read(self, shard: str, start: int) -> Iterator[str]:
        if self.path is None:
            yield from self._pydoc()[start:]
        elif shard.endswith(".parquet"):
            with open(self._file(shard), "rb") as f:
                yield from parquet_texts(f, start)
        else:
            yield from self._jsonl(shard, start)

    def _file(self, shard: str) -> Path:
        assert self.path is not None
        if shard not in self.shards():
            raise PromptError(f"unknown shard {shard!r}")
        return self.path / shard

    def _jsonl(self, shard: str, start: int) -> Iterator[str]:
        with open(self._file(shard), encoding="utf-8") as f:
            row = 0
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if row >= start:
                    try:
                        value = json.loads(line).get("text")
                    except (ValueError, AttributeError) as exc:
                        raise PromptError(f"{shard}:{lineno}: not a JSON object: {exc}") from exc
                    yield value if isinstance(value, str) else ""
                row += 1

    @staticmethod
    def _pydoc() -> list[str]:
        from pydoc_data.topics import topics

        return [topics[k] for k in sorted(topics)]

"""Strict parsing of on-chain commitment texts.

A commitment is exactly ``{"model": "<org>/<name>", "revision": "<40 hex>"}``.
Anything else is INVALID with a reason. Chain fields (hotkey, commit block) never
come from this text: an extra ``"block"`` or ``"hotkey"`` key is an error, not an
override (LESSONS 2). Revisions must be immutable 40-hex SHAs (LESSONS 11).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from eval.schemas import REPO_ID_PATTERN, REVISION_PATTERN

MAX_COMMITMENT_BYTES = 128
"""Largest commitment accepted and produced (the chain's raw commitment field size)."""

_REPO_RE = re.compile(REPO_ID_PATTERN)
_REVISION_RE = re.compile(REVISION_PATTERN)
_KEYS = frozenset({"model", "revision"})


@dataclass(frozen=True)
class ParsedCommitment:
    """A well-formed commitment: the model pinned to an immutable revision."""

    repo: str
    revision: str


@dataclass(frozen=True)
class Invalid:
    """A malformed commitment; ``reason`` says what is wrong (published as the DQ detail)."""

    reason: str


class CommitmentError(ValueError):
    """Raised by ``format_commitment`` for ids that cannot form a valid commitment."""


class _DuplicateKey(ValueError):
    pass


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def validate_ids(repo: Any, revision: Any) -> str | None:
    """Return why (repo, revision) is unacceptable, or None when both are valid."""
    if not isinstance(repo, str) or not _REPO_RE.fullmatch(repo):
        return "model must be '<org>/<name>' (letters, digits, '.', '_', '-')"
    if ".." in repo:
        return "model may not contain '..'"
    if not isinstance(revision, str) or not _REVISION_RE.fullmatch(revision):
        return "revision must be a 40-character lowercase hex commit SHA"
    return None


def parse_commitment(text: str | bytes) -> ParsedCommitment | Invalid:
    """Parse one commitment text; never raises for bad input (returns ``Invalid``).

    Strict: the text must be exactly the compact JSON that ``format_commitment``
    writes (keys ``model`` then ``revision``, no whitespace, no escapes). One
    spelling per value means every validator and dashboard reads the same bytes
    the same way; see docs/decisions.md.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return Invalid("commitment is not valid UTF-8")
    if not isinstance(text, str):
        return Invalid("commitment is not text")
    if len(text.encode("utf-8")) > MAX_COMMITMENT_BYTES:
        return Invalid(f"commitment longer than {MAX_COMMITMENT_BYTES} bytes")
    if not text.strip():
        return Invalid("commitment is empty")
    try:
        value = json.loads(text, object_pairs_hook=_pairs_no_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        return Invalid(f"duplicate key {str(exc)!r}")
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        return Invalid(f"not JSON: {exc}"[:200])
    if not isinstance(value, dict):
        return Invalid("commitment must be a JSON object")
    unknown = sorted(set(value) - _KEYS)
    if unknown:
        return Invalid(f"unknown keys: {', '.join(repr(k)[:40] for k in unknown)}"[:200])
    missing = sorted(_KEYS - set(value))
    if missing:
        return Invalid(f"missing keys: {', '.join(missing)}")
    why = validate_ids(value["model"], value["revision"])
    if why:
        return Invalid(why)
    canonical = _canonical(value["model"], value["revision"])
    if text != canonical:
        return Invalid(f"not compact JSON: write exactly {canonical}"[:200])
    return ParsedCommitment(repo=value["model"], revision=value["revision"])


def _canonical(repo: str, revision: str) -> str:
    return json.dumps({"model": repo, "revision": revision}, sort_keys=True, separators=(",", ":"))


def format_commitment(repo: str, revision: str) -> str:
    """The canonical commitment text (compact, sorted keys) for the miner CLI.

    Raises ``CommitmentError`` if the ids are invalid or the text would not fit
    the chain's commitment field; ``parse_commitment`` accepts every output.
    """
    why = validate_ids(repo, revision)
    if why:
        raise CommitmentError(why)
    text = _canonical(repo, revision)
    if len(text.encode("utf-8")) > MAX_COMMITMENT_BYTES:
        raise CommitmentError(f"commitment is {len(text)} bytes; at most {MAX_COMMITMENT_BYTES} fit on chain")
    return text

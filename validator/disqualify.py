"""Which models a round disqualifies, and why: COPY, FUNCTIONAL_COPY, KL_TOO_HIGH (pure).

The earlier commit owns: a model is compared with every strictly earlier
submission, from past rounds and this one, and the king is not exempt (LESSONS 1,
4). Same weights (content hash) make a COPY; a fingerprint closer than
``rules.fingerprint_threshold`` makes a FUNCTIONAL_COPY; a scored model whose mean
KL is above ``rules.max_kl`` is KL_TOO_HIGH. ``validator.verdicts`` turns a
disqualification into the model's final state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.rules import ContestRules
from eval.schemas import ModelResult, SubmissionId

DistanceFn = Callable[[Sequence[float], Sequence[float]], float]
DQ_STATES: dict[str, str] = {"copy": "COPY", "functional_copy": "FUNCTIONAL_COPY", "kl_too_high": "KL_TOO_HIGH"}
"""A verdict's state -> the disqualification reason it stands for."""


@dataclass(frozen=True)
class Disqualification:
    hotkey: str
    commit_block: int
    reason: str  # COPY | FUNCTIONAL_COPY | KL_TOO_HIGH, or INVALID for a malformed commitment
    check: str
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> SubmissionId:
        return SubmissionId(self.hotkey, self.commit_block)


def disqualify(
    key: SubmissionId,
    m: ModelResult,
    hashes: Sequence[tuple[SubmissionId, str]],
    prints: Sequence[tuple[SubmissionId, Sequence[float]]],
    rules: ContestRules,
    distance: DistanceFn,
) -> Disqualification | None:
    """The disqualification of ``key`` for its result ``m``, if any: a copy first, then a KL above the limit."""
    dq = copy_check(key, m, hashes, prints, rules, distance)
    mean = m.mean_kl
    if dq is None and m.status == "ok" and mean is not None and mean > rules.max_kl:
        dq = Disqualification(
            key.hotkey,
            key.commit_block,
            "KL_TOO_HIGH",
            "max_kl",
            f"mean KL {mean:.6g} > {rules.max_kl}",
            {"mean_kl": mean},
        )
    return dq


def copy_check(
    key: SubmissionId,
    m: ModelResult,
    hashes: Sequence[tuple[SubmissionId, str]],
    prints: Sequence[tuple[SubmissionId, Sequence[float]]],
    rules: ContestRules,
    distance: DistanceFn,
) -> Disqualification | None:
    """Earlier commit owns: compare with every strictly earlier submission (the king is not exempt)."""
    if m.content_hash:
        owners = sorted(k for k, h in hashes if h == m.content_hash and k < key)
        if owners:
            o = owners[0]
            return Disqualification(
                key.hotkey,
                key.commit_block,
                "COPY",
                "content_hash",
                f"same weights as {o}",
                {"copy_of": _evidence_id(o), "content_hash": m.content_hash},
            )
    if m.fingerprint:
        close = [(k, distance(fp, m.fingerprint)) for k, fp in prints if k < key]
        close = sorted(((k, d) for k, d in close if d < rules.fingerprint_threshold), key=lambda t: t[0])
        if close:
            o, d = close[0]
            return Disqualification(
                key.hotkey,
                key.commit_block,
                "FUNCTIONAL_COPY",
                "fingerprint",
                f"behaves like {o} (distance {d:.6g} < {rules.fingerprint_threshold})",
                {"copy_of": _evidence_id(o), "distance": d},
            )
    return None


def _evidence_id(key: SubmissionId) -> dict[str, Any]:
    """A submission as DQ evidence names it (JSON, served by the API as stored)."""
    return {"hotkey": key.hotkey, "commit_block": key.commit_block}

"""Typed rows: what the store's read queries return.

Why not dicts: a renamed column then shows up in mypy at every reader (the loop,
the weights step, the API) instead of as a ``KeyError`` in production. Each class
holds exactly the columns its query selects, under the names the API has always
served (``dataclasses.asdict`` gives the API its dict), with JSON columns decoded
and the two key columns readable as one ``SubmissionId`` (``.key``).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from eval.schemas import SubmissionId
from validator.contest import RoundKind

R = TypeVar("R")


def build(cls: type[R], row: sqlite3.Row | Mapping[str, Any], **values: Any) -> R:
    """A row object from a query row: its fields by name, ``values`` overriding (decoded columns)."""
    data = dict(row)
    data.update(values)
    return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def loads(text: str | None, default: Any = None) -> Any:
    return json.loads(text) if text else default


@dataclass(frozen=True, slots=True)
class Keyed:
    """Rows of one submission: ``key`` is its identity."""

    hotkey: str
    commit_block: int

    @property
    def key(self) -> SubmissionId:
        return SubmissionId(self.hotkey, self.commit_block)


@dataclass(frozen=True, slots=True)
class SubmissionRow(Keyed):
    uid_at_sight: int | None
    coldkey: str | None
    repo: str | None
    revision: str | None
    raw_text: str
    status: str
    status_detail: str | None
    last_kl: float | None
    strikes: int
    first_seen: float
    updated: float


@dataclass(frozen=True, slots=True)
class PendingAdmission(SubmissionRow):
    """A submission waiting for admission, with its attempts so far (None: never tried)."""

    attempts: int | None
    next_retry_block: int | None


@dataclass(frozen=True, slots=True)
class AdmissionRow(Keyed):
    result: str
    params: int | None
    metadata_hash: str | None
    check_name: str | None
    detail: str | None
    attempts: int
    next_retry_block: int | None
    updated: float


@dataclass(frozen=True, slots=True)
class EvaluationRow(Keyed):
    round_id: int
    status: str
    state: str
    prompt_kl: list[float]
    prompt_tokens: list[int]
    mean_kl: float | None
    ci_lo: float | None
    ci_hi: float | None
    p_value: float | None
    reason: str | None
    error: str | None
    suspicious: bool
    onpolicy: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class DisqualificationRow(Keyed):
    reason: str
    check: str
    detail: str
    evidence: dict[str, Any]
    block: int
    round_id: int | None
    at: float


@dataclass(frozen=True, slots=True)
class SubmissionDetail(SubmissionRow):
    """Everything about one submission (``ApiReads.submission``)."""

    admission: AdmissionRow | None
    hashes: dict[str, str]
    evaluations: list[EvaluationRow]
    disqualifications: list[DisqualificationRow]


@dataclass(frozen=True, slots=True)
class CommitmentRow(Keyed):
    uid: int | None
    model: str | None
    revision: str | None
    status: str
    status_detail: str | None
    coldkey: str | None
    first_seen: float


@dataclass(frozen=True, slots=True)
class KingRow(Keyed):
    """The crowned submission; only a submission with a model can be crowned, so repo and revision are set."""

    since_block: int
    round_id: int | None
    kl: float | None
    repo: str
    revision: str
    uid_at_sight: int | None


@dataclass(frozen=True, slots=True)
class KingChangeRow:
    hotkey: str | None
    commit_block: int | None
    from_block: int
    round_id: int | None
    kl: float | None
    reason: str | None
    at: float


@dataclass(frozen=True, slots=True)
class KingPoint(Keyed):
    round_id: int
    block: int
    finished: float | None
    kl: float | None


@dataclass(frozen=True, slots=True)
class WeightsRow:
    id: int
    block: int
    uids: list[int]
    weights: list[float]
    success: bool
    message: str | None
    confirmed: bool | None
    at: float
    state: str | None
    reveal_block: int | None


@dataclass(frozen=True, slots=True)
class RoundSummary:
    id: int
    kind: RoundKind
    block: int
    block_hash: str
    state: str
    started: float
    finished: float | None
    decision: str | None
    p_value: float | None
    king_hotkey: str | None
    king_block: int | None
    new_king_hotkey: str | None
    new_king_block: int | None
    job_id: str | None

    @property
    def king(self) -> SubmissionId | None:
        """The king the round was planned against (None for first and coronation rounds)."""
        return (
            SubmissionId(self.king_hotkey, self.king_block)
            if self.king_hotkey and self.king_block is not None
            else None
        )


@dataclass(frozen=True, slots=True)
class RoundRow(RoundSummary):
    """A round's full record: what it was judged by and what it was sent."""

    prompt_sha256s: list[str]
    rules: dict[str, Any]
    rules_digest: str
    teacher_repo: str
    teacher_revision: str | None
    models: list[SubmissionId]
    pod: str | None
    error: str | None
    slot: int | None


@dataclass(frozen=True, slots=True)
class RoundAudit(RoundRow):
    evaluations: list[EvaluationRow]


@dataclass(frozen=True, slots=True)
class RoundsPage:
    page: int
    per_page: int
    total: int
    items: list[RoundSummary]


@dataclass(frozen=True, slots=True)
class RoundBrief:
    id: int
    kind: str
    block: int
    finished: float | None
    decision: str | None
    p_value: float | None


@dataclass(frozen=True, slots=True)
class ScoreRow(Keyed):
    """A submission's latest evaluation, for the leaderboard."""

    round_id: int
    state: str
    status: str
    mean_kl: float | None
    ci_lo: float | None
    ci_hi: float | None
    reason: str | None
    n_prompts: int
    repo: str | None
    revision: str | None
    uid: int | None
    disqualified: list[str]


@dataclass(frozen=True, slots=True)
class Scores:
    king: KingRow | None
    evaluations: list[ScoreRow]
    last_round: RoundBrief | None


@dataclass(frozen=True, slots=True)
class Metagraph:
    block: int
    neurons: list[dict[str, Any]]
    at: float


@dataclass(frozen=True, slots=True)
class Progress:
    data: Any
    updated: float


@dataclass(frozen=True, slots=True)
class LatestRules:
    round_id: int
    rules: dict[str, Any]
    rules_digest: str


@dataclass(frozen=True, slots=True)
class LastRound:
    id: int
    state: str
    started: float
    finished: float | None


@dataclass(frozen=True, slots=True)
class Stats:
    submissions: dict[str, int]
    rounds: dict[str, int]
    durations: list[float]
    model_errors: int
    last_round: LastRound | None
    last_weights: WeightsRow | None


@dataclass(frozen=True, slots=True)
class SlotRow:
    """One slot this validator processed (``validator.store.schema.SLOT_STATES``) and what the chain said of it."""

    slot: int
    start_block: int
    block_hash: str | None
    state: str
    round_id: int | None
    king_hotkey: str | None
    king_block: int | None
    anchor: str | None
    anchor_block: int | None
    consensus_hotkey: str | None
    consensus_block: int | None
    agree: bool | None
    streak: int | None
    vtrust: float | None
    observed_block: int | None
    updated: float

    @property
    def king(self) -> SubmissionId | None:
        if self.king_hotkey and self.king_block is not None:
            return SubmissionId(self.king_hotkey, self.king_block)
        return None

    @property
    def consensus(self) -> SubmissionId | None:
        if self.consensus_hotkey and self.consensus_block is not None:
            return SubmissionId(self.consensus_hotkey, self.consensus_block)
        return None


@dataclass(frozen=True, slots=True)
class ScheduleEntry(Keyed):
    """A submission the schedule places (its commitment parsed): its coldkey and its slot, once assigned."""

    coldkey: str
    slot: int | None

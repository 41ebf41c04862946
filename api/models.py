"""Typed response models for every endpoint (they generate the OpenAPI schema).

Responses are built from the store's typed rows (``validator.store.rows``, as
``dataclasses.asdict`` dicts) once per cache refill and validated here;
``allow_inf_nan=False`` is the last guard behind ``sanitize`` (LESSONS 26). Extra
keys from the store are ignored, so a new store column never breaks the API. The
rules are served as ``eval.rules.ContestRules``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from eval.rules import ContestRules
from eval.schemas import JobProgress

DQReason = Literal["COPY", "FUNCTIONAL_COPY", "REMOVED", "INVALID", "KL_TOO_HIGH"]


def sanitize(value: Any) -> Any:
    """NaN/inf become None, recursively; nothing non-finite ever reaches JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    return value


class Out(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class ErrorOut(Out):
    error: str
    detail: Any = None


class SubmissionKey(Out):
    hotkey: str
    commit_block: int


class Overview(Out):
    name: str
    version: str
    network: str
    netuid: int
    dashboard: str
    openapi: str
    endpoints: list[str]


class Health(Out):
    status: Literal["ok", "degraded", "down"]
    db_ok: bool
    last_sync_block: int | None = None
    last_sync_age_s: float | None = None
    last_round_id: int | None = None
    last_round_state: str | None = None
    last_round_age_s: float | None = None
    hub_auth: Literal["ok", "rejected"] | None = Field(
        None, description="does the hub accept the validator's token (HF_TOKEN)? null until it was first asked"
    )
    hub_auth_detail: str | None = Field(None, description="the hub's answer when it rejected the token")
    reasons: list[str] = Field([], description="why status is not ok")
    now: float


class NeuronOut(Out):
    uid: int
    hotkey: str
    coldkey: str | None = None
    stake: float | None = None
    incentive: float | None = None
    emission: float | None = None
    validator_permit: bool | None = None
    last_update: int | None = None


class MetagraphOut(Out):
    block: int | None = None
    at: float | None = None
    n: int
    neurons: list[NeuronOut]


class CommitmentOut(Out):
    hotkey: str
    uid: int | None = None
    commit_block: int
    model: str | None = None
    revision: str | None = None
    status: str
    status_detail: str | None = None
    coldkey: str | None = None
    first_seen: float | None = None


class CommitmentsOut(Out):
    total: int
    items: list[CommitmentOut]


class KingOut(Out):
    hotkey: str
    commit_block: int
    uid: int | None = Field(None, validation_alias="uid_at_sight")
    repo: str | None = None
    revision: str | None = None
    since_block: int
    round_id: int | None = None
    kl: float | None = None


class ScoreOut(Out):
    hotkey: str
    commit_block: int
    uid: int | None = None
    repo: str | None = None
    revision: str | None = None
    round_id: int
    state: str
    status: str
    mean_kl: float | None = None
    ci_lo: float | None = None
    ci_hi: float | None = None
    n_prompts: int = 0
    reason: str | None = Field(None, description="why this evaluation ended as it did (the decision, in words)")
    disqualified: list[str] = []
    rank: int | None = Field(
        None, description="1 = lowest KL; null for rows that are not comparable (model error, no KL, disqualified)"
    )


class RoundBrief(Out):
    id: int
    kind: str
    block: int
    finished: float | None = None
    decision: str | None = None
    p_value: float | None = None


class ScoresOut(Out):
    king: KingOut | None
    evaluations: list[ScoreOut]
    last_round: RoundBrief | None
    epsilon: float
    alpha: float
    max_kl: float
    rules_version: int
    rules_digest: str | None


class DisqualificationOut(Out):
    hotkey: str
    commit_block: int
    reason: DQReason
    check: str
    detail: str
    evidence: dict[str, Any]
    block: int
    round_id: int | None = None
    at: float | None = None


class DisqualificationsOut(Out):
    total: int
    items: list[DisqualificationOut]


class RoundSummary(Out):
    id: int
    kind: str
    block: int
    block_hash: str
    state: str
    started: float
    finished: float | None = None
    decision: str | None = None
    p_value: float | None = None
    king_hotkey: str | None = None
    king_block: int | None = None
    new_king_hotkey: str | None = None
    new_king_block: int | None = None
    job_id: str | None = None


class RoundsPage(Out):
    page: int
    per_page: int
    total: int
    pages: int
    items: list[RoundSummary]


class OnPolicyOut(Out):
    """One guarded prompt: the model's own greedy continuation and what the teacher made of it."""

    tokens: int
    teacher_nll: float | None = None
    reverse_kl: float | None = None
    repetition: float | None = None
    text: str = ""


class EvaluationOut(Out):
    hotkey: str
    commit_block: int
    status: str
    state: str
    prompt_kl: list[float | None]
    prompt_tokens: list[int]
    mean_kl: float | None = None
    ci_lo: float | None = None
    ci_hi: float | None = None
    p_value: float | None = None
    reason: str | None = None
    error: str | None = None
    suspicious: bool = False
    onpolicy: list[OnPolicyOut] = Field(
        [], description="the on-policy guard's values for the round's first prompts, with the model's own text"
    )


class RoundAudit(RoundSummary):
    """Everything needed to re-run and check a round: prompts' hashes, rules, teacher, per-prompt KL and,
    for the on-policy guard, each model's own continuations of the guarded prompts with the teacher's view."""

    prompt_sha256s: list[str]
    rules: dict[str, Any]
    rules_digest: str
    teacher_repo: str
    teacher_revision: str | None = None
    models: list[SubmissionKey]
    pod: str | None = None
    error: str | None = None
    evaluations: list[EvaluationOut]


class AdmissionOut(Out):
    result: str
    params: int | None = None
    metadata_hash: str | None = None
    check_name: str | None = None
    detail: str | None = None
    attempts: int = 0
    next_retry_block: int | None = None


class SubmissionOut(Out):
    hotkey: str
    commit_block: int
    uid_at_sight: int | None = None
    coldkey: str | None = None
    repo: str | None = None
    revision: str | None = None
    raw_text: str
    status: str
    status_detail: str | None = None
    last_kl: float | None = None
    strikes: int = 0
    first_seen: float
    updated: float
    admission: AdmissionOut | None = None
    hashes: dict[str, str]
    evaluations: list[EvaluationOut]
    disqualifications: list[DisqualificationOut]


class MinerOut(Out):
    hotkey: str
    is_king: bool
    submissions: list[SubmissionOut]


class KingPoint(Out):
    round_id: int
    block: int
    finished: float | None = None
    hotkey: str
    commit_block: int
    kl: float | None = None


class KingChange(Out):
    hotkey: str | None = None
    commit_block: int | None = None
    from_block: int
    round_id: int | None = None
    kl: float | None = None
    reason: str | None = None
    at: float


class HistoryOut(Out):
    points: list[KingPoint]
    changes: list[KingChange]


class ProgressOut(Out):
    active: bool
    round_id: int | None = None
    updated: float | None = None
    age_s: float | None = None
    phase: str | None = Field(None, description="the validator's phase: dispatched (waiting for the pod) or running")
    progress: JobProgress | None = None
    data: dict[str, Any] = {}


class RulesOut(Out):
    source: Literal["round", "default"]
    round_id: int | None = None
    digest: str
    rules: ContestRules | dict[str, Any]


class PriceOut(Out):
    network: str
    netuid: int
    available: bool
    price_tao_per_alpha: float | None = None
    emission_tao_per_block: float | None = None
    block: int | None = None
    reason: str | None = None
    fetched_at: float


class SlotOut(Out):
    """One slot of the shared schedule as this validator judged it, and what the chain's weights said of it."""

    slot: int
    start_block: int
    state: Literal["open", "empty", "judged"]
    round_id: int | None = None
    king: SubmissionKey | None = Field(None, description="this validator's king after the slot")
    consensus_king: SubmissionKey | None = Field(
        None, description="the other validators' stake-weighted top miner on chain (validator.consensus)"
    )
    agree: bool | None = Field(None, description="null while the chain shows no consensus king")
    anchor: Literal["consensus", "none"] | None = Field(
        None, description="the validator started here: from the consensus king, or (none) by a coronation"
    )
    observed_block: int | None = None


class ConsensusOut(Out):
    """Does this validator agree with the chain? Its newest slot, its king, the consensus king, its vtrust."""

    slot: int | None = Field(None, description="the newest slot this validator finished")
    own_king: SubmissionKey | None = None
    consensus_king: SubmissionKey | None = None
    agreeing: bool | None = Field(None, description="own king == consensus king; null without a consensus king")
    disagreeing_slots: int = Field(0, description="slots in a row whose king differed from the consensus king")
    vtrust: float | None = Field(None, description="this validator's trust under Yuma's clipping, from chain weights")
    observed_block: int | None = None
    slots: list[SlotOut] = Field(default_factory=list, description="the newest slots, newest first")

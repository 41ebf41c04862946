"""King-of-the-hill contest decisions, as pure functions of plain data.

No I/O, no clock, no randomness: the loop reads the chain and the store, hands
plain values in, and records what comes out. Every submission is identified by
``eval.schemas.SubmissionId`` (hotkey, commit block), never by uid (LESSONS 1, 17). The round result is
interpreted in ``validator.verdicts``; which slot judges a submission is
``validator.schedule``'s; this module decides who enters a slot's round and
when weights are due.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from eval.rules import ContestRules
from eval.schemas import SubmissionId
from validator.chain.commitments import Invalid, parse_commitment
from validator.disqualify import Disqualification

RoundKind = Literal["none", "challenge", "first", "coronation"]
SubmissionStatus = Literal[
    "pending",  # seen, waiting for admission
    "admitted",  # passed admission, never evaluated: a challenger
    "evaluated",  # final: evaluated in a round (lost, won, early-stopped, model error)
    "invalid",  # final: malformed commitment or failed admission
    "removed",  # final: repo gone (strikes exhausted) or deregistered owner
    "disqualified",  # final: COPY, FUNCTIONAL_COPY, KL_TOO_HIGH
    "ignored",  # final: withdrawn, its hotkey committed again (the chain keeps only the newest)
]
VANISHED_STATUSES: frozenset[str] = frozenset({"invalid", "removed", "disqualified", "ignored"})
LIVE_STATUSES: frozenset[str] = frozenset({"pending", "admitted", "evaluated"})
"""Statuses a re-commit withdraws; final verdicts (invalid, removed, disqualified) stand."""


class CommitmentLike(Protocol):
    """What ``validator.chain.port.Commitment`` provides (chain fields come only from here)."""

    hotkey: str
    block: int
    text: str


class NeuronLike(Protocol):
    uid: int
    hotkey: str
    coldkey: str


@dataclass(frozen=True)
class NewSubmission:
    """A commitment seen for the first time; ``status`` is pending or invalid."""

    hotkey: str
    commit_block: int
    uid: int
    coldkey: str
    raw_text: str
    status: Literal["pending", "invalid"]
    repo: str | None = None
    revision: str | None = None
    reason: str | None = None

    @property
    def key(self) -> SubmissionId:
        return SubmissionId(self.hotkey, self.commit_block)


def commitment_disqualifications(subs: Iterable[NewSubmission]) -> list[Disqualification]:
    """A malformed commitment is disqualified when first seen (INVALID, final), with the parser's reason."""
    return [
        Disqualification(s.hotkey, s.commit_block, "INVALID", "commitment", s.reason or "")
        for s in subs
        if s.status == "invalid"
    ]


def current_commitments(commitments: Iterable[CommitmentLike]) -> dict[str, CommitmentLike]:
    """One commitment per hotkey, the newest, as the chain itself keeps them."""
    latest: dict[str, CommitmentLike] = {}
    for c in commitments:
        prev = latest.get(c.hotkey)
        if prev is None or c.block > prev.block:
            latest[c.hotkey] = c
    return latest


def new_submissions(
    commitments: Iterable[CommitmentLike],
    known_keys: Iterable[SubmissionId],
    neurons: Iterable[NeuronLike],
) -> list[NewSubmission]:
    """Submissions to record from this sync, in seniority order.

    A hotkey's submission is its current commitment, identified by ``(hotkey, block)`` as the
    chain reports them now: the same for every validator, whenever it started (docs/decisions.md).
    A re-commit is therefore a new submission with a new key; the one it replaces is withdrawn
    (``withdrawn_submissions``). Hotkeys not registered now are skipped (they have no uid to
    reward); identity never involves the uid, so a new hotkey on a recycled uid inherits
    nothing (LESSONS 17).
    """
    known = set(known_keys)
    by_hotkey = {n.hotkey: n for n in neurons}
    out: list[NewSubmission] = []
    for c in sorted(current_commitments(commitments).values(), key=lambda c: (c.block, c.hotkey)):
        neuron = by_hotkey.get(c.hotkey)
        if neuron is None or SubmissionId(c.hotkey, c.block) in known:
            continue
        base = (c.hotkey, c.block, neuron.uid, neuron.coldkey, c.text)
        parsed = parse_commitment(c.text)
        if isinstance(parsed, Invalid):
            out.append(NewSubmission(*base, status="invalid", reason=parsed.reason))
        else:
            out.append(NewSubmission(*base, status="pending", repo=parsed.repo, revision=parsed.revision))
    return out


def withdrawn_submissions(
    commitments: Iterable[CommitmentLike], live_keys: Iterable[SubmissionId]
) -> dict[SubmissionId, int]:
    """Live submissions whose hotkey's commitment the chain now shows at a later block: key -> that block.

    The chain overwrote them, so no validator that starts now could see them: they stop counting
    (no crown, no challenger slot, no ownership claim). A hotkey with no readable commitment now
    withdraws nothing (a read that filtered a sealed one must not erase a submission).
    """
    current = current_commitments(commitments)
    return {
        key: current[key.hotkey].block
        for key in live_keys
        if key.hotkey in current and current[key.hotkey].block > key.commit_block
    }


@dataclass(frozen=True)
class Candidate:
    """A recorded submission as the planner sees it."""

    hotkey: str
    commit_block: int
    repo: str
    revision: str
    coldkey: str
    status: str
    last_kl: float | None = None
    registered: bool = True
    slot: int | None = None  # the slot that judges it (validator.schedule), once assigned

    @property
    def key(self) -> SubmissionId:
        return SubmissionId(self.hotkey, self.commit_block)


@dataclass(frozen=True)
class RoundPlan:
    """Who is scored in one round. ``king`` is None for first and coronation rounds."""

    kind: RoundKind
    king: Candidate | None
    challengers: tuple[Candidate, ...]
    reevaluated: tuple[SubmissionId, ...] = ()
    vanished_king: SubmissionId | None = None

    @property
    def models(self) -> tuple[Candidate, ...]:
        """King first, then challengers; each submission at most once (LESSONS 1)."""
        return ((self.king,) if self.king else ()) + self.challengers


def king_vanished(king: Candidate) -> bool:
    """A king that is REMOVED, invalid, disqualified or deregistered can hold nothing (LESSONS 20)."""
    return king.status in VANISHED_STATUSES or not king.registered


def king_changes(king_before: SubmissionId | None, new_king: SubmissionId | None, stored: SubmissionId | None) -> bool:
    """Does a finished round write the throne? When it moved the crown, or when the stored king is not
    the one it crowned (the throne changed since the round was planned): the round's answer stands.

    ``king_before`` and ``new_king`` come from ``validator.verdicts.RoundOutcome``; ``stored`` is the
    king the store holds as the result is recorded.
    """
    return new_king != king_before or new_king != stored


def slot_challengers(slot: int, candidates: Sequence[Candidate]) -> list[Candidate]:
    """The slot's challengers: admitted, registered, never evaluated, placed in ``slot`` by the schedule.

    The caps (per slot, per coldkey: LESSONS 6) were applied when the schedule placed them.
    """
    return sorted(
        (c for c in candidates if c.slot == slot and c.status == "admitted" and c.registered), key=lambda c: c.key
    )


def coronation_pool(
    slot: int, candidates: Sequence[Candidate], rules: ContestRules, exclude: SubmissionId | None = None
) -> list[Candidate]:
    """Who a coronation (no king to defend) re-scores: live submissions placed in ``slot`` or before.

    The newest ``rules.coronation_candidates`` of them, at most ``max_queued_per_coldkey`` per
    coldkey, in seniority order. Only the schedule and the statuses decide, never a validator's old
    scores, so every validator without a king crowns from the same pool (LESSONS 14, 31).
    """
    alive = [
        c
        for c in candidates
        if c.status in ("admitted", "evaluated") and c.registered and c.slot is not None and c.slot <= slot
    ]
    per_coldkey: dict[str, int] = {}
    picked: list[Candidate] = []
    for c in sorted(alive, key=lambda c: c.key, reverse=True):
        if c.key == exclude or len(picked) >= rules.coronation_candidates:
            continue
        if per_coldkey.get(c.coldkey, 0) >= rules.max_queued_per_coldkey:
            continue
        per_coldkey[c.coldkey] = per_coldkey.get(c.coldkey, 0) + 1
        picked.append(c)
    return sorted(picked, key=lambda c: c.key)


def plan_slot(
    slot: int,
    king: Candidate | None,
    candidates: Sequence[Candidate],
    rules: ContestRules,
    *,
    crown: bool = False,
) -> RoundPlan:
    """The round of ``slot``. ``king`` is the king after the previous slot, never re-derived from old scores.

    - king alive + challengers in this slot -> "challenge"; none -> "none" (no job, no GPU).
    - no king (or it vanished): a coronation over ``coronation_pool`` when this slot has
      challengers or ``crown`` (the validator just anchored with no consensus king, or its king
      vanished): "first" when nobody in it was evaluated before, else "coronation".
    """
    fresh = slot_challengers(slot, candidates)
    if king is not None and not king_vanished(king):
        challengers = tuple(c for c in fresh if c.key != king.key)
        return RoundPlan("challenge", king, challengers) if challengers else RoundPlan("none", king, ())
    vanished = king.key if king is not None else None
    if not fresh and not crown and vanished is None:
        return RoundPlan("none", None, ())
    pool = coronation_pool(slot, candidates, rules, exclude=vanished)
    if not pool:
        return RoundPlan("none", None, (), vanished_king=vanished)
    again = tuple(c.key for c in pool if c.status == "evaluated")
    kind: RoundKind = "coronation" if again or vanished is not None else "first"
    return RoundPlan(kind, None, tuple(pool), again, vanished)


def weights_due(
    last_set_block: int | None,
    head_block: int,
    king_changed: bool,
    interval: int,
    rate_limit: int,
) -> bool:
    """Set weights only when changed or due, never inside the chain's rate limit (LESSONS 23)."""
    if last_set_block is None:
        return True
    since = head_block - last_set_block
    if since < rate_limit:
        return False
    return king_changed or since >= interval


def weights_for(king: SubmissionId | None, neurons: Iterable[NeuronLike]) -> tuple[list[int], list[float]] | None:
    """King 1.0, every other uid 0.0. None (set nothing) when there is no registered king.

    With no king there is nobody to reward; leaving the last weights in place
    until a king is crowned beats pointing emission at an arbitrary uid.
    """
    if king is None:
        return None
    uids = sorted({n.uid for n in neurons})
    king_uids = [n.uid for n in neurons if n.hotkey == king.hotkey]
    if not king_uids:
        return None
    return uids, [1.0 if uid == king_uids[0] else 0.0 for uid in uids]


@dataclass(frozen=True)
class StrikeResult:
    strikes: int
    removed: bool


def strike_missing_repo(strikes: int, max_strikes: int, outcome: Literal["missing", "transient", "ok"]) -> StrikeResult:
    """Bounded strikes for a repo that is gone (LESSONS 19); transient errors never count (LESSONS 21).

    ``missing`` is a definite answer (404, private, revision gone); after
    ``max_strikes`` of them in a row the submission is REMOVED. ``ok`` resets.
    """
    if max_strikes < 1:
        raise ValueError("max_strikes must be >= 1")
    if outcome == "transient":
        return StrikeResult(strikes, False)
    if outcome == "ok":
        return StrikeResult(0, False)
    strikes += 1
    return StrikeResult(strikes, strikes >= max_strikes)

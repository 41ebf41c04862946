"""What a round's result means: final states, disqualifications and the next king (pure).

Results are matched to the plan by submission identity, so one submission's
result can never land on another's entry, the king's least of all (LESSONS 1).
Dethroning compares the king and a challenger on this round's prompts only
(LESSONS 14, 15); every evaluated model reaches a final state (LESSONS 18).
Who is disqualified, and why, is decided in ``validator.disqualify``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from eval.rules import ContestRules
from eval.schemas import EvalResult, ModelResult, SubmissionId
from eval.stats import GuardDecision, fingerprint_distance, mean_ci, onpolicy_guard
from eval.stats import decide as stats_decide
from validator.contest import Candidate, RoundPlan
from validator.disqualify import DQ_STATES, Disqualification, DistanceFn, disqualify

SUSPICIOUS_KL = 1e-6
"""A mean KL below this is flagged: a student that matches the teacher exactly is likely the teacher (LESSONS 8)."""

ModelState = Literal[
    "king",
    "dethroned",
    "won",
    "lost",
    "early_stopped",
    "onpolicy_stopped",
    "model_error",
    "kl_too_high",
    "copy",
    "functional_copy",
]


class DecisionLike(Protocol):
    """What ``eval.stats.Decision`` provides."""

    @property
    def dethrone(self) -> bool: ...
    @property
    def p_value(self) -> float | None: ...
    @property
    def reason(self) -> str: ...


DecideFn = Callable[[Sequence[float], Sequence[float], ContestRules], DecisionLike]


@dataclass(frozen=True)
class Verdict:
    """One model's final state in this round."""

    hotkey: str
    commit_block: int
    state: ModelState
    mean_kl: float | None
    p_value: float | None = None
    reason: str = ""
    suspicious: bool = False

    @property
    def key(self) -> SubmissionId:
        return SubmissionId(self.hotkey, self.commit_block)

    @property
    def submission_status(self) -> str:
        """The submission's final status after this verdict: a DQ state disqualifies, anything else is evaluated."""
        return "disqualified" if self.state in DQ_STATES else "evaluated"

    @property
    def last_kl(self) -> float | None:
        """The KL the planner remembers for a coronation: none after a model error."""
        return None if self.state == "model_error" else self.mean_kl

    @property
    def status_detail(self) -> str:
        return self.reason or self.state


@dataclass(frozen=True)
class Evaluation:
    """One model's row of a round as the store keeps it: the pod's numbers, the verdict, the KL interval.

    ``mean_kl`` / ``ci_lo`` / ``ci_hi`` are ``eval.stats.mean_ci`` over the per-prompt KL (None
    without any); the store writes them as given.
    """

    verdict: Verdict
    result: ModelResult
    mean_kl: float | None
    ci_lo: float | None
    ci_hi: float | None

    @property
    def key(self) -> SubmissionId:
        return self.verdict.key


def evaluation(verdict: Verdict, result: ModelResult) -> Evaluation:
    mean, lo, hi = mean_ci(result.prompt_kl) if result.prompt_kl else (None, None, None)
    return Evaluation(verdict, result, mean, lo, hi)


@dataclass(frozen=True)
class RoundOutcome:
    kind: str
    king_before: SubmissionId | None
    new_king: SubmissionId | None
    new_king_kl: float | None
    verdicts: tuple[Verdict, ...]
    dqs: tuple[Disqualification, ...]
    reason: str
    p_value: float | None
    evaluations: tuple[Evaluation, ...] = ()
    """One per verdict, in the same order (what ``Store.record_round_result`` writes)."""

    @property
    def king_changed(self) -> bool:
        return self.new_king != self.king_before

    @property
    def suspicious(self) -> tuple[SubmissionId, ...]:
        return tuple(v.key for v in self.verdicts if v.suspicious)


def _match_results(result: EvalResult) -> dict[SubmissionId, ModelResult]:
    """Index the result by submission identity.

    ``result`` was checked against the job built from this plan (``validator.pod_result.validate_result``):
    every planned model is present once, under its own identity and revision, with complete values.
    """
    return {m.ref.submission: m for m in result.models}


def interpret_result(
    plan: RoundPlan,
    result: EvalResult,
    rules: ContestRules,
    known_fingerprints: Sequence[tuple[SubmissionId, Sequence[float]]] = (),
    known_content_hashes: Sequence[tuple[SubmissionId, str]] = (),
    *,
    decide: DecideFn | None = None,
    distance: DistanceFn = fingerprint_distance,
) -> RoundOutcome:
    """Turn one round's result into final states, DQs and the next king.

    ``known_*`` hold every earlier submission's fingerprint / content hash from all
    past rounds; this round's own models are added, so a later commit copying an
    earlier one in the same round is caught too. ``result`` is one the pod client
    checked against the job built from ``plan`` (``validate_result``); it is not checked again.
    """
    if plan.kind == "none":
        raise ValueError("a 'none' round has no result to interpret")
    decide = decide or stats_decide
    got = _match_results(result)
    hashes = list(known_content_hashes) + [(k, m.content_hash) for k, m in got.items() if m.content_hash]
    prints = list(known_fingerprints) + [(k, m.fingerprint) for k, m in got.items() if m.fingerprint]

    verdicts: dict[SubmissionId, Verdict] = {}
    dqs: list[Disqualification] = []
    eligible: list[tuple[SubmissionId, ModelResult]] = []
    for c in plan.models:
        m = got[c.key]
        mean = m.mean_kl
        sus = m.status == "ok" and mean is not None and mean < SUSPICIOUS_KL
        dq = disqualify(c.key, m, hashes, prints, rules, distance)
        if dq is not None:
            dqs.append(dq)
            state: ModelState = (
                "copy"
                if dq.reason == "COPY"
                else ("functional_copy" if dq.reason == "FUNCTIONAL_COPY" else "kl_too_high")
            )
            verdicts[c.key] = Verdict(c.hotkey, c.commit_block, state, mean, reason=dq.detail, suspicious=sus)
        elif m.status == "model_error":
            verdicts[c.key] = Verdict(c.hotkey, c.commit_block, "model_error", None, reason=m.error or "")
        elif m.status == "early_stopped":
            verdicts[c.key] = Verdict(c.hotkey, c.commit_block, "early_stopped", mean, reason="stopped early")
        else:
            eligible.append((c.key, m))
            verdicts[c.key] = Verdict(c.hotkey, c.commit_block, "lost", mean, suspicious=sus)

    king = plan.king
    new_king: SubmissionId | None
    if king is not None and any(k == king.key for k, _ in eligible):
        new_king, kl, reason, p = _challenge(king, got[king.key], eligible, rules, decide, verdicts)
    else:
        new_king, kl, reason, p = _crown_best(eligible, verdicts, king)
    final = tuple(verdicts[c.key] for c in plan.models)
    return RoundOutcome(
        kind=plan.kind,
        king_before=king.key if king else plan.vanished_king,
        new_king=new_king,
        new_king_kl=kl,
        verdicts=final,
        dqs=tuple(dqs),
        reason=reason,
        p_value=p,
        evaluations=tuple(evaluation(v, got[v.key]) for v in final),
    )


def _challenge(
    king: Candidate,
    king_result: ModelResult,
    eligible: list[tuple[SubmissionId, ModelResult]],
    rules: ContestRules,
    decide: DecideFn,
    verdicts: dict[SubmissionId, Verdict],
) -> tuple[SubmissionId, float | None, str, float | None]:
    """Paired decision against this round's king scores; the best winner (lowest mean) takes the crown.

    A challenger that beats the king on KL must also pass the on-policy guard against the king's
    own continuations on the same prompts (``eval.stats.onpolicy_guard``); if it does not, its
    state is ``onpolicy_stopped``, final for that submission like an early stop.
    """
    winners: list[tuple[float, SubmissionId]] = []
    stopped: list[SubmissionId] = []
    best_p: float | None = None
    for key, m in eligible:
        if key == king.key:
            continue
        d = decide(king_result.prompt_kl, m.prompt_kl, rules)
        v = verdicts[key]
        verdicts[key] = Verdict(v.hotkey, v.commit_block, "lost", v.mean_kl, d.p_value, d.reason, v.suspicious)
        if best_p is None or (d.p_value is not None and d.p_value < best_p):
            best_p = d.p_value
        if d.dethrone and rules.onpolicy_prompts > 0:
            g = _guard(king_result, m, rules)
            if g.stop:
                why = f"beats the king on KL ({m.mean_kl:.6g} vs {king_result.mean_kl:.6g}) but {g.reason}"
                verdicts[key] = Verdict(
                    v.hotkey, v.commit_block, "onpolicy_stopped", v.mean_kl, d.p_value, why, v.suspicious
                )
                stopped.append(key)
                continue
            verdicts[key] = Verdict(
                v.hotkey, v.commit_block, "lost", v.mean_kl, d.p_value, f"{d.reason}; {g.reason}", v.suspicious
            )
        if d.dethrone:
            winners.append((m.mean_kl or 0.0, key))
    note = f"; on-policy guard stopped {', '.join(str(k) for k in stopped)}" if stopped else ""
    kv = verdicts[king.key]
    if not winners:
        verdicts[king.key] = Verdict(
            kv.hotkey, kv.commit_block, "king", kv.mean_kl, reason="defended" + note, suspicious=kv.suspicious
        )
        return king.key, king_result.mean_kl, "king defended" + note, best_p
    winners.sort()
    win = winners[0][1]
    wv = verdicts[win]
    verdicts[win] = Verdict(wv.hotkey, wv.commit_block, "won", wv.mean_kl, wv.p_value, wv.reason, wv.suspicious)
    verdicts[king.key] = Verdict(
        kv.hotkey,
        kv.commit_block,
        "dethroned",
        kv.mean_kl,
        reason=f"dethroned by {win}",
        suspicious=kv.suspicious,
    )
    return win, wv.mean_kl, f"dethroned by {win}{note}", wv.p_value


def _guard(king: ModelResult, challenger: ModelResult, rules: ContestRules) -> GuardDecision:
    """The on-policy guard on the guarded prompts both were measured on (the same ones: checked at matching)."""
    return onpolicy_guard(
        [o.teacher_nll for o in king.onpolicy],
        [o.teacher_nll for o in challenger.onpolicy],
        [o.repetition for o in king.onpolicy],
        [o.repetition for o in challenger.onpolicy],
        rules,
    )


def _crown_best(
    eligible: list[tuple[SubmissionId, ModelResult]], verdicts: dict[SubmissionId, Verdict], old_king: Candidate | None
) -> tuple[SubmissionId | None, float | None, str, float | None]:
    """First / coronation round, or a king that failed this round: lowest mean KL on these prompts wins."""
    if old_king is not None:
        kv = verdicts[old_king.key]
        if kv.state not in DQ_STATES:
            verdicts[old_king.key] = Verdict(
                kv.hotkey, kv.commit_block, "dethroned", kv.mean_kl, reason=f"king failed this round ({kv.state})"
            )
    pool = [(m.mean_kl, k) for k, m in eligible if m.mean_kl is not None]
    if not pool:
        return None, None, "no eligible model: no king", None
    pool.sort()
    mean, win = pool[0]
    v = verdicts[win]
    verdicts[win] = Verdict(
        v.hotkey, v.commit_block, "won", v.mean_kl, reason="lowest mean KL this round", suspicious=v.suspicious
    )
    return win, mean, f"crowned {win} (lowest mean KL)", None

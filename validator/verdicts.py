"""What a round's result means: final states, disqualifications and the next king (pure).

Results are matched to the plan by submission identity, so one submission's
result can never land on another's entry, the king's least of all (LESSONS 1).
Dethroning compares the king and a challenger on this round's prompts only
(LESSONS 14, 15); every evaluated model reaches a final state (LESSONS 18).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from eval.rules import ContestRules
from eval.schemas import EvalResult, ModelResult
from eval.stats import GuardDecision, fingerprint_distance, onpolicy_guard
from eval.stats import decide as stats_decide
from validator.contest import Candidate, Key, RoundPlan, order_key

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
DQ_STATES: dict[str, str] = {"copy": "COPY", "functional_copy": "FUNCTIONAL_COPY", "kl_too_high": "KL_TOO_HIGH"}


class DecisionLike(Protocol):
    """What ``eval.stats.Decision`` provides."""

    @property
    def dethrone(self) -> bool: ...
    @property
    def p_value(self) -> float | None: ...
    @property
    def reason(self) -> str: ...


DecideFn = Callable[[Sequence[float], Sequence[float], ContestRules], DecisionLike]
DistanceFn = Callable[[Sequence[float], Sequence[float]], float]


@dataclass(frozen=True)
class Disqualification:
    hotkey: str
    commit_block: int
    reason: str  # COPY | FUNCTIONAL_COPY | KL_TOO_HIGH
    check: str
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


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
    def key(self) -> Key:
        return (self.hotkey, self.commit_block)


@dataclass(frozen=True)
class RoundOutcome:
    kind: str
    king_before: Key | None
    new_king: Key | None
    new_king_kl: float | None
    verdicts: tuple[Verdict, ...]
    dqs: tuple[Disqualification, ...]
    reason: str
    p_value: float | None

    @property
    def king_changed(self) -> bool:
        return self.new_king != self.king_before

    @property
    def suspicious(self) -> tuple[Key, ...]:
        return tuple(v.key for v in self.verdicts if v.suspicious)


def _match_results(result: EvalResult) -> dict[Key, ModelResult]:
    """Index the result by submission identity.

    ``result`` was checked against the job built from this plan (``validator.pod_client.validate_result``):
    every planned model is present once, under its own identity and revision, with complete values.
    """
    return {(m.ref.submission.hotkey, m.ref.submission.commit_block): m for m in result.models}


def _copy_check(
    key: Key,
    m: ModelResult,
    hashes: list[tuple[Key, str]],
    prints: list[tuple[Key, Sequence[float]]],
    rules: ContestRules,
    distance: DistanceFn,
) -> Disqualification | None:
    """Earlier commit owns: compare with every strictly earlier submission (the king is not exempt)."""
    mine = order_key(key)
    if m.content_hash:
        owners = sorted((k for k, h in hashes if h == m.content_hash and order_key(k) < mine), key=order_key)
        if owners:
            o = owners[0]
            return Disqualification(
                key[0],
                key[1],
                "COPY",
                "content_hash",
                f"same weights as {o[0]}:{o[1]}",
                {"copy_of": {"hotkey": o[0], "commit_block": o[1]}, "content_hash": m.content_hash},
            )
    if m.fingerprint:
        close = [(k, distance(fp, m.fingerprint)) for k, fp in prints if order_key(k) < mine]
        close = sorted(((k, d) for k, d in close if d < rules.fingerprint_threshold), key=lambda t: order_key(t[0]))
        if close:
            o, d = close[0]
            return Disqualification(
                key[0],
                key[1],
                "FUNCTIONAL_COPY",
                "fingerprint",
                f"behaves like {o[0]}:{o[1]} (distance {d:.6g} < {rules.fingerprint_threshold})",
                {"copy_of": {"hotkey": o[0], "commit_block": o[1]}, "distance": d},
            )
    return None


def interpret_result(
    plan: RoundPlan,
    result: EvalResult,
    rules: ContestRules,
    known_fingerprints: Sequence[tuple[Key, Sequence[float]]] = (),
    known_content_hashes: Sequence[tuple[Key, str]] = (),
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

    verdicts: dict[Key, Verdict] = {}
    dqs: list[Disqualification] = []
    eligible: list[tuple[Key, ModelResult]] = []
    for c in plan.models:
        m = got[c.key]
        mean = m.mean_kl
        sus = m.status == "ok" and mean is not None and mean < SUSPICIOUS_KL
        dq = _copy_check(c.key, m, hashes, prints, rules, distance)
        if dq is None and m.status == "ok" and mean is not None and mean > rules.max_kl:
            dq = Disqualification(
                c.hotkey,
                c.commit_block,
                "KL_TOO_HIGH",
                "max_kl",
                f"mean KL {mean:.6g} > {rules.max_kl}",
                {"mean_kl": mean},
            )
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
    new_king: Key | None
    if king is not None and any(k == king.key for k, _ in eligible):
        new_king, kl, reason, p = _challenge(king, got[king.key], eligible, rules, decide, verdicts)
    else:
        new_king, kl, reason, p = _crown_best(eligible, verdicts, king)
    return RoundOutcome(
        kind=plan.kind,
        king_before=king.key if king else plan.vanished_king,
        new_king=new_king,
        new_king_kl=kl,
        verdicts=tuple(verdicts[c.key] for c in plan.models),
        dqs=tuple(dqs),
        reason=reason,
        p_value=p,
    )


def _challenge(
    king: Candidate,
    king_result: ModelResult,
    eligible: list[tuple[Key, ModelResult]],
    rules: ContestRules,
    decide: DecideFn,
    verdicts: dict[Key, Verdict],
) -> tuple[Key, float | None, str, float | None]:
    """Paired decision against this round's king scores; the best winner (lowest mean) takes the crown.

    A challenger that beats the king on KL must also pass the on-policy guard against the king's
    own continuations on the same prompts (``eval.stats.onpolicy_guard``); if it does not, its
    state is ``onpolicy_stopped``, final for that submission like an early stop.
    """
    winners: list[tuple[float, tuple[int, str], Key]] = []
    stopped: list[Key] = []
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
            winners.append((m.mean_kl or 0.0, order_key(key), key))
    note = f"; on-policy guard stopped {', '.join(f'{k[0]}:{k[1]}' for k in stopped)}" if stopped else ""
    kv = verdicts[king.key]
    if not winners:
        verdicts[king.key] = Verdict(
            kv.hotkey, kv.commit_block, "king", kv.mean_kl, reason="defended" + note, suspicious=kv.suspicious
        )
        return king.key, king_result.mean_kl, "king defended" + note, best_p
    winners.sort()
    win = winners[0][2]
    wv = verdicts[win]
    verdicts[win] = Verdict(wv.hotkey, wv.commit_block, "won", wv.mean_kl, wv.p_value, wv.reason, wv.suspicious)
    verdicts[king.key] = Verdict(
        kv.hotkey,
        kv.commit_block,
        "dethroned",
        kv.mean_kl,
        reason=f"dethroned by {win[0]}:{win[1]}",
        suspicious=kv.suspicious,
    )
    return win, wv.mean_kl, f"dethroned by {win[0]}:{win[1]}{note}", wv.p_value


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
    eligible: list[tuple[Key, ModelResult]], verdicts: dict[Key, Verdict], old_king: Candidate | None
) -> tuple[Key | None, float | None, str, float | None]:
    """First / coronation round, or a king that failed this round: lowest mean KL on these prompts wins."""
    if old_king is not None:
        kv = verdicts[old_king.key]
        if kv.state not in DQ_STATES:
            verdicts[old_king.key] = Verdict(
                kv.hotkey, kv.commit_block, "dethroned", kv.mean_kl, reason=f"king failed this round ({kv.state})"
            )
    pool = [(m.mean_kl, order_key(k), k) for k, m in eligible if m.mean_kl is not None]
    if not pool:
        return None, None, "no eligible model: no king", None
    pool.sort()
    mean, _, win = pool[0]
    v = verdicts[win]
    verdicts[win] = Verdict(
        v.hotkey, v.commit_block, "won", v.mean_kl, reason="lowest mean KL this round", suspicious=v.suspicious
    )
    return win, mean, f"crowned {win[0]}:{win[1]} (lowest mean KL)", None

"""Paired statistics and the dethrone decision: pure functions of plain numbers.

Every input is a list of per-prompt mean KL values. King and challenger lists
are index-aligned: element i of both is the KL on the *same* prompt of the
*same* round (LESSONS 14). Nothing here reads state, so a miner can re-run any
decision from the published per-prompt KL and the published rules.

The test is a one-sided paired t-test on per-prompt differences (see
docs/decisions.md for why not Wilcoxon or a permutation test).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from eval.rules import ContestRules


def _finite_array(xs: Sequence[float], name: str, *, nonnegative: bool = False) -> np.ndarray:
    """Validate and convert; NaN/inf (and negative KL when asked) is a caller bug, never a score."""
    arr = np.asarray(list(xs), dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of numbers")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    if nonnegative and np.any(arr < 0.0):
        raise ValueError(f"{name} contains a negative KL value")
    return arr


def _aligned(king: Sequence[float], challenger: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    k = _finite_array(king, "king KL", nonnegative=True)
    c = _finite_array(challenger, "challenger KL", nonnegative=True)
    if k.shape != c.shape:
        raise ValueError(f"king and challenger must be scored on the same prompts: {k.size} vs {c.size} values")
    return k, c


def _one_sided_p_positive(d: np.ndarray) -> float:
    """p-value of H1 "mean(d) > 0" by a one-sample t-test.

    Degenerate cases are defined, not NaN: fewer than two values carry no
    evidence (p = 1); zero variance means every difference is the same number,
    so the answer is certain: p = 0 if that number is positive, else 1.
    """
    n = d.size
    if n < 2:
        return 1.0
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    scale = max(abs(mean), float(np.abs(d).max()), 1e-300)
    if sd <= 1e-12 * scale:
        return 0.0 if mean > 0.0 else 1.0
    t = mean / (sd / math.sqrt(n))
    return float(_st.t.sf(t, df=n - 1))


def mean_ci(xs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi) with a two-sided Student-t interval at ``level``.

    n = 0 raises ValueError (there is no mean). n = 1 returns (x, -inf, inf):
    one value says nothing about spread, and an honest unbounded interval is
    better than a zero-width one (``kl_summary`` turns it into ``None`` for JSON).
    Zero variance gives (m, m, m).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    arr = _finite_array(xs, "values")
    n = arr.size
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(arr.mean())
    if n == 1:
        return mean, -math.inf, math.inf
    half = float(_st.t.ppf(0.5 + level / 2.0, df=n - 1)) * float(arr.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_p_value(king: Sequence[float], challenger: Sequence[float]) -> float:
    """One-sided paired p-value for H1: the challenger's KL is lower than the king's.

    Same prompts, index-aligned; lengths must match (ValueError otherwise).
    Equivalent to ``scipy.stats.ttest_rel(king, challenger, alternative="greater")``
    with the zero-variance and n < 2 cases defined (see ``_one_sided_p_positive``).
    """
    k, c = _aligned(king, challenger)
    return _one_sided_p_positive(k - c)


@dataclass(frozen=True)
class Decision:
    """The outcome of one king-vs-challenger comparison, with everything needed to audit it."""

    dethrone: bool
    king_mean: float
    challenger_mean: float
    p_value: float
    threshold: float
    reason: str


def decide(king_kl: Sequence[float], challenger_kl: Sequence[float], rules: ContestRules) -> Decision:
    """Dethrone iff mean(challenger) < mean(king) * (1 - epsilon) AND paired p < alpha.

    Both conditions are needed: the margin guards against copies that gain by
    noise (LESSONS 4), the test against a lucky draw of prompts. The lists must
    be the same prompts of the same round; anything else is refused.
    """
    k, c = _aligned(king_kl, challenger_kl)
    if k.size == 0:
        raise ValueError("cannot decide on zero prompts")
    king_mean, chal_mean, threshold, beats_margin = _margin(k, c, rules)
    p = _one_sided_p_positive(k - c)
    significant = p < rules.alpha
    if beats_margin and significant:
        reason = (
            f"challenger KL {chal_mean:.6g} beats king KL {king_mean:.6g} by more than "
            f"{rules.epsilon:.2%} (p={p:.3g} < {rules.alpha})"
        )
    elif not beats_margin and chal_mean < king_mean:
        reason = f"challenger KL {chal_mean:.6g} is lower but within the {rules.epsilon:.2%} margin of {king_mean:.6g}"
    elif not beats_margin:
        reason = f"challenger KL {chal_mean:.6g} is not lower than king KL {king_mean:.6g}"
    else:
        reason = (
            f"challenger KL {chal_mean:.6g} beats the margin but not significantly "
            f"(p={p:.3g} >= {rules.alpha}, n={k.size})"
        )
    return Decision(beats_margin and significant, king_mean, chal_mean, p, threshold, reason)


def _margin(k: np.ndarray, c: np.ndarray, rules: ContestRules) -> tuple[float, float, float, bool]:
    king_mean, chal_mean = float(k.mean()), float(c.mean())
    threshold = king_mean * (1.0 - rules.epsilon)
    return king_mean, chal_mean, threshold, chal_mean < threshold


def needs_onpolicy(
    is_king: bool, king_kl: Sequence[float] | None, challenger_kl: Sequence[float], rules: ContestRules
) -> bool:
    """Whether a fully scored model's own text must be measured for the on-policy guard.

    The guard only ever judges a challenger that beats the king's mean KL by the dethrone margin
    (``decide``'s first condition, computed by the same code), against the king's own figures. So
    the king is measured, such challengers are, and nobody else: in most rounds that is the king
    alone, which keeps the guard's generation (launch-bound decode steps) a small share of a round.
    Without an ok king (first round, coronation) nobody is.
    """
    if rules.onpolicy_prompts == 0:
        return False
    if is_king:
        return True
    if king_kl is None or len(king_kl) != len(challenger_kl) or not challenger_kl:
        return False
    try:
        return _margin(*_aligned(king_kl, challenger_kl), rules)[3]
    except ValueError:  # non-finite or negative values: refused elsewhere, never a reason to measure
        return False


def expected_onpolicy(
    is_king: bool, king_kl: Sequence[float] | None, challenger_kl: Sequence[float], rules: ContestRules, prompts: int
) -> int:
    """How many on-policy values an ok result must carry: the guarded prompts when measured, else none."""
    return rules.guarded_prompts(prompts) if needs_onpolicy(is_king, king_kl, challenger_kl, rules) else 0


def should_stop_early(king_kl: Sequence[float] | None, partial: Sequence[float], rules: ContestRules) -> bool:
    """True when a challenger, scored prompt by prompt, can no longer plausibly win.

    ``partial`` is the challenger's KL on the first ``len(partial)`` prompts and
    ``king_kl`` this round's king's KL on the same prompts in the same order (it
    may be longer). Stops only after ``rules.early_stop_min_prompts`` prompts and
    only when a one-sided paired t-test at ``rules.early_stop_alpha`` says the
    challenger's mean is above the dethrone threshold king * (1 - epsilon).
    Without a king list (the king itself, or no king this round) it never stops:
    the only reference is this round's king, never a best-so-far from other
    models or rounds (LESSONS 15).
    """
    if king_kl is None or len(king_kl) == 0:
        return False
    n = len(partial)
    if n < rules.early_stop_min_prompts:
        return False
    if len(king_kl) < n:
        raise ValueError(f"king KL covers {len(king_kl)} prompts but the challenger has {n}")
    k, c = _aligned(list(king_kl)[:n], partial)
    d = c - k * (1.0 - rules.epsilon)
    return _one_sided_p_positive(d) < rules.early_stop_alpha


@dataclass(frozen=True)
class GuardCheck:
    """One of the on-policy guard's two comparisons with this round's king, on the same guarded prompts."""

    figure: str
    king_mean: float
    challenger_mean: float
    limit: float  # the challenger's mean above which the margin is exceeded
    p_value: float  # one-sided paired: the challenger exceeds the king by more than the margin
    fails: bool


@dataclass(frozen=True)
class GuardDecision:
    """Whether the on-policy guard stops a challenger that beat the king on KL, and why, in words."""

    stop: bool
    checks: tuple[GuardCheck, ...]
    reason: str


def _guard_check(figure: str, king: np.ndarray, chal: np.ndarray, limit: np.ndarray, alpha: float) -> GuardCheck:
    p = _one_sided_p_positive(chal - limit)
    return GuardCheck(figure, float(king.mean()), float(chal.mean()), float(limit.mean()), p, p < alpha)


def onpolicy_guard(
    king_nll: Sequence[float],
    challenger_nll: Sequence[float],
    king_repetition: Sequence[float],
    challenger_repetition: Sequence[float],
    rules: ContestRules,
) -> GuardDecision:
    """Stop a KL winner whose own greedy text is clearly worse than the king's on the same prompts.

    Two comparisons, each a one-sided paired t-test at ``rules.onpolicy_alpha`` on per-prompt
    differences against a shifted null (like early stopping: the guard must show the
    challenger is worse by *more* than the margin, so noise never stops an honest one):

    - the teacher's mean NLL of the challenger's own tokens above the king's x (1 + ``onpolicy_nll_margin``);
    - the challenger's repeated-n-gram share above the king's + ``onpolicy_repetition_margin``.

    Either one stops it. Lists are per guarded prompt, index-aligned; fewer than two prompts
    never stop (no evidence). Why these two figures: docs/decisions.md, "On-policy guard".
    """
    kn, cn = _aligned(king_nll, challenger_nll)
    kr, cr = _aligned(king_repetition, challenger_repetition)
    if kn.shape != kr.shape:
        raise ValueError(f"NLL and repetition cover different prompts: {kn.size} vs {kr.size} values")
    if np.any(kr > 1.0) or np.any(cr > 1.0):
        raise ValueError("a repetition share is above 1")
    n = rules.onpolicy_ngram
    checks = (
        _guard_check("teacher NLL per token", kn, cn, kn * (1.0 + rules.onpolicy_nll_margin), rules.onpolicy_alpha),
        _guard_check(f"repeated {n}-grams", kr, cr, kr + rules.onpolicy_repetition_margin, rules.onpolicy_alpha),
    )
    nll, rep = checks
    said = [
        f"score {nll.challenger_mean:.3g} vs the king's {nll.king_mean:.3g} on policy (teacher NLL per token; "
        f"more than {1 + rules.onpolicy_nll_margin:.3g}x, p={nll.p_value:.3g})",
        f"repeat {rep.challenger_mean:.0%} of their {n}-grams vs the king's {rep.king_mean:.0%} "
        f"(more than +{rules.onpolicy_repetition_margin:.0%}, p={rep.p_value:.3g})",
    ]
    failed = [text for check, text in zip(checks, said, strict=True) if check.fails]
    if failed:
        reason = "its own continuations " + " and ".join(failed)
    else:
        reason = (
            f"its own continuations hold up on policy: teacher NLL {nll.challenger_mean:.3g} vs the king's "
            f"{nll.king_mean:.3g}, repeated {n}-grams {rep.challenger_mean:.0%} vs {rep.king_mean:.0%}"
        )
    return GuardDecision(bool(failed), checks, reason)


def kl_summary(xs: Sequence[float], level: float = 0.95) -> dict[str, float | int | None]:
    """JSON-safe summary for the API: mean, CI bounds (None when undefined) and n."""
    if len(xs) == 0:
        return {"mean": None, "ci_lo": None, "ci_hi": None, "n": 0}
    mean, lo, hi = mean_ci(xs, level)
    return {
        "mean": mean,
        "ci_lo": lo if math.isfinite(lo) else None,
        "ci_hi": hi if math.isfinite(hi) else None,
        "n": len(xs),
    }


def fingerprint_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Mean absolute difference of two logit fingerprints; inf when they are not comparable.

    Below ``rules.fingerprint_threshold`` two models are one model (FUNCTIONAL_COPY): a bf16
    round trip or 1e-3 noise lands near 0.002, an independently trained model near 1.
    """
    if len(a) != len(b) or not a:
        return float("inf")
    return math.fsum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)

"""eval.stats: table-driven decisions on constructed KL lists, plus a false-stop simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from eval.rules import ContestRules
from eval.stats import Decision, decide, kl_summary, mean_ci, onpolicy_guard, paired_p_value, should_stop_early

RULES = ContestRules()  # epsilon 0.01, alpha 0.05, early stop after 8 prompts at 0.001


def _king(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.6, n)


def _noise(n: int, sd: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sd, n)


# --- mean_ci ---------------------------------------------------------------------------------


def test_mean_ci_matches_scipy_t_interval() -> None:
    xs = [0.31, 0.42, 0.28, 0.35, 0.5, 0.33]
    mean, lo, hi = mean_ci(xs)
    ref = st.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=st.sem(xs))
    assert mean == pytest.approx(np.mean(xs)) and lo == pytest.approx(ref[0]) and hi == pytest.approx(ref[1])
    assert mean_ci(xs, 0.99)[1] < lo  # wider at a higher level


def test_mean_ci_small_samples_are_defined() -> None:
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
    assert mean_ci([0.7]) == (0.7, -math.inf, math.inf)
    assert mean_ci([0.3, 0.3, 0.3]) == (pytest.approx(0.3), pytest.approx(0.3), pytest.approx(0.3))
    with pytest.raises(ValueError):
        mean_ci([0.1, float("nan")])
    with pytest.raises(ValueError):
        mean_ci([0.1, 0.2], level=1.0)


def test_kl_summary_is_json_safe() -> None:
    assert kl_summary([]) == {"mean": None, "ci_lo": None, "ci_hi": None, "n": 0}
    assert kl_summary([0.5]) == {"mean": 0.5, "ci_lo": None, "ci_hi": None, "n": 1}
    s = kl_summary([0.4, 0.5, 0.6])
    assert s["n"] == 3 and s["ci_lo"] < 0.5 < s["ci_hi"]


# --- paired_p_value ---------------------------------------------------------------------------


def test_paired_p_matches_scipy_ttest_rel() -> None:
    k = _king()
    c = k * 0.97 + _noise(40, 0.02, 1)
    ref = st.ttest_rel(k, c, alternative="greater").pvalue
    assert paired_p_value(k, c) == pytest.approx(ref, rel=1e-9)
    # direction: a worse challenger gets a large p
    assert paired_p_value(k, k * 1.05 + _noise(40, 0.01, 2)) > 0.99


@pytest.mark.parametrize(
    ("king", "challenger", "expected"),
    [
        ([0.5] * 10, [0.4] * 10, 0.0),  # better by the same amount on every prompt: certain
        ([0.5] * 10, [0.6] * 10, 1.0),  # worse on every prompt
        ([0.5] * 10, [0.5] * 10, 1.0),  # identical: no evidence
        ([0.5], [0.1], 1.0),  # one prompt is no evidence
        ([], [], 1.0),
    ],
)
def test_paired_p_degenerate_cases_are_not_nan(king: list[float], challenger: list[float], expected: float) -> None:
    assert paired_p_value(king, challenger) == expected


@pytest.mark.parametrize(
    ("king", "challenger", "match"),
    [
        ([0.1, 0.2, 0.3], [0.1, 0.2], "same prompts"),
        ([0.1, float("nan")], [0.1, 0.2], "NaN"),
        ([0.1, 0.2], [0.1, float("inf")], "NaN or inf"),
        ([0.1, 0.2], [0.1, -0.2], "negative"),
    ],
)
def test_paired_p_rejects_bad_input(king: list[float], challenger: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paired_p_value(king, challenger)


# --- decide -----------------------------------------------------------------------------------

K = _king()
CASES = {
    # name: (challenger list, expected dethrone)
    "clear win": (K * 0.9 + _noise(40, 0.005, 3), True),
    "identical (a copy)": (K.copy(), False),
    "within epsilon, very consistent": (K * 0.995, False),
    "noisy tie": (K + _noise(40, 0.1, 4), False),
    "significant but smaller than epsilon": (K * 0.996 + _noise(40, 0.0002, 5), False),
    "worse": (K * 1.2, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide_table(name: str) -> None:
    challenger, expected = CASES[name]
    d = decide(K, challenger, RULES)
    assert isinstance(d, Decision) and d.dethrone is expected, d.reason
    assert d.king_mean == pytest.approx(K.mean()) and d.threshold == pytest.approx(K.mean() * 0.99)
    assert d.reason and 0.0 <= d.p_value <= 1.0


def test_significant_but_within_epsilon_is_really_significant() -> None:
    d = decide(K, CASES["significant but smaller than epsilon"][0], RULES)
    assert d.p_value < 1e-6 and not d.dethrone and "margin" in d.reason


def test_better_by_more_than_epsilon_but_not_significant() -> None:
    # mean 5% lower, but one outlier prompt swings it: differences are all noise
    king = [0.3, 0.5, 0.4, 0.6]
    challenger = [0.6, 0.2, 0.7, 0.2]
    d = decide(king, challenger, RULES)
    assert d.challenger_mean < d.threshold and d.p_value >= RULES.alpha and not d.dethrone
    assert "not significantly" in d.reason


def test_zero_variance_win_dethrones() -> None:
    d = decide([0.5] * 40, [0.4] * 40, RULES)
    assert d.dethrone and d.p_value == 0.0


def test_single_prompt_never_dethrones() -> None:
    assert not decide([0.9], [0.1], RULES).dethrone


def test_decide_uses_rules() -> None:
    loose = RULES.model_copy(update={"epsilon": 0.0})
    challenger = K * 0.995
    assert not decide(K, challenger, RULES).dethrone
    assert decide(K, challenger, loose).dethrone


@pytest.mark.parametrize(
    ("king", "challenger"),
    [([0.1, 0.2, 0.3], [0.1, 0.2]), ([], []), ([0.1, float("nan")], [0.1, 0.1])],
)
def test_decide_refuses_unaligned_or_bad_lists(king: list[float], challenger: list[float]) -> None:
    with pytest.raises(ValueError):
        decide(king, challenger, RULES)


# --- should_stop_early ------------------------------------------------------------------------


def test_never_stops_without_a_king() -> None:
    assert not should_stop_early(None, [5.0] * 40, RULES)
    assert not should_stop_early([], [5.0] * 40, RULES)


def test_waits_for_min_prompts() -> None:
    k = list(K)
    n = RULES.early_stop_min_prompts
    assert not should_stop_early(k, [5.0] * (n - 1), RULES)
    assert should_stop_early(k, [5.0] * n, RULES)


def test_stops_a_clearly_worse_challenger_but_not_a_contender() -> None:
    worse = K * 1.3 + _noise(40, 0.02, 6)
    contender = K * 0.995 + _noise(40, 0.02, 7)  # inside the margin, but not significantly worse
    assert should_stop_early(K, worse[:12], RULES)
    assert not any(should_stop_early(K, contender[:i], RULES) for i in range(1, 41))


def test_compares_against_this_king_only() -> None:
    # A degenerate KL = 0 elsewhere (another model, another round) has no way in: the only reference is
    # the king list passed here, so a challenger level with this round's king keeps going (LESSONS 15).
    challenger = K * 0.98
    assert not should_stop_early(K, challenger[:20], RULES)
    # ...and a zero-KL king is a real reference: nobody can beat it, so stopping is right.
    assert should_stop_early([0.0] * 40, challenger[:20], RULES)


def test_king_list_must_cover_the_partial() -> None:
    with pytest.raises(ValueError, match="covers"):
        should_stop_early(K[:10], [0.3] * 12, RULES)
    with pytest.raises(ValueError):
        should_stop_early(K, [0.3] * 9 + [float("nan")], RULES)


def test_false_stop_rate_is_bounded_by_simulation() -> None:
    """A challenger that truly beats the king by 3x epsilon is almost never stopped.

    2,000 seeded rounds of 40 prompts; the challenger is checked after every
    prompt, as the scorer does. Per-prompt noise (sd 0.05 on KL ~0.4) makes
    single prompts swing by far more than the margin.
    """
    rng = np.random.default_rng(1234)
    eps = RULES.epsilon
    trials, n = 2000, RULES.prompts_per_round
    false_stops = 0
    wins = 0
    for _ in range(trials):
        king = rng.uniform(0.2, 0.6, n)
        challenger = np.clip(king * (1 - 3 * eps) + rng.normal(0.0, 0.05, n), 0.0, None)
        if any(should_stop_early(king, challenger[:i], RULES) for i in range(RULES.early_stop_min_prompts, n + 1)):
            false_stops += 1
        wins += decide(king, challenger, RULES).dethrone
    assert false_stops / trials < 0.01
    assert wins > 0  # the setting is not trivially hopeless for the challenger


# --- the on-policy guard ----------------------------------------------------------------------------------------

G = 8  # guarded prompts (the default)
KING_NLL = [0.7, 0.65, 0.8, 0.72, 0.6, 0.75, 0.7, 0.68]
GUARD_CASES = {
    # name: (challenger NLL, challenger repetition, king repetition, expected stop, figure named in the reason)
    "identical": (KING_NLL, [0.0] * G, [0.0] * G, False, None),
    "loops on every prompt": (KING_NLL, [0.9] * G, [0.0] * G, True, "4-grams"),
    "loops on 6 of 8": (KING_NLL, [0.9] * 6 + [0.0] * 2, [0.0] * G, True, "4-grams"),
    "loops on 2 of 8": (KING_NLL, [0.9] * 2 + [0.0] * 6, [0.0] * G, False, None),
    "loops no more than a looping king": (KING_NLL, [0.85] * G, [0.8] * G, False, None),
    "text the teacher would not write": ([2 * x + 0.3 for x in KING_NLL], [0.0] * G, [0.0] * G, True, "teacher NLL"),
    "a little worse, within the margin": ([1.3 * x for x in KING_NLL], [0.05] * G, [0.0] * G, False, None),
    "better than the king": ([0.8 * x for x in KING_NLL], [0.0] * G, [0.1] * G, False, None),
}


@pytest.mark.parametrize("name", list(GUARD_CASES))
def test_onpolicy_guard_table(name: str) -> None:
    nll, rep, king_rep, stop, figure = GUARD_CASES[name]
    g = onpolicy_guard(KING_NLL, nll, king_rep, rep, RULES)
    assert g.stop is stop, g.reason
    assert [c.fails for c in g.checks] == [figure == "teacher NLL", figure == "4-grams"]
    assert g.reason.startswith("its own continuations ") and (figure is None or figure in g.reason)
    nll_check, rep_check = g.checks
    assert nll_check.limit == pytest.approx(np.mean(KING_NLL) * (1 + RULES.onpolicy_nll_margin))
    assert rep_check.limit == pytest.approx(np.mean(king_rep) + RULES.onpolicy_repetition_margin)


def test_onpolicy_guard_degenerate_and_bad_input() -> None:
    assert not onpolicy_guard([0.7], [5.0], [0.0], [1.0], RULES).stop  # one prompt is no evidence
    assert onpolicy_guard([0.7] * 3, [0.7] * 3, [0.0] * 3, [0.9] * 3, RULES).stop  # worse by the same on each: certain
    for args in (
        ([0.7] * 3, [0.7] * 2, [0.0] * 3, [0.0] * 3),
        ([0.7] * 3, [0.7] * 3, [0.0] * 2, [0.0] * 2),
        ([0.7] * 2, [0.7] * 2, [0.0] * 2, [1.5, 0.0]),
        ([0.7] * 2, [float("nan"), 0.7], [0.0] * 2, [0.0] * 2),
        ([0.7] * 2, [-0.1, 0.7], [0.0] * 2, [0.0] * 2),
    ):
        with pytest.raises(ValueError):
            onpolicy_guard(*args, RULES)


def test_onpolicy_guard_false_stop_rate_and_power_by_simulation() -> None:
    """Honest challengers are (almost) never stopped; one that loops on most prompts (almost) always is.

    2,000 seeded rounds of 8 guarded prompts. The king's per-prompt NLL ~ U(0.4, 1.2); an honest
    challenger's is the king's x (1 + N(0, 0.2)) per prompt (its greedy text differs from the
    king's), and each of the two loops on a prompt with probability 0.1 (repetition 0.9, else
    U(0, 0.1)): greedy decoding sometimes loops even for good models. A looper loops with
    probability 0.8 on each prompt.
    """
    rng = np.random.default_rng(4321)
    trials = 2000

    def repetition(p_loop: float) -> np.ndarray:
        return np.where(rng.random(G) < p_loop, 0.9, rng.uniform(0.0, 0.1, G))

    false_stops = stopped_loopers = 0
    for _ in range(trials):
        king = rng.uniform(0.4, 1.2, G)
        honest = np.clip(king * (1 + rng.normal(0.0, 0.2, G)), 0.0, None)
        false_stops += onpolicy_guard(king, honest, repetition(0.1), repetition(0.1), RULES).stop
        stopped_loopers += onpolicy_guard(king, king, repetition(0.1), repetition(0.8), RULES).stop
    assert false_stops / trials < 0.01
    assert stopped_loopers / trials > 0.7  # 75%; 89% at 9 loops in 10 (docs/decisions.md)


def test_fingerprint_distance_is_mean_abs_difference_and_inf_when_incomparable() -> None:
    from eval.stats import fingerprint_distance

    assert fingerprint_distance([0.0, 1.0], [0.5, 0.5]) == 0.5
    assert fingerprint_distance([0.0, 1.0], [0.0, 1.0]) == 0.0
    assert fingerprint_distance([0.0], [0.0, 1.0]) == float("inf")
    assert fingerprint_distance([], []) == float("inf")


@pytest.mark.parametrize(
    ("is_king", "king", "challenger", "onpolicy_prompts", "expected"),
    [
        (True, None, [0.5, 0.5], 8, True),  # the king is always measured
        (False, [0.5, 0.5], [0.4, 0.4], 8, True),  # beats the margin: the guard may judge it
        (False, [0.5, 0.5], [0.497, 0.497], 8, False),  # lower, but within epsilon: can never dethrone
        (False, [0.5, 0.5], [0.6, 0.6], 8, False),
        (False, None, [0.1, 0.1], 8, False),  # no ok king this round: no guard (like early stopping)
        (True, None, [0.5, 0.5], 0, False),  # the guard is off
        (False, [0.5, float("nan")], [0.1, 0.1], 8, False),  # malformed values never ask for a measurement
    ],
)
def test_needs_onpolicy_measures_the_king_and_kl_winners_only(is_king, king, challenger, onpolicy_prompts, expected):
    from eval.stats import expected_onpolicy, needs_onpolicy

    rules = ContestRules(epsilon=0.01, onpolicy_prompts=onpolicy_prompts, prompts_per_round=2, early_stop_min_prompts=2)
    assert needs_onpolicy(is_king, king, challenger, rules) is expected
    assert expected_onpolicy(is_king, king, challenger, rules, 2) == (2 if expected else 0)
    if king is not None and all(math.isfinite(x) for x in king):
        assert needs_onpolicy(False, king, challenger, rules) == (
            decide(king, challenger, rules).challenger_mean < decide(king, challenger, rules).threshold
        )

"""Interpreting a round's result: final states, copies, dethroning on this round's prompts only."""

from __future__ import annotations

import pytest

from eval.rules import ContestRules
from eval.schemas import EvalResult, ModelRef, ModelResult, OnPolicyPrompt, SubmissionId, TeacherInfo
from scripts.pod_fixtures import trim_onpolicy
from validator.contest import Candidate, RoundPlan
from validator.verdicts import interpret_result

REV = "c" * 40
BH = "0x" + "1" * 64
RULES = ContestRules(
    prompts_per_round=10, early_stop_min_prompts=2, max_kl=2.0, fingerprint_threshold=0.02, onpolicy_prompts=8
)
N = 10


def hk(name: str) -> str:
    return (name.replace("l", "L") + "5" * 48)[:48]  # base58 has no lowercase 'l'


def cand(name: str, block: int, status: str = "admitted") -> Candidate:
    return Candidate(hk(name), block, f"org/{name}", REV, f"ck-{name}", status, None)


GUARDED = RULES.guarded_prompts(N)


def own(nll=0.8, rep=0.0, n=GUARDED) -> list[OnPolicyPrompt]:
    """On-policy values as the pod reports them: per guarded prompt, a little prompt-to-prompt spread."""
    nlls = [nll] * n if isinstance(nll, float) else list(nll)
    reps = [rep] * n if isinstance(rep, float) else list(rep)
    return [
        OnPolicyPrompt(tokens=20, teacher_nll=x + 0.01 * (i % 3), reverse_kl=0.1, repetition=r, text=f"text {i}")
        for i, (x, r) in enumerate(zip(nlls, reps, strict=True))
    ]


def res(
    c: Candidate, kl=None, status="ok", content_hash=None, fingerprint=None, n=N, error=None, onpolicy=None
) -> ModelResult:
    kls = [] if status == "model_error" else [kl] * n if isinstance(kl, float) else list(kl or [])
    sub = SubmissionId(hotkey=c.hotkey, commit_block=c.commit_block)
    ref = ModelRef(repo=c.repo, revision=c.revision, submission=sub)
    values = (own() if onpolicy is None else onpolicy) if status == "ok" else []
    return ModelResult(
        ref=ref,
        status=status,
        prompt_kl=kls,
        prompt_tokens=[5] * len(kls),
        error=error,
        content_hash=content_hash,
        fingerprint=fingerprint,
        onpolicy=values,
    )


def result(*models: ModelResult) -> EvalResult:
    """A result as a pod returns it: the guard's values only for the king (K) and its KL winners."""
    teacher = TeacherInfo(repo="org/teacher", continuation_tokens=[5] * N)
    kept = trim_onpolicy(list(models), f"{K.hotkey}:{K.commit_block}", RULES, N)
    return EvalResult(job_id="j1", block_hash=BH, teacher=teacher, models=kept)


def noisy(base: float, amp: float = 0.01) -> list[float]:
    return [base + amp * ((i * 7) % 5 - 2) for i in range(N)]


K = cand("king", 1, "evaluated")
A = cand("alice", 5)
B = cand("bob", 6)


def challenge(*cs: Candidate) -> RoundPlan:
    return RoundPlan("challenge", K, tuple(cs))


def states(out) -> dict[str, str]:
    return {v.hotkey[:4].lower(): v.state for v in out.verdicts}


def test_clear_winner_dethrones_king_with_p_value():
    out = interpret_result(challenge(A), result(res(K, noisy(1.0)), res(A, noisy(0.5))), RULES)
    assert out.new_king == A.key and out.king_changed and out.king_before == K.key
    assert states(out) == {"king": "dethroned", "alic": "won"}
    assert out.p_value is not None and out.p_value < RULES.alpha


def test_close_challenger_loses_and_king_defends():
    """LESSONS 4: a gain inside epsilon (noise-level) never dethrones."""
    out = interpret_result(challenge(A), result(res(K, noisy(1.0)), res(A, noisy(0.999))), RULES)
    assert out.new_king == K.key and not out.king_changed
    assert states(out) == {"king": "king", "alic": "lost"}


def test_best_of_several_winners_takes_crown_others_lost():
    out = interpret_result(challenge(A, B), result(res(K, noisy(1.0)), res(A, noisy(0.6)), res(B, noisy(0.4))), RULES)
    assert out.new_king == B.key
    assert states(out) == {"king": "dethroned", "alic": "lost", "bob5": "won"}


def test_kl_too_high_is_disqualified():
    out = interpret_result(challenge(A), result(res(K, noisy(1.0)), res(A, 2.5)), RULES)
    assert states(out)["alic"] == "kl_too_high"
    (dq,) = out.dqs
    assert (dq.reason, dq.check, dq.hotkey) == ("KL_TOO_HIGH", "max_kl", A.hotkey)


def test_content_copy_of_king_is_copy_and_never_takes_kings_result():
    """LESSONS 1: a later copy of the king's weights is COPY; the king keeps its own entry."""
    out = interpret_result(
        challenge(A),
        result(res(K, noisy(1.0), content_hash="e" * 64), res(A, noisy(0.1), content_hash="e" * 64)),
        RULES,
        known_content_hashes=[(K.key, "e" * 64)],
    )
    assert out.new_king == K.key and states(out) == {"king": "king", "alic": "copy"}
    assert out.dqs[0].evidence["copy_of"] == {"hotkey": K.hotkey, "commit_block": 1}


def test_king_is_not_exempt_from_copy_check():
    early = (SubmissionId(hk("orig"), 0), "f" * 64)
    out = interpret_result(
        challenge(A),
        result(res(K, noisy(1.0), content_hash="f" * 64), res(A, noisy(1.2))),
        RULES,
        known_content_hashes=[early],
    )
    assert states(out)["king"] == "copy"
    assert out.new_king == A.key  # the only eligible model on this round's prompts


def test_same_round_copy_later_commit_is_copy_earlier_owns():
    plan = RoundPlan("first", None, (B, A))
    out = interpret_result(plan, result(res(B, 0.5, content_hash="d" * 64), res(A, 0.5, content_hash="d" * 64)), RULES)
    assert states(out) == {"bob5": "copy", "alic": "won"}


def test_functional_copy_against_past_rounds_fingerprints():
    """LESSONS 4: a perturbed copy (close fingerprint) of an earlier submission is FUNCTIONAL_COPY."""
    past = [(SubmissionId(hk("old"), 2), [0.1, 0.2, 0.3, 0.4])]
    fp = [0.105, 0.2, 0.3, 0.4]
    out = interpret_result(
        challenge(A), result(res(K, noisy(1.0)), res(A, noisy(0.2), fingerprint=fp)), RULES, known_fingerprints=past
    )
    assert states(out)["alic"] == "functional_copy" and out.new_king == K.key
    assert out.dqs[0].evidence["copy_of"]["hotkey"] == hk("old")


def test_later_fingerprint_does_not_disqualify_earlier_commit():
    later = [(SubmissionId(hk("late"), 99), [0.1, 0.2])]
    out = interpret_result(
        challenge(A),
        result(res(K, noisy(1.0)), res(A, noisy(0.5), fingerprint=[0.1, 0.2])),
        RULES,
        known_fingerprints=later,
    )
    assert states(out)["alic"] == "won"


def test_model_error_and_early_stop_are_final_not_king():
    """LESSONS 18: failures reach a final state instead of being retried forever."""
    plan = challenge(A, B)
    out = interpret_result(
        plan,
        result(
            res(K, noisy(1.0)),
            res(A, status="model_error", error="bad weights"),
            res(B, [1.5, 1.6], status="early_stopped"),
        ),
        RULES,
    )
    assert states(out) == {"king": "king", "alic": "model_error", "bob5": "early_stopped"}
    assert out.new_king == K.key and out.dqs == ()


def test_king_model_error_crowns_best_challenger_of_this_round():
    out = interpret_result(
        challenge(A, B),
        result(res(K, status="model_error", error="gone"), res(A, noisy(0.7)), res(B, noisy(0.9))),
        RULES,
    )
    assert out.new_king == A.key and states(out)["king"] == "dethroned"


def test_decision_uses_this_rounds_king_scores_only():
    """LESSONS 14/15: decide() receives exactly this round's king KL, same prompts."""
    seen = []

    class D:
        dethrone, p_value, reason = False, 0.5, "no"

    def spy(king_kl, ch_kl, rules):
        seen.append((list(king_kl), list(ch_kl)))
        return D()

    interpret_result(challenge(A), result(res(K, noisy(1.0)), res(A, noisy(0.9))), RULES, decide=spy)
    assert seen == [(noisy(1.0), noisy(0.9))]


def test_first_round_crowns_lowest_eligible():
    plan = RoundPlan("first", None, (A, B, cand("carl", 7)))
    out = interpret_result(plan, result(res(A, 0.8), res(B, 3.0), res(cand("carl", 7), 0.6)), RULES)
    assert out.new_king == cand("carl", 7).key and out.king_before is None
    assert states(out) == {"alic": "lost", "bob5": "kl_too_high", "carl": "won"}


def test_first_round_nobody_eligible_no_king():
    out = interpret_result(RoundPlan("first", None, (A,)), result(res(A, 2.5)), RULES)
    assert out.new_king is None and out.reason.startswith("no eligible")


def test_coronation_crowns_on_fresh_scores_not_stale():
    """LESSONS 14/20: stale last_kl is ignored; this round's mean decides."""
    s1 = Candidate(hk("s1"), 2, "org/s1", REV, "c", "evaluated", last_kl=0.1)
    s2 = Candidate(hk("s2"), 3, "org/s2", REV, "c", "evaluated", last_kl=0.9)
    plan = RoundPlan("coronation", None, (s1, s2), (s1.key, s2.key), vanished_king=K.key)
    out = interpret_result(plan, result(res(s1, 0.9), res(s2, 0.3)), RULES)
    assert out.new_king == s2.key and out.king_before == K.key and out.king_changed


def test_suspicious_zero_kl_is_flagged():
    """LESSONS 8: KL ~ 0 is flagged for the operator."""
    out = interpret_result(challenge(A), result(res(K, noisy(1.0)), res(A, 0.0)), RULES)
    assert out.suspicious == (A.key,)


def test_none_round_has_nothing_to_interpret():
    with pytest.raises(ValueError):
        interpret_result(RoundPlan("none", K, ()), result(res(K, noisy(1.0))), RULES)


# --- the on-policy guard (LESSONS 27) ---------------------------------------------------------------------------


def test_kl_winner_that_loops_on_its_own_text_does_not_take_the_crown():
    """LESSONS 27: beating the king on KL is not enough when the challenger's own greedy text collapses."""
    looper = own(nll=[1.7] * 7 + [0.8], rep=[0.92] * 7 + [0.0])
    out = interpret_result(challenge(A), result(res(K, noisy(1.0)), res(A, noisy(0.5), onpolicy=looper)), RULES)
    assert out.new_king == K.key and not out.king_changed
    assert states(out) == {"king": "king", "alic": "onpolicy_stopped"}
    v = next(v for v in out.verdicts if v.hotkey == A.hotkey)
    assert v.reason.startswith("beats the king on KL (0.5 vs 1) but its own continuations score 1.6 vs the king's")
    assert "and repeat 80% of their 4-grams vs the king's 0%" in v.reason
    assert v.p_value is not None and v.p_value < RULES.alpha  # it did win on KL
    assert "on-policy guard stopped" in out.reason and out.dqs == ()  # final, but not a disqualification


def test_guard_stops_on_teacher_nll_alone_and_on_repetition_alone():
    garbage = own(nll=2.4)  # writes text the teacher finds unlikely, without repeating itself
    out = interpret_result(challenge(A), result(res(K, noisy(1.0)), res(A, noisy(0.5), onpolicy=garbage)), RULES)
    assert states(out)["alic"] == "onpolicy_stopped" and "teacher NLL" in out.verdicts[1].reason
    assert "repeat" not in out.verdicts[1].reason
    loop = own(rep=0.9)  # the teacher endorses its loop (in-context copying), the repetition share does not
    out = interpret_result(challenge(A), result(res(K, noisy(1.0)), res(A, noisy(0.5), onpolicy=loop)), RULES)
    assert states(out)["alic"] == "onpolicy_stopped" and "4-grams" in out.verdicts[1].reason


def test_stopped_best_winner_lets_the_next_winner_take_the_crown():
    looper = own(rep=0.95)
    out = interpret_result(
        challenge(A, B), result(res(K, noisy(1.0)), res(A, noisy(0.3), onpolicy=looper), res(B, noisy(0.6))), RULES
    )
    assert out.new_king == B.key
    assert states(out) == {"king": "dethroned", "alic": "onpolicy_stopped", "bob5": "won"}
    assert "on-policy guard stopped " + A.hotkey in out.reason
    assert "hold up on policy" in out.verdicts[2].reason  # the winner's verdict shows the guard passed


def test_guard_is_relative_to_this_rounds_king_and_only_judges_kl_winners():
    # the king itself loops (its teacher does too): a challenger that loops no more is not stopped
    king, chal = res(K, noisy(1.0), onpolicy=own(nll=1.5, rep=0.8)), res(A, noisy(0.5), onpolicy=own(nll=1.6, rep=0.85))
    out = interpret_result(challenge(A), result(king, chal), RULES)
    assert out.new_king == A.key
    # a loser is a loser: the guard adds nothing to its verdict
    out = interpret_result(challenge(A), result(res(K, noisy(1.0)), res(A, noisy(1.1), onpolicy=own(rep=0.9))), RULES)
    assert states(out)["alic"] == "lost" and "on policy" not in out.verdicts[1].reason


def test_guard_off_in_the_rules_measures_nothing_and_stops_nobody():
    rules = RULES.model_copy(update={"onpolicy_prompts": 0})
    out = interpret_result(
        challenge(A), result(res(K, noisy(1.0), onpolicy=[]), res(A, noisy(0.5), onpolicy=[])), rules
    )
    assert out.new_king == A.key


def test_the_outcome_carries_every_value_the_store_writes():
    """Statuses, last KL and KL intervals are decided here; the store only persists them."""
    from eval.stats import mean_ci

    C = cand("carl", 7)
    out = interpret_result(
        challenge(A, B, C),
        result(
            res(K, noisy(1.0)),
            res(A, status="model_error", error="bad weights"),
            res(B, noisy(0.999)),
            res(C, 2.5),
        ),
        RULES,
    )
    assert [e.verdict for e in out.evaluations] == list(out.verdicts)
    assert [e.key for e in out.evaluations] == [K.key, A.key, B.key, C.key]
    king, err, lost, high = out.evaluations
    assert (king.mean_kl, king.ci_lo, king.ci_hi) == mean_ci(noisy(1.0)) and king.result.prompt_kl == noisy(1.0)
    assert (err.mean_kl, err.ci_lo, err.ci_hi) == (None, None, None)
    assert [v.submission_status for v in out.verdicts] == ["evaluated", "evaluated", "evaluated", "disqualified"]
    assert [v.last_kl for v in out.verdicts] == [king.mean_kl, None, lost.mean_kl, high.mean_kl]
    assert err.verdict.status_detail == "bad weights" and high.verdict.status_detail.startswith("mean KL")
    assert king.verdict.status_detail == "defended"

"""The local estimate's summary and text: the validator's dethrone rule and on-policy guard, read back."""

from __future__ import annotations

import pytest

from eval.estimate_summary import AGAINST_HOTKEY, MODEL_HOTKEY, render, summarize
from eval.rules import ContestRules
from eval.schemas import EvalResult, ModelRef, ModelResult, OnPolicyPrompt, SubmissionId, TeacherInfo

BLOCK_HASH = "0x" + "5c" * 32


def _own(rep: float, nll: float = 0.7, n: int = 4) -> list[OnPolicyPrompt]:
    return [
        OnPolicyPrompt(tokens=4, teacher_nll=nll + 0.01 * i, reverse_kl=0.2, repetition=rep, text="t") for i in range(n)
    ]


def _result(
    kl_king: list[float],
    kl_mine: list[float],
    status: str = "ok",
    own_king: list[OnPolicyPrompt] = (),
    own_mine: list[OnPolicyPrompt] = (),
) -> EvalResult:
    def res(hotkey: str, kl: list[float], st: str, own: list[OnPolicyPrompt]) -> ModelResult:
        ref = ModelRef(repo="a/b", revision="c" * 40, submission=SubmissionId(hotkey=hotkey, commit_block=0))
        return ModelResult(ref=ref, status=st, prompt_kl=kl, prompt_tokens=[4] * len(kl), onpolicy=list(own))

    models = [res(AGAINST_HOTKEY, kl_king, "ok", own_king), res(MODEL_HOTKEY, kl_mine, status, own_mine)]
    return EvalResult(
        job_id="j", block_hash=BLOCK_HASH, teacher=TeacherInfo(repo="t/t", continuation_tokens=[4] * 4), models=models
    )


def test_summary_shows_the_on_policy_figures_and_whether_the_guard_would_stop_the_model():
    """A miner sees, before committing, that winning on KL is not enough when its own text loops."""
    rules = ContestRules(vocab_size=512, prompts_per_round=4, early_stop_min_prompts=2)
    doc = summarize(
        _result([1.0, 1.1, 0.9, 1.0], [0.5, 0.52, 0.49, 0.5], own_king=_own(0.0), own_mine=_own(0.9)), rules
    )
    d = doc["decision"]
    assert d["beats_on_kl"] is True and d["dethrone"] is False and d["onpolicy_guard"]["stop"] is True
    assert d["reason"].startswith("beats the king on KL but its own continuations repeat 90% of their 4-grams")
    own = doc["model"]["onpolicy"]
    assert own["repetition"] == pytest.approx(0.9) and len(own["per_prompt"]) == 4
    text = "\n".join(render(doc))
    assert "DETHRONE: no" in text and "ON-POLICY GUARD: would stop it" in text and "repeated n-grams 90%" in text
    ok = summarize(
        _result([1.0, 1.1, 0.9, 1.0], [0.5, 0.52, 0.49, 0.5], own_king=_own(0.0), own_mine=_own(0.05)), rules
    )
    assert ok["decision"]["dethrone"] is True and "ON-POLICY GUARD: passes" in "\n".join(render(ok))


def test_summary_uses_the_validator_dethrone_rule():
    rules = ContestRules(vocab_size=512, prompts_per_round=4, early_stop_min_prompts=2)
    win = summarize(_result([1.0, 1.1, 0.9, 1.0], [0.5, 0.52, 0.49, 0.5]), rules)["decision"]
    assert win["dethrone"] is True and win["p_value"] < rules.alpha
    margin = summarize(_result([1.0, 1.0, 1.0, 1.0], [0.995, 0.996, 0.994, 0.995]), rules)["decision"]
    assert margin["dethrone"] is False and "margin" in margin["reason"]
    stopped = summarize(_result([1.0] * 4, [3.0, 3.0], "early_stopped"), rules)["decision"]
    assert stopped["dethrone"] is False and "early" in stopped["reason"]
    doc = summarize(_result([1.0] * 4, [2.5] * 4), rules)
    assert doc["model"]["over_max_kl"] is True

"""Disqualifications on their own: earlier commit owns, hash before fingerprint, a strict threshold, KL limit."""

from __future__ import annotations

import pytest

from eval.rules import ContestRules
from eval.schemas import ModelRef, ModelResult, SubmissionId
from eval.stats import fingerprint_distance
from validator.disqualify import DQ_STATES, copy_check, disqualify

RULES = ContestRules(prompts_per_round=4, early_stop_min_prompts=2, max_kl=2.0, fingerprint_threshold=0.02)


def sid(name: str, block: int) -> SubmissionId:
    return SubmissionId((name + "5" * 48)[:48], block)


ME = sid("mine", 10)


def res(kl: float = 0.5, status: str = "ok", content_hash: str | None = None, fp: list[float] | None = None):
    kls = [kl] * (4 if status == "ok" else 2)
    ref = ModelRef(repo="org/mine", revision="c" * 40, submission=ME)
    return ModelResult(
        ref=ref, status=status, prompt_kl=kls, prompt_tokens=[5] * len(kls), content_hash=content_hash, fingerprint=fp
    )


def check(m: ModelResult, hashes=(), prints=()):
    return disqualify(ME, m, list(hashes), list(prints), RULES, fingerprint_distance)


def test_the_earliest_owner_is_named_and_later_or_same_submissions_never_own():
    h = "e" * 64
    hashes = [(sid("late", 11), h), (ME, h), (sid("old", 7), h), (sid("older", 3), h)]
    dq = check(res(content_hash=h), hashes=hashes)
    assert dq is not None and (dq.reason, dq.check, dq.key) == ("COPY", "content_hash", ME)
    assert dq.evidence == {"copy_of": {"hotkey": sid("older", 3).hotkey, "commit_block": 3}, "content_hash": h}
    assert check(res(content_hash=h), hashes=[(sid("late", 11), h), (ME, h)]) is None


def test_fingerprint_threshold_is_strict_and_the_hash_is_checked_first():
    zero, at_limit = [0.0, 0.0], [RULES.fingerprint_threshold] * 2
    assert fingerprint_distance(zero, at_limit) == RULES.fingerprint_threshold
    assert check(res(fp=at_limit), prints=[(sid("old", 2), zero)]) is None
    base = [0.1, 0.2, 0.3, 0.4]
    near = [0.105, 0.2, 0.3, 0.4]
    dq = check(res(fp=near), prints=[(sid("late", 12), base), (sid("old", 2), base)])
    assert dq is not None and (dq.reason, dq.check) == ("FUNCTIONAL_COPY", "fingerprint")
    assert dq.evidence["copy_of"]["commit_block"] == 2 and dq.evidence["distance"] == pytest.approx(0.00125)
    both = check(res(content_hash="f" * 64, fp=near), hashes=[(sid("a", 1), "f" * 64)], prints=[(sid("b", 0), base)])
    assert both is not None and both.reason == "COPY"


@pytest.mark.parametrize(
    ("m", "reason"),
    [
        (res(kl=2.5), "KL_TOO_HIGH"),
        (res(kl=2.0), None),  # at the limit is allowed
        (res(kl=2.5, status="early_stopped"), None),  # only a fully scored model is judged on its KL
        (res(kl=2.5, content_hash="d" * 64), "COPY"),  # a copy is a copy first
    ],
)
def test_kl_above_the_limit_disqualifies_only_a_fully_scored_original(m, reason):
    dq = check(m, hashes=[(sid("old", 1), "d" * 64)])
    assert (dq.reason if dq else None) == reason
    if reason == "KL_TOO_HIGH":
        assert dq is not None and dq.check == "max_kl" and dq.evidence == {"mean_kl": 2.5}


def test_every_reason_has_a_final_state():
    assert set(DQ_STATES.values()) == {"COPY", "FUNCTIONAL_COPY", "KL_TOO_HIGH"}
    assert copy_check(ME, res(), [], [], RULES, fingerprint_distance) is None

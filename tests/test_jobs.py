"""The one job builder: the host's round and the miner's local estimate produce jobs of one shape."""

from __future__ import annotations

from eval.estimate import Pinned, local_job
from eval.estimate_summary import AGAINST_HOTKEY, MODEL_HOTKEY
from eval.jobs import build_job, model_ref
from eval.rules import DEFAULT_RULES
from eval.schemas import SubmissionId
from validator.contest import Candidate, RoundPlan
from validator.rounds import plan_refs

HASH = "0x" + "ab" * 32
REV_K, REV_C = "a" * 40, "c" * 40
KING_HK, CHAL_HK = "5" + "k" * 47, "5" + "c" * 47


def test_king_first_then_challengers_with_their_identities():
    king = model_ref("org/king", REV_K, SubmissionId(KING_HK, 3))
    job = build_job(
        "j-1", 7, HASH, DEFAULT_RULES, None, ["p"], king, [model_ref("org/chal", REV_C, SubmissionId(CHAL_HK, 9))]
    )
    assert [m.spec for m in job.models] == [f"org/king@{REV_K}", f"org/chal@{REV_C}"]
    assert [m.key for m in job.models] == [f"{KING_HK}:3", f"{CHAL_HK}:9"]
    assert (job.job_id, job.block, job.block_hash, job.prompts) == ("j-1", 7, HASH, ["p"])


def test_host_round_and_miner_estimate_build_the_same_job_for_the_same_models():
    """Only the job id, block and identities differ: the miner is scored on the validator's kind of job."""
    plan = RoundPlan(
        "challenge",
        Candidate(KING_HK, 3, "org/king", REV_K, "cold", "admitted"),
        (Candidate(CHAL_HK, 9, "org/chal", REV_C, "cold", "admitted"),),
    )
    host = build_job("r1-b7-x", 7, HASH, DEFAULT_RULES, "e" * 40, ["p", "q"], *plan_refs(plan))
    miner = local_job(
        HASH,
        DEFAULT_RULES,
        ["p", "q"],
        Pinned("org/chal", REV_C),
        against=Pinned("org/king", REV_K),
        teacher_revision="e" * 40,
    )
    assert [m.spec for m in host.models] == [m.spec for m in miner.models]
    assert [m.key for m in miner.models] == [f"{AGAINST_HOTKEY}:0", f"{MODEL_HOTKEY}:0"]
    same = {"rules", "prompts", "block_hash", "teacher_revision"}
    assert host.model_dump(include=same) == miner.model_dump(include=same)


def test_a_round_without_a_king_sends_no_king():
    plan = RoundPlan("first", None, (Candidate(CHAL_HK, 9, "org/chal", REV_C, "cold", "admitted"),))
    job = build_job("r1", 1, HASH, DEFAULT_RULES, None, ["p"], *plan_refs(plan))
    assert job.king is None and [m.key for m in job.challengers] == [f"{CHAL_HK}:9"]

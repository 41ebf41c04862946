"""Small submissions, candidates and pod results shared by the store's tests (tests/test_store_*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from eval.rules import ContestRules
from eval.schemas import EvalResult, ModelRef, ModelResult, OnPolicyPrompt, SubmissionId, TeacherInfo
from scripts.pod_fixtures import trim_onpolicy
from validator.admit import record_attempt
from validator.contest import Candidate, NewSubmission, RoundPlan
from validator.store.database import Store
from validator.verdicts import interpret_result

REV = "d" * 40
BH = "0x" + "2" * 64
RULES = ContestRules(prompts_per_round=4, early_stop_min_prompts=2)


def hk(name: str) -> str:
    return (name.replace("l", "L") + "5" * 48)[:48]


def sub(name: str, block: int, uid: int = 0, status: str = "pending") -> NewSubmission:
    return NewSubmission(
        hk(name),
        block,
        uid,
        f"ck-{name}",
        '{"model":"org/' + name + '"}',
        status,  # type: ignore[arg-type]
        f"org/{name}",
        REV,
    )


def cand(name: str, block: int, status: str = "admitted") -> Candidate:
    return Candidate(hk(name), block, f"org/{name}", REV, f"ck-{name}", status)


def mres(c: Candidate, kls: list[float], content_hash: str | None = None) -> ModelResult:
    sid = SubmissionId(hotkey=c.hotkey, commit_block=c.commit_block)
    ref = ModelRef(repo=c.repo, revision=c.revision, submission=sid)
    own = [
        OnPolicyPrompt(tokens=5, teacher_nll=0.5 + kls[0], reverse_kl=0.2, repetition=0.0, text=f"own text {i} \u2026")
        for i in range(RULES.guarded_prompts(len(kls)))
    ]
    return ModelResult(
        ref=ref,
        status="ok",
        prompt_kl=kls,
        prompt_tokens=[7] * len(kls),
        content_hash=content_hash,
        fingerprint=[kls[0], 0.25],
        onpolicy=own,
    )


def eres(*models: ModelResult, king: Candidate | None = None) -> EvalResult:
    """A result as a pod returns it: the guard's values only for the king and its KL winners."""
    teacher = TeacherInfo(repo="org/teacher", continuation_tokens=[7] * 4)
    kept = trim_onpolicy(list(models), f"{king.hotkey}:{king.commit_block}" if king is not None else None, RULES, 4)
    return EvalResult(job_id="job-1", block_hash=BH, teacher=teacher, models=kept)


def open_store(tmp_path: Path) -> Iterator[Store]:
    """A writer on ``tmp_path/state/validator.db`` with a fixed clock; each test module's ``store`` fixture."""
    s = Store.open(tmp_path / "state" / "validator.db", clock=lambda: 1000.0)
    yield s
    s.close()


def admitted(store: Store, *names_blocks: tuple[str, int]) -> list[Candidate]:
    store.add_submissions([sub(n, b, uid=i) for i, (n, b) in enumerate(names_blocks)])
    for n, b in names_blocks:
        record_attempt(store, SubmissionId(hk(n), b), "admitted", params=1000, metadata_hash=f"m-{n}")
    return [cand(n, b) for n, b in names_blocks]


def first_round(store: Store) -> tuple[int, list[Candidate]]:
    a, b = admitted(store, ("alice", 5), ("bob", 6))
    plan = RoundPlan("first", None, (a, b))
    rid = store.create_round("first", 10, BH, ["e" * 64] * 4, RULES, [a.key, b.key], job_id="job-1")
    result = eres(mres(a, [0.5, 0.6, 0.5, 0.4], "a" * 64), mres(b, [0.9, 0.8, 0.9, 1.0]))
    out = interpret_result(plan, result, RULES)
    store.record_round_result(rid, out, result, 12, king_changed=out.king_changed)
    return rid, [a, b]

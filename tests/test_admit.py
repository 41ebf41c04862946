"""The admission driver: only new submissions, backoff on outages, final rejections, earliest commit owns."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures_contest import TEACHER, hotkey, make_world

from eval.admission import Rejected, TeacherSpec, check_model
from eval.errors import TransientError
from eval.rules import ContestRules
from eval.schemas import SubmissionId
from validator.admit import admission_status, admit_pending, backoff_blocks, check_king_repo, record_attempt
from validator.contest import NewSubmission
from validator.store.database import Store

RULES = ContestRules(teacher_repo=TEACHER, vocab_size=512)


@pytest.fixture
def setup(tmp_path, contest_hub):
    world = make_world(tmp_path, *contest_hub)
    store = Store.open(tmp_path / "v.db")
    teacher_calls: list[int] = []

    def teacher() -> TeacherSpec:
        teacher_calls.append(1)
        return TeacherSpec.from_store(world.hub, TEACHER, world.revs[TEACHER])

    return world, store, teacher, teacher_calls


def _add(store: Store, world: Any, name: str, block: int, repo: str, revision: str | None = None) -> SubmissionId:
    hk = hotkey(name)
    rev = revision or world.revs[repo]
    store.add_submissions([NewSubmission(hk, block, 1, hk, "{}", "pending", repo, rev)])
    return SubmissionId(hk, block)


def test_backoff_doubles_and_is_capped():
    assert [backoff_blocks(a, 5, 60) for a in range(6)] == [5, 10, 20, 40, 60, 60]


@pytest.mark.parametrize(
    ("result", "status", "detail"),
    [("admitted", "admitted", None), ("rejected", "invalid", "too big"), ("transient", "pending", "too big")],
)
def test_admission_status_rejections_are_final_and_outages_retry(result, status, detail):
    assert admission_status(result, "too big") == (status, detail)


def test_an_attempt_is_recorded_with_the_status_the_domain_decides(tmp_path):
    """The status comes from ``admission_status``, passed to the store, which derives none itself."""
    store = Store.open(tmp_path / "v.db")
    key = SubmissionId("hk-a", 10)
    store.add_submissions([NewSubmission(key.hotkey, 10, 1, "ck", "{}", "pending", "org/m", "r" * 40)])
    record_attempt(store, key, "transient", detail="HTTP 503", next_retry_block=30)
    row = store.submission(key.hotkey)[0]
    assert (row.status, row.status_detail, row.admission.next_retry_block) == ("pending", "HTTP 503", 30)
    record_attempt(store, key, "rejected", check="params", detail="too big")
    row = store.submission(key.hotkey)[0]
    assert (row.status, row.status_detail, row.admission.attempts) == ("invalid", "too big", 2)
    store.close()


def test_quiet_epoch_asks_nothing(setup):
    world, store, teacher, teacher_calls = setup
    calls: list[str] = []
    report = admit_pending(store, world.hub, 100, RULES, teacher, check=lambda *a, **k: calls.append(a[1]))
    assert (report.checks, calls, teacher_calls) == (0, [], [])


def test_admitted_once_then_never_checked_again(setup):
    world, store, teacher, _ = setup
    key = _add(store, world, "a", 10, "alice/m1")
    calls: list[str] = []

    def check(*a: Any, **kw: Any) -> Any:
        calls.append(a[1])
        return check_model(*a, **kw)

    assert admit_pending(store, world.hub, 20, RULES, teacher, check=check).admitted == [key]
    assert admit_pending(store, world.hub, 21, RULES, teacher, check=check).checks == 0
    assert calls == ["alice/m1"]
    assert store.submission(key.hotkey)[0].hashes["metadata"]


def test_definite_failure_is_final(setup):
    world, store, teacher, _ = setup
    key = _add(store, world, "a", 10, "ghost/none", "a" * 40)
    report = admit_pending(store, world.hub, 20, RULES, teacher)
    assert report.rejected == [key]
    sub = store.submission(key.hotkey)[0]
    assert sub.status == "invalid" and sub.disqualifications[0].reason == "INVALID"
    assert admit_pending(store, world.hub, 2000, RULES, teacher).checks == 0


def test_teacher_outage_is_transient_too(setup):
    world, store, _, _ = setup
    key = _add(store, world, "a", 10, "alice/m1")

    def teacher() -> TeacherSpec:
        raise TransientError("503 on the teacher")

    report = admit_pending(store, world.hub, 20, RULES, teacher, backoff_base=3)
    assert report.transient == [key] and store.submission(key.hotkey)[0].status == "pending"
    assert store.pending_admissions(22) == [] and len(store.pending_admissions(23)) == 1


def test_same_files_later_commit_is_copy_in_one_batch(setup):
    world, store, teacher, _ = setup
    early = _add(store, world, "a", 10, "alice/m1")
    late = _add(store, world, "b", 11, "alice/m1")
    report = admit_pending(store, world.hub, 20, RULES, teacher)
    assert report.admitted == [early] and report.copies == [late]
    dq = store.submission(late.hotkey)[0].disqualifications[0]
    assert dq.reason == "COPY" and dq.evidence["copy_of"] == {"hotkey": early.hotkey, "commit_block": 10}


def test_rejection_reason_from_check_is_recorded(setup):
    world, store, teacher, _ = setup
    key = _add(store, world, "a", 10, "alice/m1")
    report = admit_pending(
        store,
        world.hub,
        20,
        RULES,
        teacher,
        check=lambda *a, **k: Rejected("INVALID", "tokenizer", "differs from the teacher"),
    )
    assert report.rejected == [key]
    assert store.submission(key.hotkey)[0].admission.check_name == "tokenizer"


def test_king_repo_strikes_ignore_outages_and_reset(setup):
    world, store, teacher, _ = setup
    key = _add(store, world, "a", 10, "alice/m1")
    admit_pending(store, world.hub, 20, RULES, teacher)
    store.set_king(key, 20, None, 0.1, "test")

    class Hub:
        mode = "ok"

        def files(self, repo: str, revision: str) -> Any:
            if self.mode == "transient":
                raise TransientError("429")
            if self.mode == "missing":
                from eval.model_store.port import RepoNotFound

                raise RepoNotFound(repo)
            return []

    hub = Hub()
    strikes = lambda: store.submission(key.hotkey)[0].strikes  # noqa: E731
    hub.mode = "missing"
    assert check_king_repo(store, hub, 21, 3) and strikes() == 1
    hub.mode = "transient"
    assert check_king_repo(store, hub, 22, 3) and strikes() == 1
    hub.mode = "ok"
    assert check_king_repo(store, hub, 23, 3) and strikes() == 0
    hub.mode = "missing"
    assert check_king_repo(store, hub, 24, 2) and not check_king_repo(store, hub, 25, 2)
    assert store.submission(key.hotkey)[0].status == "removed"


def test_king_repo_check_reads_only_the_kings_strikes(setup, monkeypatch):
    """One submission's strike count, not every submission and disqualification of the hotkey's subnet."""
    from eval.model_store.port import RepoNotFound

    world, store, teacher, _ = setup
    key = _add(store, world, "a", 10, "alice/m1")
    admit_pending(store, world.hub, 20, RULES, teacher)
    store.set_king(key, 20, None, 0.1, "test")
    store.set_strikes(key, 1)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the king's repo check reads only its own strikes")

    monkeypatch.setattr(store, "submission", refused)
    monkeypatch.setattr(store, "disqualifications", refused)

    class Gone:
        def files(self, repo: str, revision: str) -> Any:
            raise RepoNotFound(repo)

    assert not check_king_repo(store, Gone(), 21, 2)  # the second strike in a row removes it
    assert store.strikes(key) == 2
    monkeypatch.undo()
    assert store.submission(key.hotkey)[0].status == "removed"


def test_rejected_hub_token_judges_nobody_and_is_reported(setup, monkeypatch, caplog):
    """The real HuggingFaceStore against the loopback hub stand-in answering 401 "Invalid credentials" (LESSONS 28)."""
    from hub_standin import FakeHub
    from huggingface_hub import constants

    from api import views
    from eval.model_store.huggingface import HuggingFaceStore

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    world, store, _, _ = setup
    store_path = world.root / "v.db"
    fake = FakeHub(world.hub)
    try:
        king = _add(store, world, "k", 5, "bob/m2")
        admit_pending(
            store, world.hub, 6, RULES, lambda: TeacherSpec.from_store(world.hub, TEACHER, world.revs[TEACHER])
        )
        store.set_king(king, 6, None, 0.1, "test")
        first, second = _add(store, world, "a", 10, "alice/m1"), _add(store, world, "c", 11, "carol/m3")
        fake.valid_tokens = {"hf_renewed"}  # the validator still sends the expired one
        hf = HuggingFaceStore(endpoint=fake.url, token="hf_expired", timeout=5)
        teacher = lambda: TeacherSpec.from_store(hf, TEACHER, world.revs[TEACHER])  # noqa: E731
        with caplog.at_level("ERROR"):
            report = admit_pending(store, hf, 20, RULES, teacher)
            assert check_king_repo(store, hf, 20, max_strikes=1)  # one strike would remove it: none is given
        assert report.admitted == report.rejected == [] and "HF_TOKEN" in (report.hub_auth_error or "")
        assert [store.submission(k.hotkey)[0].status for k in (first, second)] == ["pending", "pending"]
        assert store.pending_admissions(20) and all(r.attempts in (0, None) for r in store.pending_admissions(20))
        assert store.submission(king.hotkey)[0].strikes == 0 and store.current_king().hotkey == king.hotkey
        assert store.disqualifications() == []
        errors = [r for r in caplog.records if r.levelname == "ERROR" and "HF_TOKEN" in r.getMessage()]
        assert len(errors) == 2 and "hf_expired" not in caplog.text
        ro = Store.open_readonly(store_path)
        health = views.health(ro)
        assert health.status == "degraded" and health.hub_auth == "rejected"
        assert any("HF_TOKEN" in r for r in health.reasons) and "Invalid credentials" in health.hub_auth_detail
        fake.valid_tokens = {"hf_expired"}  # the operator renews the token
        report = admit_pending(store, hf, 30, RULES, teacher)
        assert sorted(report.admitted) == sorted([first, second])
        assert views.health(ro).hub_auth == "ok" and not any("HF_TOKEN" in r for r in views.health(ro).reasons)
        ro.close()
    finally:
        fake.close()

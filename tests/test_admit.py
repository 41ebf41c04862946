"""The admission driver: only new submissions, backoff on outages, final rejections, earliest commit owns."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures_contest import TEACHER, hotkey, make_world

from eval.admission import Rejected, TeacherSpec, check_model
from eval.errors import TransientError
from eval.rules import ContestRules
from validator.admit import admit_pending, backoff_blocks, check_king_repo
from validator.contest import NewSubmission
from validator.store import Store

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


def _add(store: Store, world: Any, name: str, block: int, repo: str, revision: str | None = None) -> tuple[str, int]:
    hk = hotkey(name)
    rev = revision or world.revs[repo]
    store.add_submissions([NewSubmission(hk, block, 1, hk, "{}", "pending", repo, rev)])
    return hk, block


def test_backoff_doubles_and_is_capped():
    assert [backoff_blocks(a, 5, 60) for a in range(6)] == [5, 10, 20, 40, 60, 60]


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
    assert store.submission(key[0])[0]["hashes"]["metadata"]


def test_definite_failure_is_final(setup):
    world, store, teacher, _ = setup
    key = _add(store, world, "a", 10, "ghost/none", "a" * 40)
    report = admit_pending(store, world.hub, 20, RULES, teacher)
    assert report.rejected == [key]
    sub = store.submission(key[0])[0]
    assert sub["status"] == "invalid" and sub["disqualifications"][0]["reason"] == "INVALID"
    assert admit_pending(store, world.hub, 2000, RULES, teacher).checks == 0


def test_teacher_outage_is_transient_too(setup):
    world, store, _, _ = setup
    key = _add(store, world, "a", 10, "alice/m1")

    def teacher() -> TeacherSpec:
        raise TransientError("503 on the teacher")

    report = admit_pending(store, world.hub, 20, RULES, teacher, backoff_base=3)
    assert report.transient == [key] and store.submission(key[0])[0]["status"] == "pending"
    assert store.pending_admissions(22) == [] and len(store.pending_admissions(23)) == 1


def test_same_files_later_commit_is_copy_in_one_batch(setup):
    world, store, teacher, _ = setup
    early = _add(store, world, "a", 10, "alice/m1")
    late = _add(store, world, "b", 11, "alice/m1")
    report = admit_pending(store, world.hub, 20, RULES, teacher)
    assert report.admitted == [early] and report.copies == [late]
    dq = store.submission(late[0])[0]["disqualifications"][0]
    assert dq["reason"] == "COPY" and dq["evidence"]["copy_of"] == {"hotkey": early[0], "commit_block": 10}


def test_rejection_reason_from_check_is_recorded(setup):
    world, store, teacher, _ = setup
    key = _add(store, world, "a", 10, "alice/m1")
    report = admit_pending(store, world.hub, 20, RULES, teacher,
                           check=lambda *a, **k: Rejected("INVALID", "tokenizer", "differs from the teacher"))
    assert report.rejected == [key]
    assert store.submission(key[0])[0]["admission"]["check_name"] == "tokenizer"


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
                from eval.stores import RepoNotFound

                raise RepoNotFound(repo)
            return []

    hub = Hub()
    strikes = lambda: store.submission(key[0])[0]["strikes"]  # noqa: E731
    hub.mode = "missing"
    assert check_king_repo(store, hub, 21, 3) and strikes() == 1
    hub.mode = "transient"
    assert check_king_repo(store, hub, 22, 3) and strikes() == 1
    hub.mode = "ok"
    assert check_king_repo(store, hub, 23, 3) and strikes() == 0
    hub.mode = "missing"
    assert check_king_repo(store, hub, 24, 2) and not check_king_repo(store, hub, 25, 2)
    assert store.submission(key[0])[0]["status"] == "removed"

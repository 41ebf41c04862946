"""eval/progress.py: scorer callbacks become JobProgress snapshots; a broken sink never breaks a job."""

from __future__ import annotations

from eval.progress import JobProgressTracker
from eval.schemas import JobProgress


def test_phases_and_prompts_give_rate_and_eta() -> None:
    seen: list[JobProgress] = []
    tracker = JobProgressTracker(seen.append, model_count=2, prompt_count=4)
    tracker.phase("student", "org/model", 1)
    callback = tracker.callback()
    callback(1, 4, 100)
    callback(4, 4, 300)
    assert seen[0].phase == "student" and seen[0].model == "org/model" and seen[0].model_index == 1
    assert seen[1].prompt == 1 and seen[1].tokens_per_s > 0 and (seen[1].eta_s or 0) > 0
    assert seen[-1].prompt == 4 and seen[-1].eta_s == 0


def test_a_broken_sink_is_logged_not_raised(caplog) -> None:
    def broken(_state: JobProgress) -> None:
        raise RuntimeError("dashboard down")

    tracker = JobProgressTracker(broken, model_count=1, prompt_count=1)
    tracker.phase("teacher")
    tracker.prompt_done(1)
    assert tracker.state.prompt == 1 and "progress sink failed" in caplog.text

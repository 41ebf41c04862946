"""scripts/bench_agreement.py runs and measures what it says: agreement under the schedule, disagreement without."""

from __future__ import annotations

from scripts.bench_agreement import run


def test_validators_on_the_shared_schedule_agree_and_the_control_does_not():
    ours = run(slots=15, n_validators=3, seed=3)
    assert ours["slots"] >= 14 and ours["agreement_rate"] == 1.0 and ours["vtrust"] == [1.0, 1.0, 1.0]
    control = run(slots=15, n_validators=3, seed=3, own_head=True)  # each validator seeds from its own head
    assert control["agreement_rate"] < 1.0  # the benchmark can see a split when there is one

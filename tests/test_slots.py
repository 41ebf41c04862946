"""The slot walk (validator/slots.py) through the real loop on a SimChain: catch-up, finality, anchoring, the valve.

Rules here: one slot per block, commitments enter the slot of their own block (``fixtures_contest.RULES``).
"""

from __future__ import annotations

from fixtures_contest import FakePod, hotkey, make_validator, seed

from eval.schemas import SubmissionId
from validator.chain.sim import SimChain
from validator.pod_errors import PodError


def _second_validator(world, pod, tmp_path, name: str = "v2", **config):
    hk = hotkey(name)
    world.sim.register(hk, hotkey(f"cold-{name}"), stake=1000.0, validator_permit=True)
    chain = SimChain(world.sim_db, 1, hotkey=hk)
    return make_validator(world, pod, db=tmp_path / f"{name}.db", chain=chain, **config)


def _key(world, name: str) -> SubmissionId:
    hk = world.miners[name]
    return SubmissionId(hk, world.sim.commitments()[hk].block)


def test_a_validator_that_missed_slots_judges_each_in_order_on_its_own_seed(world):
    pod = FakePod({"alice/m1": 0.5, "bob/m2": 0.4, "carol/m3": 0.3})
    v = make_validator(world, pod)
    seed(world, ("m1", "alice/m1"))
    v.epoch()  # crowns m1 (no history, no consensus: a coronation of its slot)
    seed(world, ("m2", "bob/m2"))
    world.sim.advance(3)
    seed(world, ("m3", "carol/m3"))
    world.sim.advance(2)
    report = v.epoch()  # two slots with a challenger each, judged one after the other
    judged = [r for r in report.slots if r.outcome == "done"]
    assert [r.kind for r in judged] == ["challenge", "challenge"]
    jobs = pod.calls[1:]
    assert [j.block for j in jobs] == [_key(world, "m2").commit_block, _key(world, "m3").commit_block]
    assert all(j.block_hash == world.sim.block_hash(j.block) for j in jobs)  # each slot's own seed
    assert [[m.repo for m in j.models] for j in jobs] == [["alice/m1", "bob/m2"], ["bob/m2", "carol/m3"]]
    assert v.store.current_king().key == _key(world, "m3")
    assert all(r.outcome in ("empty", "done") for r in report.slots)
    assert v.epoch().slots == [] or all(r.outcome == "empty" for r in v.epoch().slots)  # nothing judged twice
    assert len(pod.calls) == 3


def test_a_slot_whose_seed_is_not_final_waits_and_then_runs_on_that_seed(world):
    pod = FakePod({"alice/m1": 0.5})
    v = make_validator(world, pod)
    world.sim.set_finality_lag(3)
    seed(world, ("m1", "alice/m1"))
    commit = _key(world, "m1").commit_block
    report = v.epoch()
    assert pod.calls == [] and v.store.current_king() is None  # its slot's first block is not final yet
    assert all(r.outcome != "done" for r in report.slots)
    world.sim.advance(3)
    v.epoch()
    assert [j.block for j in pod.calls] == [commit] and pod.calls[0].block_hash == world.sim.block_hash(commit)


def test_a_failed_round_keeps_its_slot_and_the_retry_draws_the_same_prompts(world):
    pod = FakePod({"alice/m1": 0.5, "bob/m2": 0.4})
    v = make_validator(world, pod)
    seed(world, ("m1", "alice/m1"))
    v.epoch()
    seed(world, ("m2", "bob/m2"))
    pod.fail = PodError("pod unreachable")
    world.sim.advance(2)
    report = v.epoch()
    assert report.slots[-1].outcome == "failed" and report.slots[-1].slot == _key(world, "m2").commit_block
    assert v.store.current_king().key == _key(world, "m1")
    pod.fail = None
    world.sim.advance(5)
    v.epoch()
    failed_job, retried = pod.calls[-2], pod.calls[-1]
    assert retried.job_id != failed_job.job_id  # a new attempt ...
    assert (retried.block, retried.block_hash, retried.prompts) == (
        failed_job.block,
        failed_job.block_hash,
        failed_job.prompts,
    )
    assert v.store.current_king().key == _key(world, "m2")


def test_a_model_not_admitted_yet_is_deferred_for_this_validator_only(world, monkeypatch):
    pod = FakePod({"alice/m1": 0.5, "bob/m2": 0.4, "carol/m3": 0.45})
    v = make_validator(world, pod)
    seed(world, ("m1", "alice/m1"))
    v.epoch()
    seed(world, ("m2", "bob/m2"), ("m3", "carol/m3"))
    real = v.check

    def flaky(store, repo, *args, **kw):
        if repo == "bob/m2":
            from eval.errors import TransientError

            raise TransientError("hub: 503")
        return real(store, repo, *args, **kw)

    v.check = flaky
    v.epoch()
    m2, m3 = _key(world, "m2"), _key(world, "m3")
    assert [m.repo for m in pod.calls[-1].models] == ["alice/m1", "carol/m3"]  # m3's slot is untouched
    slots = {c.key: c.slot for c in v.store.candidates(world.miners.values())}
    assert slots[m3] == m3.commit_block and slots[m2] > m2.commit_block  # m2 waits, for this validator only


def test_a_new_validator_adopts_the_chains_consensus_king(world, tmp_path):
    kl = {"alice/m1": 0.4, "bob/m2": 0.5}
    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    first = make_validator(world, FakePod(kl))
    first.epoch()
    world.sim.advance(1)
    late_pod = FakePod(kl)
    late = _second_validator(world, late_pod, tmp_path)
    report = late.epoch()
    assert late.store.current_king().key == first.store.current_king().key == _key(world, "m1")
    assert late_pod.calls == []  # nothing to judge: the slots before it joined were judged by others
    assert late.store.king_history()[-1].reason.startswith("adopted the chain's consensus king")
    assert report.consensus.agree is True and report.consensus.consensus == _key(world, "m1")
    assert report.weights == "set"
    assert late.store.latest_slots(1)[0].anchor == "consensus"


def test_with_no_consensus_king_a_newcomer_crowns_by_coronation_seeded_like_everyone(world, tmp_path):
    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    a_pod, b_pod = FakePod({"alice/m1": 0.4, "bob/m2": 0.5}), FakePod({"alice/m1": 0.4, "bob/m2": 0.5})
    a = make_validator(world, a_pod)
    b = _second_validator(world, b_pod, tmp_path)
    a.weights.step = lambda *args, **kw: "not_due"  # no weights yet on chain: nobody to adopt from
    a.epoch()
    b.epoch()
    assert a_pod.calls[0].block_hash == b_pod.calls[0].block_hash and a_pod.calls[0].prompts == b_pod.calls[0].prompts
    assert a.store.current_king().key == b.store.current_king().key
    assert b.store.latest_slots(1)[0].anchor == "none"


def test_far_behind_it_reanchors_instead_of_judging_every_missed_slot(world, tmp_path):
    kl = {"alice/m1": 0.4, "bob/m2": 0.3}
    a = make_validator(world, FakePod(kl))
    b_pod = FakePod(kl)
    b = _second_validator(world, b_pod, tmp_path, max_catchup_slots=5)
    seed(world, ("m1", "alice/m1"))
    a.epoch()
    b.epoch()
    calls = len(b_pod.calls)
    seed(world, ("m2", "bob/m2"))
    world.sim.advance(6)  # past the weights rate limit
    a.epoch()  # m2 dethrones m1; a's weights say so
    world.sim.advance(10)
    b.epoch()  # 10+ slots behind: adopts the consensus (a's king) and skips the old slots
    assert len(b_pod.calls) == calls and b.store.current_king().key == _key(world, "m2")
    assert b.store.latest_slots(1)[0].anchor == "consensus"


def test_a_validator_disagreeing_for_too_long_reanchors_on_the_consensus(world, tmp_path, caplog):
    a = make_validator(world, FakePod({"alice/m1": 0.4, "bob/m2": 0.5}))
    b = _second_validator(world, FakePod({"alice/m1": 0.5, "bob/m2": 0.4}), tmp_path, max_disagreement_slots=3)
    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    a.epoch()
    b.weights.step = lambda *args, **kw: "not_due"  # b alone: it must not lean on a's weights to start
    b.slots._consensus = lambda neurons: (None, None)  # first slot: no consensus visible to b yet
    b.epoch()
    assert b.store.current_king().key == _key(world, "m2")  # a broken pod crowned another king
    del b.slots._consensus
    streaks = []
    for _ in range(4):
        world.sim.advance(1)
        streaks.append(b.epoch().consensus.streak)
    assert streaks[:3] == [1, 2, 3]
    assert b.store.current_king().key == _key(world, "m1") == a.store.current_king().key
    assert "re-anchored" in caplog.text
    assert [r.anchor for r in b.store.latest_slots(5)].count("consensus") == 1  # the slot where it re-anchored


def test_no_slot_is_judged_twice_across_a_restart(world):
    pod = FakePod({"alice/m1": 0.5, "bob/m2": 0.4})
    v = make_validator(world, pod)
    seed(world, ("m1", "alice/m1"))
    v.epoch()
    seed(world, ("m2", "bob/m2"))
    v.epoch()
    v.store.close()
    again = make_validator(world, pod)  # a restart: a fresh process on the same store
    world.sim.advance(3)
    again.epoch()
    rounds = again.store._db.execute("SELECT slot, COUNT(*) FROM rounds WHERE state = 'done' GROUP BY slot").fetchall()
    assert all(n == 1 for _, n in rounds) and len(pod.calls) == 2

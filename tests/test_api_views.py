"""api/views.py against stores written by the real validator loop: health, audit records, progress."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from api.app import Settings, create_app
from eval.rules import ContestRules
from validator.store.database import Store


def _model_error(repo: str):
    def mutate(result):
        models = [
            x.model_copy(
                update={
                    "status": "model_error",
                    "prompt_kl": [],
                    "prompt_tokens": [],
                    "content_hash": None,
                    "fingerprint": None,
                    "error": "weights failed to load",
                }
            )
            if x.ref.repo == repo
            else x
            for x in result.models
        ]
        return result.model_copy(update={"models": models})

    return mutate


def test_store_written_by_the_real_validator_loop(world):
    """Epochs of the real ``Validator`` (real admission on a LocalHub, a FakePod) fill the store the API serves."""
    from fixtures_contest import FakePod, make_validator, seed

    # one challenger per slot: bob is crowned alone, then alice challenges him (a p-value), then the rest
    seed(world, ("m2", "bob/m2"))
    pod = FakePod({"alice/m1": 0.5, "bob/m2": 0.3, "carol/m3": 100.0, "dave/m4": 0.2})
    pod.mutate = _model_error("dave/m4")
    v = make_validator(world, pod)
    try:
        v.epoch()
        seed(world, ("m1", "alice/m1"), ("m3", "carol/m3"), ("m4", "dave/m4"), ("m5", "alice/m1"))
        for _ in range(3):
            v.epoch()
            world.sim.advance(2)
    finally:
        v.store.close()
    assert pod.calls, "the loop never dispatched a round"
    c = TestClient(create_app(Settings(db=world.db, network="sim", netuid=1, rate_per_s=0)))
    hk = world.miners
    # health: what the loop writes each epoch (metagraph snapshot + last_epoch_block)
    h = c.get("/api/health").json()
    assert h["status"] == "ok" and h["db_ok"] and h["reasons"] == []
    assert h["last_sync_block"] >= pod.calls[-1].block and 0 <= h["last_sync_age_s"] < 120
    assert h["last_round_id"] and h["last_round_state"] == "done" and h["last_round_age_s"] < 120
    # scores: the king, KL with CI and prompt count, DQ reasons, rank only where comparable
    s = c.get("/api/scores").json()
    assert s["king"]["hotkey"] == hk["m2"] and s["king"]["repo"] == "bob/m2"
    rows = {e["hotkey"]: e for e in s["evaluations"]}
    n = world.rules.prompts_per_round
    assert rows[hk["m2"]]["rank"] == 1 and rows[hk["m1"]]["rank"] == 2
    assert rows[hk["m2"]]["n_prompts"] == n and rows[hk["m2"]]["ci_lo"] <= rows[hk["m2"]]["mean_kl"]
    assert rows[hk["m4"]]["status"] == "model_error" and rows[hk["m4"]]["rank"] is None
    assert rows[hk["m3"]]["disqualified"] == ["KL_TOO_HIGH"] and rows[hk["m3"]]["rank"] is None
    assert s["last_round"]["id"] == h["last_round_id"] and s["rules_digest"] == world.rules.digest()
    # round audit: block + hash, prompt hashes, teacher + revision, per-prompt KL, decision, p-value
    done = [r for r in c.get("/api/rounds", params={"per_page": 100}).json()["items"] if r["state"] == "done"]
    assert done
    for r in done:
        a = c.get(f"/api/rounds/{r['id']}").json()
        job = next(j for j in pod.calls if j.job_id == a["job_id"])
        assert (a["block"], a["block_hash"]) == (job.block, job.block_hash)
        assert a["prompt_sha256s"] == [hashlib.sha256(p.encode()).hexdigest() for p in job.prompts]
        assert a["teacher_repo"] == world.rules.teacher_repo and a["rules_digest"] == world.rules.digest()
        assert a["teacher_revision"] == "f" * 40  # the revision the pod scored with (the rules pin none)
        assert a["decision"] and {(x["hotkey"], x["commit_block"]) for x in a["models"]} == {
            (e["hotkey"], e["commit_block"]) for e in a["evaluations"]
        }
        for e in a["evaluations"]:
            assert len(e["prompt_kl"]) == (0 if e["status"] == "model_error" else len(job.prompts))
    assert any(x["p_value"] is not None for r in done for x in [c.get(f"/api/rounds/{r['id']}").json()])
    # miners: everything about one submission
    mi = c.get(f"/api/miners/{hk['m2']}").json()
    sub = mi["submissions"][0]
    assert mi["is_king"] and sub["repo"] == "bob/m2" and sub["admission"]["result"] == "admitted"
    assert sub["evaluations"] and sub["evaluations"][-1]["prompt_kl"]
    # disqualifications with evidence: the re-commit of alice/m1 and the KL_TOO_HIGH model
    dq = {d["hotkey"]: d for d in c.get("/api/disqualifications").json()["items"]}
    assert dq[hk["m3"]]["reason"] == "KL_TOO_HIGH" and dq[hk["m3"]]["evidence"]
    assert dq[hk["m5"]]["reason"] == "COPY" and dq[hk["m5"]]["evidence"]["copy_of"]["hotkey"] == hk["m1"]
    # the rest answers from the same store
    assert c.get("/api/metagraph").json()["n"] == 6
    assert {i["hotkey"] for i in c.get("/api/commitments").json()["items"]} == set(hk.values())
    assert c.get("/api/history").json()["changes"][-1]["hotkey"] == hk["m2"]
    assert c.get("/api/eval-progress").json()["active"] is False  # the loop clears progress after a round
    assert c.get("/api/rules").json()["digest"] == world.rules.digest()
    text = c.get("/metrics").text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(samples["klhill_round_duration_seconds_count"]) == len(done)
    assert float(samples["klhill_king_kl"]) == pytest.approx(s["king"]["kl"])
    assert float(samples["klhill_queue_length"]) == 0
    assert float(samples["klhill_last_weights_block"]) > 0 and float(samples["klhill_model_errors_total"]) == 1
    o = c.get("/").json()
    assert (o["name"], o["network"], o["netuid"], o["dashboard"]) == ("klhill", "sim", 1, "/dashboard")
    assert all(c.get(p).status_code == 200 for p in o["endpoints"] if "{" not in p)


def test_health_degrades_on_a_stale_sync_unless_a_round_progresses(tmp_path):
    from api import views

    now = [1_000_000.0]
    w = Store.open(tmp_path / "v.db", clock=lambda: now[0])
    ro = Store.open_readonly(tmp_path / "v.db")
    try:
        h = views.health(ro, now=now[0])
        assert h.status == "degraded" and h.last_sync_block is None and "not synced" in h.reasons[0]
        w.save_metagraph(500, [])  # one epoch of the loop: snapshot + last_epoch_block
        w.set_meta(last_epoch_block=500)
        h = views.health(ro, now=now[0] + 60)
        assert (h.status, h.last_sync_block, h.last_sync_age_s, h.reasons) == ("ok", 500, 60.0, [])
        late = now[0] + views.SYNC_STALE_S + 1
        assert views.health(ro, now=late).status == "degraded"
        now[0] = late - 10  # a long pod round: the loop is busy but progress keeps arriving
        w.set_progress({"round_id": 1, "phase": "running", "progress": {"phase": "student", "prompt": 3}})
        assert views.health(ro, now=late).status == "ok"
        w.set_meta(network="finney", netuid=3)  # what ``python -m validator run`` records at start
        assert views.health(ro, now=late, expect=("finney", 3)).status == "ok"
        h = views.health(ro, now=late, expect=("sim", 1))
        assert h.status == "degraded" and "network finney netuid 3" in h.reasons[0]
    finally:
        ro.close()
        w.close()


def test_health_says_when_the_hub_rejects_the_validators_token(tmp_path):
    from api import views
    from validator import hub_health

    w = Store.open(tmp_path / "v.db")
    ro = Store.open_readonly(tmp_path / "v.db")
    try:
        w.save_metagraph(500, [])
        w.set_meta(last_epoch_block=500)
        assert (views.health(ro).status, views.health(ro).hub_auth) == ("ok", None)  # never asked yet
        hub_health.report_rejected(w, "HTTP 401 (Invalid credentials in Authorization header)", 501, "admission")
        h = views.health(ro)
        assert (h.status, h.hub_auth) == ("degraded", "rejected")
        assert h.reasons == [
            "the hub rejects the validator's token (HF_TOKEN) since block 501: submissions wait "
            "unjudged until it is fixed"
        ]
        assert h.hub_auth_detail == "admission: HTTP 401 (Invalid credentials in Authorization header)"
        hub_health.report_ok(w, 502)
        h = views.health(ro)
        assert (h.status, h.hub_auth, h.hub_auth_detail, h.reasons) == ("ok", "ok", None, [])
    finally:
        ro.close()
        w.close()


def test_progress_shows_the_dispatched_phase_and_hides_the_pod_address(tmp_path):
    from api import views

    w = Store.open(tmp_path / "v.db")
    ro = Store.open_readonly(tmp_path / "v.db")
    try:
        rid = w.create_round("challenge", 10, "0x" + "ab" * 32, ["a" * 64], ContestRules(), [], None)
        w.mark_dispatched(rid, "pod", "job-1")
        # exactly what validator.rounds.RoundRunner writes before the pod answers
        w.set_progress(
            {
                "round_id": rid,
                "job_id": "job-1",
                "kind": "challenge",
                "block": 10,
                "models": 2,
                "pod": "HttpPod(http://10.1.2.3:8091)",
                "phase": "dispatched",
            }
        )
        p = views.progress(ro)
        assert p.active and p.round_id == rid and p.phase == "dispatched" and p.progress is None
        assert "pod" not in p.data and "10.1.2.3" not in p.model_dump_json()
        w.set_progress(
            {
                "round_id": rid,
                "phase": "running",
                "pod": "HttpPod(http://10.1.2.3:8091)",
                "progress": {"phase": "student", "model": "a/b", "prompt": 2, "prompt_count": 4},
            }
        )
        p = views.progress(ro)
        assert p.phase == "running" and p.progress is not None and p.progress.prompt == 2
        assert "10.1.2.3" not in p.model_dump_json()
        w.fail_round(rid, "pod timed out")
        pods = "http://10.1.2.3:8091,10.1.2.4:8091,local:cpu,gpu-a"
        r2 = w.create_round("challenge", 11, "0x" + "cd" * 32, ["a" * 64], ContestRules(), [], None, pod=pods)
        assert views.round_audit(ro, r2).pod == "remote,remote,local:cpu,gpu-a"
    finally:
        ro.close()
        w.close()


def test_consensus_shows_agreement_with_the_chain_and_vtrust(world, tmp_path):
    """``/api/consensus`` and its gauges: a validator that follows the others agrees, with Yuma vtrust 1.0."""
    from fixtures_contest import FakePod, hotkey, make_validator, seed

    from validator.chain.sim import SimChain

    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    kl = {"alice/m1": 0.4, "bob/m2": 0.5}
    other = hotkey("other-validator")
    world.sim.register(other, hotkey("cold-other"), stake=1000.0, validator_permit=True)
    first = make_validator(world, FakePod(kl), db=tmp_path / "other.db", chain=SimChain(world.sim_db, 1, hotkey=other))
    first.epoch()
    world.sim.advance(6)
    v = make_validator(world, FakePod(kl))
    v.epoch()
    world.sim.advance(1)
    v.epoch()  # its own weights are on chain now: vtrust can be read
    v.store.close()
    c = TestClient(create_app(Settings(db=world.db, network="sim", netuid=1, rate_per_s=0)))
    body = c.get("/api/consensus").json()
    king = {"hotkey": world.miners["m1"], "commit_block": world.sim.commitments()[world.miners["m1"]].block}
    assert body["own_king"] == body["consensus_king"] == king
    assert body["agreeing"] is True and body["disagreeing_slots"] == 0 and body["vtrust"] == pytest.approx(1.0)
    assert body["slots"][0]["slot"] == body["slot"] and body["slots"][-1]["anchor"] == "consensus"
    metrics = c.get("/metrics").text
    assert "klhill_consensus_agree 1.0" in metrics and "klhill_consensus_disagreement_slots 0.0" in metrics
    assert "klhill_vtrust 1.0" in metrics and f"klhill_slot {body['slot']}.0" in metrics
    assert "/api/consensus" in c.get("/").json()["endpoints"]


def test_consensus_before_any_slot_is_empty(tmp_path):
    Store.open(tmp_path / "v.db").close()
    c = TestClient(create_app(Settings(db=tmp_path / "v.db", network="sim", netuid=1, rate_per_s=0)))
    assert c.get("/api/consensus").json() == {
        "slot": None,
        "own_king": None,
        "consensus_king": None,
        "agreeing": None,
        "disagreeing_slots": 0,
        "vtrust": None,
        "observed_block": None,
        "slots": [],
    }

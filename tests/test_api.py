"""The public API against a store filled by the real validator code (see tests/api_fixtures.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time

import pytest
from api_fixtures import BuiltStore, build_store
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from api import models as m
from api.app import Settings, create_app
from api.cache import TTLCache
from api.price import BittensorPriceReader, PriceQuote, PriceService, UnavailablePriceReader
from api.ratelimit import ClientIP, TokenBuckets
from eval.rules import ContestRules
from validator.store import Store

ENDPOINTS = {
    "/": m.Overview, "/api/health": m.Health, "/api/metagraph": m.MetagraphOut, "/api/commitments": m.CommitmentsOut,
    "/api/scores": m.ScoresOut, "/api/disqualifications": m.DisqualificationsOut, "/api/rounds": m.RoundsPage,
    "/api/history": m.HistoryOut, "/api/eval-progress": m.ProgressOut, "/api/rules": m.RulesOut,
    "/api/price": m.PriceOut,
}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> BuiltStore:
    d = tmp_path_factory.mktemp("api")
    return build_store(d / "validator.db", d / "chain.db", n_miners=12, prompts=6)


def client(built: BuiltStore, **kw) -> TestClient:
    kw.setdefault("rate_per_s", 10_000.0)
    kw.setdefault("rate_burst", 10_000.0)
    return TestClient(create_app(Settings(db=built.db, network="sim", netuid=7, **kw)))


def test_every_endpoint_conforms_to_its_model_and_openapi(built):
    c = client(built)
    spec = c.get("/openapi.json").json()
    for path, model in ENDPOINTS.items():
        r = c.get(path)
        assert r.status_code == 200, (path, r.text)
        model.model_validate(r.json())  # strict round trip through the published model
        schema_ref = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema_ref["$ref"].endswith(model.__name__)
    for path in ("/api/rounds/{round_id}", "/api/miners/{hotkey}", "/metrics", "/dashboard"):
        assert path in spec["paths"]


def test_scores_king_leaderboard_and_dq_reasons(built):
    s = client(built).get("/api/scores").json()
    with _ro(built) as store:
        king = store.current_king()
    assert s["king"]["hotkey"] == king["hotkey"] and s["king"]["uid"] == king["uid_at_sight"]
    assert s["king"]["kl"] == pytest.approx(king["kl"])
    evals = {(e["hotkey"], e["commit_block"]): e for e in s["evaluations"]}
    ok = [e for e in s["evaluations"] if e["mean_kl"] is not None and e["n_prompts"] > 1]
    assert ok and all(e["ci_lo"] <= e["mean_kl"] <= e["ci_hi"] and e["n_prompts"] == 6 for e in ok)
    copies = [e for e in evals.values() if "COPY" in e["disqualified"]]
    assert copies and copies[0]["state"] == "copy"
    assert s["epsilon"] == built.rules.epsilon and s["rules_version"] == built.rules.version
    assert s["rules_digest"] == built.rules.digest() and s["last_round"]["id"] == built.done_rounds[-1]


class _ro:
    def __init__(self, built: BuiltStore) -> None:
        self.store = Store.open_readonly(built.db)

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def test_round_audit_record_is_complete(built):
    c = client(built)
    page = c.get("/api/rounds", params={"per_page": 100}).json()
    assert page["total"] == len(built.done_rounds) + len(built.failed_rounds) + 1
    assert [r["id"] for r in page["items"]] == sorted((r["id"] for r in page["items"]), reverse=True)
    rid = built.done_rounds[-1]
    a = c.get(f"/api/rounds/{rid}").json()
    assert a["state"] == "done" and a["block_hash"].startswith("0x") and len(a["prompt_sha256s"]) == 6
    assert a["teacher_repo"] == built.rules.teacher_repo and a["rules"]["prompts_per_round"] == 6
    assert {(x["hotkey"], x["commit_block"]) for x in a["models"]} == {(e["hotkey"], e["commit_block"])
                                                                        for e in a["evaluations"]}  # fmt: skip
    assert all(len(e["prompt_kl"]) in (0, 6) for e in a["evaluations"]) and a["decision"]
    won = [e for e in a["evaluations"] if e["state"] in ("won", "king")]
    assert len(won) == 1 and won[0]["hotkey"] == a["new_king_hotkey"]


def test_miner_history_progress_metagraph_commitments(built):
    c = client(built)
    king = c.get("/api/scores").json()["king"]
    mi = c.get(f"/api/miners/{king['hotkey']}").json()
    assert mi["is_king"] and mi["submissions"][0]["admission"]["result"] == "admitted"
    assert mi["submissions"][0]["hashes"]["content"] and mi["submissions"][0]["evaluations"]
    h = c.get("/api/history").json()
    assert h["points"][-1]["hotkey"] == king["hotkey"] and h["changes"][-1]["hotkey"] == king["hotkey"]
    assert [p["round_id"] for p in h["points"]] == built.done_rounds
    p = c.get("/api/eval-progress").json()
    assert p["active"] and p["round_id"] == built.live_round and p["progress"]["prompt_count"] == 6
    mg = c.get("/api/metagraph").json()
    assert mg["n"] == 13 and {n["hotkey"] for n in mg["neurons"]} >= set(built.hotkeys)
    king_uid = next(n for n in mg["neurons"] if n["hotkey"] == king["hotkey"])
    assert king_uid["incentive"] == pytest.approx(1.0)  # the SimChain derived it from the weights we set
    cm = c.get("/api/commitments").json()
    assert cm["total"] == 12 and {i["status"] for i in cm["items"]} >= {"evaluated", "invalid"}
    dq = c.get("/api/disqualifications").json()
    assert {d["reason"] for d in dq["items"]} >= {"INVALID", "COPY"}
    copy = next(d for d in dq["items"] if d["reason"] == "COPY")
    assert copy["evidence"]["copy_of"]["hotkey"] and copy["check"] == "content_hash"
    assert c.get("/api/health").json()["status"] == "ok"


def test_metrics_prometheus_text(built):
    r = client(built).get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("klhill_round_duration_seconds_bucket", "klhill_king_kl ", "klhill_queue_length",
                 "klhill_last_weights_block", "klhill_pod_errors"):  # fmt: skip
        assert name in text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(samples["klhill_round_duration_seconds_count"]) == len(built.done_rounds)
    assert float(samples["klhill_king_kl"]) > 0


def test_errors_are_short_json_without_traces_or_paths(built, monkeypatch):
    c = client(built)
    for path, code in [("/api/rounds/999999", 404), ("/api/rounds/0", 422), ("/api/rounds/abc", 422),
                       ("/api/rounds?per_page=101", 422), ("/api/rounds?page=0", 422), ("/api/miners/a..b", 422),
                       ("/nope", 404), ("/api/miners/5NoSuchHotkey", 404)]:  # fmt: skip
        r = c.get(path)
        assert r.status_code == code, path
        assert set(r.json()) == {"error", "detail"} and "Traceback" not in r.text and str(built.db.parent) not in r.text
    assert c.post("/api/scores").status_code == 405
    boom = TestClient(create_app(Settings(db=built.db)), raise_server_exceptions=False)

    def explode(*a, **k):
        raise RuntimeError(f"secret failure in {built.db}")

    monkeypatch.setattr("api.views.scores", explode)
    r = boom.get("/api/scores")
    assert r.status_code == 500 and r.json() == {"error": "internal_error", "detail": None}
    missing = TestClient(create_app(Settings(db=built.db.parent / "missing.db")))
    r = missing.get("/api/scores")
    assert r.status_code == 503 and "missing.db" not in r.text and r.headers["retry-after"]
    assert missing.get("/api/health").json()["status"] == "down"


def test_nan_and_inf_never_reach_json():
    assert m.sanitize({"a": float("nan"), "b": [1.0, float("inf"), {"c": -float("inf")}]}) == {
        "a": None, "b": [1.0, None, {"c": None}]}  # fmt: skip
    out = m.ScoreOut(hotkey="h", commit_block=1, round_id=1, state="lost", status="ok",
                     **m.sanitize({"mean_kl": float("nan"), "ci_lo": float("-inf")}))  # fmt: skip
    assert "NaN" not in out.model_dump_json() and json.loads(out.model_dump_json())["mean_kl"] is None
    with pytest.raises(ValueError):
        m.ScoreOut(hotkey="h", commit_block=1, round_id=1, state="lost", status="ok", mean_kl=float("nan"))


def test_cors_open_for_get(built):
    c = client(built)
    r = c.get("/api/scores", headers={"Origin": "https://example.org"})
    assert r.headers["access-control-allow-origin"] == "*"
    pre = c.options("/api/scores", headers={"Origin": "https://x.org", "Access-Control-Request-Method": "GET"})
    assert pre.status_code == 200 and "GET" in pre.headers["access-control-allow-methods"]
    assert "default-src 'none'" in c.get("/dashboard").headers["content-security-policy"]


def test_rate_limit_429_with_retry_after_per_ip(built):
    c = client(built, rate_per_s=1.0, rate_burst=3.0)
    codes = [c.get("/api/scores").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    r = c.get("/api/scores")
    assert int(r.headers["retry-after"]) >= 1 and r.json()["error"] == "rate_limited"
    assert c.get("/api/health").status_code == 200  # health checks are never limited
    # an untrusted peer cannot dodge the limit with X-Forwarded-For
    assert c.get("/api/scores", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 429


def test_client_ip_trusts_forwarded_for_only_from_configured_proxies():
    scope = {"client": ("10.0.0.5", 1), "headers": [(b"x-forwarded-for", b"198.51.100.1, 203.0.113.7")]}
    assert ClientIP()(scope) == "10.0.0.5"
    assert ClientIP(["10.0.0.0/24"])(scope) == "203.0.113.7"
    assert ClientIP(["10.0.0.5", "203.0.113.7"])(scope) == "198.51.100.1"
    assert ClientIP(["127.0.0.1"])(scope) == "10.0.0.5"
    assert ClientIP(["10.0.0.5"])({"client": ("10.0.0.5", 1), "headers": [(b"x-forwarded-for", b"junk")]}) == "10.0.0.5"
    now = [0.0]
    b = TokenBuckets(rate=2.0, burst=2.0, clock=lambda: now[0])
    assert [b.take("a"), b.take("a")] == [0.0, 0.0] and b.take("a") == pytest.approx(0.5)
    assert b.take("b") == 0.0  # buckets are per client
    now[0] = 0.5
    assert b.take("a") == 0.0


def test_trusted_proxy_end_to_end(built):
    with pytest.raises(ValueError):
        ClientIP(["not-an-address"])
    c = client(built, rate_per_s=1.0, rate_burst=1.0, trusted_proxies=["127.0.0.1"])
    # TestClient's peer is "testclient" (not an IP): untrusted, so the limit applies to the peer itself
    assert c.get("/api/scores").status_code == 200 and c.get("/api/scores").status_code == 429


def test_cache_serves_poll_storm_without_touching_sqlite(built, monkeypatch):
    c = client(built, cache_ttl_s=30.0)
    calls = []
    orig = Store.scores

    def counting(self):
        calls.append(1)
        return orig(self)

    monkeypatch.setattr(Store, "scores", counting)
    for _ in range(200):
        assert c.get("/api/scores").status_code == 200
    assert len(calls) == 1


def test_ttl_cache_single_flight_and_stale_on_error():
    asyncio.run(_ttl_cache_checks())


async def _ttl_cache_checks() -> None:
    now = [0.0]
    cache = TTLCache(ttl_s=2.0, stale_s=10.0, clock=lambda: now[0])
    n = []

    def produce() -> bytes:
        n.append(1)
        time.sleep(0.05)
        return b"v%d" % len(n)

    got = await asyncio.gather(*[cache.get("k", produce) for _ in range(20)])
    assert set(got) == {b"v1"} and len(n) == 1
    now[0] = 3.0
    assert await cache.get("k", produce) == b"v2"

    def broken() -> bytes:
        raise OSError("db locked")

    now[0] = 6.0
    assert await cache.get("k", broken) == b"v2"  # stale but recent: served
    now[0] = 20.0
    with pytest.raises(OSError):
        await cache.get("k", broken)


def test_read_only_connection_refuses_writes(built):
    app = create_app(Settings(db=built.db))
    c = TestClient(app)
    assert c.get("/api/scores").status_code == 200
    store = app.state.reader.store
    assert store.readonly
    with pytest.raises(sqlite3.OperationalError):
        store._db.execute("DELETE FROM submissions")
    with pytest.raises(sqlite3.OperationalError):
        store._db.execute("INSERT INTO meta(key, value) VALUES ('x', '1')")
    with _ro(built) as ro:
        assert len(ro.commitments()) == 12


def test_serves_while_a_writer_writes(tmp_path):
    b = build_store(tmp_path / "v.db", tmp_path / "c.db", n_miners=6, prompts=4, live_round=False)
    c = TestClient(create_app(Settings(db=b.db, cache_ttl_s=0.0, rate_per_s=0)))
    stop = threading.Event()
    errors: list[BaseException] = []
    written = [0]

    def writer() -> None:
        w = Store.open(b.db)
        try:
            i = 0
            while not stop.is_set():
                with w.transaction():  # hold the write lock a little, as a round record does
                    w.set_progress({"phase": "student", "prompt": i % 4, "prompt_count": 4})
                    w.save_metagraph(1000 + i, [])
                    w.set_meta(last_epoch_block=1000 + i)
                    time.sleep(0.002)
                i += 1
                written[0] = i
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        codes = [c.get(p).status_code for _ in range(40) for p in ("/api/scores", "/api/health", "/api/eval-progress")]
    finally:
        stop.set()
        t.join(timeout=30)
    assert not errors and written[0] > 5 and set(codes) == {200}
    assert c.get("/api/health").json()["last_sync_block"] >= 1000


def test_price_unavailable_on_sim_and_cached_reader():
    class FakeReader:
        def __init__(self) -> None:
            self.n = 0

        def read(self, netuid: int) -> PriceQuote:
            self.n += 1
            return PriceQuote(0.0123, 0.5, 4242, None)

    fake = FakeReader()
    svc = PriceService(fake, netuid=7, ttl_s=60.0)
    assert svc.get()[0].price_tao_per_alpha == 0.0123 and svc.get()[0].block == 4242 and fake.n == 1
    assert UnavailablePriceReader("sim").read(7).price_tao_per_alpha is None


def test_price_endpoint_with_injected_reader_and_failing_sdk(built):
    class Quote:
        def read(self, netuid: int) -> PriceQuote:
            return PriceQuote(0.02, 0.25, 100, None)

    app = create_app(Settings(db=built.db, netuid=7, network="finney"), price_reader=Quote())
    p = TestClient(app).get("/api/price").json()
    assert p["available"] and p["price_tao_per_alpha"] == 0.02 and p["emission_tao_per_block"] == 0.25
    sim = client(built).get("/api/price").json()
    assert not sim["available"] and sim["price_tao_per_alpha"] is None and "sim" in sim["reason"]

    class Client:
        def __init__(self, network: str) -> None:
            pass

        async def connect(self) -> None:
            raise ConnectionError("ws://secret-host:9944 refused")

        async def close(self) -> None:
            pass

    q = BittensorPriceReader("finney", timeout_s=2.0, client_factory=Client).read(7)
    assert q.price_tao_per_alpha is None and q.reason == "chain read failed (ConnectionError)"


def test_price_reader_parses_sdk_answers():
    class Prices:
        async def alpha_price(self, netuid: int) -> dict:
            return {"netuid": netuid, "tao_per_alpha": 0.015, "price_rao": 15_000_000}

    class Client:
        prices = Prices()

        def __init__(self, network: str) -> None:
            pass

        async def connect(self):
            return self

        async def query(self, item, params):
            assert item == ("SubtensorModule", "SubnetTaoInEmission") and params == [7]
            return 250_000_000

        async def block(self) -> int:
            return 5_000_000

        async def close(self) -> None:
            pass

    q = BittensorPriceReader("finney", client_factory=Client).read(7)
    assert (q.price_tao_per_alpha, q.emission_tao_per_block, q.block, q.reason) == (0.015, 0.25, 5_000_000, None)


def test_pagination_bounds(built):
    c = client(built)
    assert c.get("/api/rounds", params={"per_page": 100}).status_code == 200
    assert c.get("/api/rounds", params={"per_page": 0}).status_code == 422
    assert c.get("/api/rounds", params={"page": 10**7}).status_code == 422
    far = c.get("/api/rounds", params={"page": 1000, "per_page": 100}).json()
    assert far["items"] == [] and far["total"] > 0
    TypeAdapter(m.RoundsPage).validate_python(far)


def _model_error(repo: str):
    def mutate(result):
        models = [x.model_copy(update={"status": "model_error", "prompt_kl": [], "prompt_tokens": [],
                                       "content_hash": None, "fingerprint": None, "error": "weights failed to load"})
                  if x.ref.repo == repo else x for x in result.models]  # fmt: skip
        return result.model_copy(update={"models": models})

    return mutate


def test_store_written_by_the_real_validator_loop(world):
    """Epochs of the real ``Validator`` (real admission on a LocalHub, a FakePod) fill the store the API serves."""
    from fixtures_contest import FakePod, make_validator, seed

    # one challenger per round: bob is crowned alone, then alice challenges him (a p-value), then the rest
    seed(world, ("m2", "bob/m2"), ("m1", "alice/m1"), ("m3", "carol/m3"), ("m4", "dave/m4"), ("m5", "alice/m1"))
    pod = FakePod({"alice/m1": 0.5, "bob/m2": 0.3, "carol/m3": 100.0, "dave/m4": 0.2})
    pod.mutate = _model_error("dave/m4")
    v = make_validator(world, pod, max_challengers=1)
    try:
        for _ in range(7):
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
    assert float(samples["klhill_king_kl"]) == pytest.approx(s["king"]["kl"]) and samples["klhill_queue_length"] == "0"
    assert float(samples["klhill_last_weights_block"]) > 0 and samples["klhill_model_errors"] == "1"
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


def test_progress_shows_the_dispatched_phase_and_hides_the_pod_address(tmp_path):
    from api import views

    w = Store.open(tmp_path / "v.db")
    ro = Store.open_readonly(tmp_path / "v.db")
    try:
        rid = w.create_round("challenge", 10, "0x" + "ab" * 32, ["a" * 64], ContestRules(), [], None)
        w.mark_dispatched(rid, "pod", "job-1")
        # exactly what validator.rounds.RoundRunner writes before the pod answers
        w.set_progress({"round_id": rid, "job_id": "job-1", "kind": "challenge", "block": 10, "models": 2,
                        "pod": "HttpPod(http://10.1.2.3:8091)", "phase": "dispatched"})  # fmt: skip
        p = views.progress(ro)
        assert p.active and p.round_id == rid and p.phase == "dispatched" and p.progress is None
        assert "pod" not in p.data and "10.1.2.3" not in p.model_dump_json()
        w.set_progress({"round_id": rid, "phase": "running", "pod": "HttpPod(http://10.1.2.3:8091)",
                        "progress": {"phase": "student", "model": "a/b", "prompt": 2, "prompt_count": 4}})  # fmt: skip
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

"""The public API against a store filled by the real validator code (see scripts/contest_store.py)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from api import models as m
from api.app import Settings, create_app
from api.price import BittensorPriceReader, PriceQuote
from api.ratelimit import ClientIP
from eval.rules import ContestRules
from scripts.contest_store import BuiltStore, build_store
from validator.store.database import Store

ENDPOINTS = {
    "/": m.Overview,
    "/api/health": m.Health,
    "/api/metagraph": m.MetagraphOut,
    "/api/commitments": m.CommitmentsOut,
    "/api/scores": m.ScoresOut,
    "/api/disqualifications": m.DisqualificationsOut,
    "/api/rounds": m.RoundsPage,
    "/api/history": m.HistoryOut,
    "/api/eval-progress": m.ProgressOut,
    "/api/rules": m.RulesOut,
    "/api/price": m.PriceOut,
}


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
    assert s["king"]["hotkey"] == king.hotkey and s["king"]["uid"] == king.uid_at_sight
    assert s["king"]["kl"] == pytest.approx(king.kl)
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
    assert {(x["hotkey"], x["commit_block"]) for x in a["models"]} == {
        (e["hotkey"], e["commit_block"]) for e in a["evaluations"]
    }
    assert all(len(e["prompt_kl"]) in (0, 6) for e in a["evaluations"]) and a["decision"]
    won = [e for e in a["evaluations"] if e["state"] in ("won", "king")]
    assert len(won) == 1 and won[0]["hotkey"] == a["new_king_hotkey"]
    # the on-policy guard's record: the first guarded prompts of every ok model, with its own text
    ok = [e for e in a["evaluations"] if e["status"] == "ok"]
    assert ok and all(len(e["onpolicy"]) == built.rules.guarded_prompts(6) for e in ok)
    assert all(o["text"] and 0.0 <= o["repetition"] <= 1.0 and o["teacher_nll"] > 0 for e in ok for o in e["onpolicy"])


def test_the_guard_in_rules_scores_and_rounds(built):
    """/api/rules publishes the guard; a stopped challenger says why and is not ranked on its KL."""
    c = client(built)
    r = c.get("/api/rules").json()
    assert r["rules"]["version"] == ContestRules().version
    assert r["rules"]["onpolicy_prompts"] == built.rules.onpolicy_prompts
    assert {"onpolicy_new_tokens", "onpolicy_nll_margin", "onpolicy_repetition_margin", "onpolicy_alpha"} <= set(
        r["rules"]
    )
    rounds = [c.get(f"/api/rounds/{rid}").json() for rid in built.done_rounds]
    stopped = [(a, e) for a in rounds for e in a["evaluations"] if e["state"] == "onpolicy_stopped"]
    assert stopped, "the fixture store has a looping challenger that beat the king on KL"
    a, e = stopped[0]
    assert e["reason"].startswith("beats the king on KL") and "its own continuations" in e["reason"]
    assert "on-policy guard stopped" in a["decision"] and e["hotkey"] != a["new_king_hotkey"]
    rows = {(s["hotkey"], s["commit_block"]): s for s in c.get("/api/scores").json()["evaluations"]}
    row = rows[(e["hotkey"], e["commit_block"])]
    if row["state"] == "onpolicy_stopped":  # its latest evaluation
        assert row["rank"] is None and row["reason"] == e["reason"]


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
    for name in (
        "klhill_round_duration_seconds_bucket",
        "klhill_king_kl ",
        "klhill_queue_length",
        "klhill_last_weights_block",
        "klhill_pod_errors_total",
    ):
        assert name in text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(samples["klhill_round_duration_seconds_count"]) == len(built.done_rounds)
    assert float(samples["klhill_king_kl"]) > 0


def test_errors_are_short_json_without_traces_or_paths(built, monkeypatch):
    c = client(built)
    for path, code in [
        ("/api/rounds/999999", 404),
        ("/api/rounds/0", 422),
        ("/api/rounds/abc", 422),
        ("/api/rounds?per_page=101", 422),
        ("/api/rounds?page=0", 422),
        ("/api/miners/a..b", 422),
        ("/nope", 404),
        ("/api/miners/5NoSuchHotkey", 404),
    ]:
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
        "a": None,
        "b": [1.0, None, {"c": None}],
    }
    out = m.ScoreOut(
        hotkey="h",
        commit_block=1,
        round_id=1,
        state="lost",
        status="ok",
        **m.sanitize({"mean_kl": float("nan"), "ci_lo": float("-inf")}),
    )
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


def test_pagination_bounds(built):
    c = client(built)
    assert c.get("/api/rounds", params={"per_page": 100}).status_code == 200
    assert c.get("/api/rounds", params={"per_page": 0}).status_code == 422
    assert c.get("/api/rounds", params={"page": 10**7}).status_code == 422
    far = c.get("/api/rounds", params={"page": 1000, "per_page": 100}).json()
    assert far["items"] == [] and far["total"] > 0
    TypeAdapter(m.RoundsPage).validate_python(far)

"""An outage at every non-chain step of an epoch ends that step with a logged, typed reason; the loop goes on.

Each test injects the real exception classes (or the real HTTP answers) of the libraries at one step -
admission's hub calls, the king's repo check, prompt sampling, pod dispatch and polling - through the real
adapters (``HuggingFaceStore`` on the loopback hub stand-in, ``FineWebSource``, ``HttpPod`` on an httpx
transport), runs a whole ``Validator.epoch()``, checks that nobody was judged and that the reason was
logged, then lifts the fault and checks that the next epoch gets on with it. Chain steps: test_chain_outages.
"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import httpx2
import pytest
from fixtures_contest import TEACHER, FakePod, seed
from fsspec.exceptions import FSTimeoutError
from hub_standin import FakeHub, hub_online
from huggingface_hub.utils import hf_raise_for_status

from eval.admission import TeacherSpec
from eval.fineweb import FineWebSource
from eval.model_store.huggingface import HuggingFaceStore
from eval.prompts import LocalCorpus
from validator.loop import LoopConfig, Validator
from validator.pod_client import HttpPod
from validator.store.database import Store


def _http_error(status: int, headers: dict[str, str] | None = None) -> Exception:
    """What huggingface_hub raises for this answer (its own ``hf_raise_for_status``)."""
    response = httpx2.Response(
        status, headers=headers or {}, request=httpx2.Request("GET", "https://huggingface.co/api/models/org/m")
    )
    try:
        hf_raise_for_status(response)
    except Exception as exc:  # noqa: BLE001 - returned to be raised at the injection point
        return exc
    raise AssertionError("not an error answer")


# (name, how the hub stand-in misbehaves or what the client raises, what the log must name)
HUB_FAULTS: list[tuple[str, Any, str]] = [
    ("503", 503, "HTTP 503"),
    ("429", 429, "HTTP 429"),
    ("expired_token", "expired_token", "HTTP 401"),
    ("bare_403", "bare_403", "HTTP 403"),
    ("connect_error", httpx2.ConnectError("[Errno 111] Connection refused"), "ConnectError"),
    ("read_timeout", httpx2.ReadTimeout("timed out"), "ReadTimeout"),
    ("protocol_error", httpx2.RemoteProtocolError("Server disconnected"), "RemoteProtocolError"),
    ("timeout", TimeoutError("timed out"), "TimeoutError"),
    ("connection_reset", ConnectionResetError(104, "Connection reset by peer"), "ConnectionResetError"),
]


class Hub:
    """The validator's HuggingFaceStore on the loopback stand-in, with one switch to break it."""

    def __init__(self, world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        hub_online(monkeypatch)
        self.fake = FakeHub(world.hub)
        self.store = HuggingFaceStore(endpoint=self.fake.url, token="hf_validator", timeout=5, listing_ttl_s=0)
        self._monkeypatch = monkeypatch

    def fail(self, fault: Any) -> None:
        if isinstance(fault, int):
            self.fake.fail_next = [fault] * 50
        elif fault == "expired_token":
            self.fake.valid_tokens = {"hf_renewed"}
        elif fault == "bare_403":
            self.fake.forbid_all = True
        else:

            def boom(*_a: Any, **_k: Any) -> Any:
                raise fault

            self._monkeypatch.setattr(self.store._api, "model_info", boom)

    def heal(self) -> None:
        self.fake.fail_next, self.fake.valid_tokens, self.fake.forbid_all = [], None, False
        self._monkeypatch.undo()
        hub_online(self._monkeypatch)


@pytest.fixture
def hub(world, monkeypatch):
    h = Hub(world, monkeypatch)
    yield h
    h.fake.close()


def _validator(world: Any, *, model_store: Any = None, prompts: Any = None, pod: Any = None) -> Validator:
    store = model_store or world.hub
    rev = world.revs[TEACHER]
    return Validator(
        world.sim,
        Store.open(world.db),
        store,
        pod or FakePod({"alice/m1": 0.5}),
        prompts or LocalCorpus(None),
        world.rules,
        lambda: TeacherSpec.from_store(store, TEACHER, rev),
        LoopConfig(epoch_blocks=1, poll_seconds=0.05, pod_deadline_s=30),
    )


def _nobody_judged(v: Validator) -> None:
    assert v.store.disqualifications() == []
    assert v.store._db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 0


def _logged(caplog: pytest.LogCaptureFixture, *needles: str) -> None:
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR"))
    assert all(n in text for n in needles), text[-2000:]


# --- admission's hub calls ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "fault", "marker"), HUB_FAULTS, ids=[f[0] for f in HUB_FAULTS])
def test_hub_outage_during_admission(world, hub, caplog, name, fault, marker):
    seed(world, ("m1", "alice/m1"))
    v = _validator(world, model_store=hub.store)
    hub.fail(fault)
    report = v.epoch()  # returns: the step ended, the loop goes on
    assert report.round_kind == "none" and report.weights == "no_king"
    assert v.store.submission(world.miners["m1"])[0].status == "pending"
    _nobody_judged(v)
    _logged(caplog, marker)
    if name in ("expired_token", "bare_403"):
        assert report.admission.hub_auth_error and v.store.meta()["hub_auth"] == "rejected"
    else:
        assert report.admission.transient
    hub.heal()
    world.sim.advance(50)  # past any backoff
    report = v.epoch()
    assert report.round_state == "done" and v.store.current_king().hotkey == world.miners["m1"]


# --- the king's repo check --------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "fault", "marker"), HUB_FAULTS, ids=[f[0] for f in HUB_FAULTS])
def test_hub_outage_during_the_kings_repo_check(world, hub, caplog, name, fault, marker):
    seed(world, ("m1", "alice/m1"))
    v = _validator(world, model_store=hub.store)
    assert v.epoch().round_state == "done"  # crowned
    world.sim.advance(1)
    hub.fail(fault)
    caplog.clear()
    report = v.epoch()
    king = v.store.current_king()
    assert king.hotkey == world.miners["m1"] and v.store.submission(king.hotkey)[0].strikes == 0
    assert v.store.disqualifications() == [] and report.weights in ("set", "not_due")
    _logged(caplog, marker)
    hub.heal()
    world.sim.advance(1)
    v.epoch()
    assert v.store.current_king().hotkey == world.miners["m1"]


# --- prompt sampling ----------------------------------------------------------------------------------------
def _parquet(docs: list[str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"text": docs}), buf, row_group_size=8)
    return buf.getvalue()


PROMPT_FAULTS: list[tuple[str, str, Any, str]] = [
    # (name, which seam, what it raises, what the log must name)
    ("dataset_not_found", "list", "DatasetNotFoundError", "DatasetNotFoundError"),
    ("hub_503", "list", _http_error(503), "HTTP 503"),
    (
        "hub_401",
        "list",
        _http_error(401, {"X-Error-Message": "Invalid credentials in Authorization header"}),
        "HF_TOKEN",
    ),
    ("connect_error", "open", httpx2.ConnectError("[Errno 111] Connection refused"), "ConnectError"),
    ("read_timeout", "open", httpx2.ReadTimeout("timed out"), "ReadTimeout"),
    ("fsspec_timeout", "open", FSTimeoutError(), "FSTimeoutError"),
    (
        "file_not_found",
        "open",
        FileNotFoundError("datasets/HuggingFaceFW/fineweb@x/sample/10BT/000.parquet"),
        "FileNotFoundError",
    ),
    ("corrupt_parquet", "open", b"PAR1 garbage PAR1", "ArrowInvalid"),
    ("untranslated", "open", RuntimeError("a bug in a library"), "RuntimeError"),
]


@pytest.mark.parametrize(("name", "seam", "fault", "marker"), PROMPT_FAULTS, ids=[f[0] for f in PROMPT_FAULTS])
def test_dataset_outage_during_prompt_sampling(world, caplog, name, seam, fault, marker):
    from datasets.exceptions import DatasetNotFoundError

    docs = [f"Document {i} begins. " + " ".join(f"Sentence {j} of document {i}." for j in range(8)) for i in range(40)]
    blob = _parquet(docs)
    broken = {"on": True}

    def list_files() -> list[tuple[str, int]]:
        if broken["on"] and seam == "list":
            raise (
                DatasetNotFoundError("Dataset 'HuggingFaceFW/fineweb' doesn't exist")
                if isinstance(fault, str)
                else fault
            )
        return [("sample/10BT/000_00000.parquet", len(blob))]

    def open_file(path: str, size: int) -> io.BytesIO:
        if broken["on"] and seam == "open":
            if isinstance(fault, bytes):
                return io.BytesIO(fault)
            raise fault
        return io.BytesIO(blob)

    seed(world, ("m1", "alice/m1"))
    v = _validator(world, prompts=FineWebSource(world.rules, list_files=list_files, open_file=open_file))
    report = v.epoch()
    assert report.round_state == "no_prompts" and report.round_kind == "first"
    assert report.prompts_error and report.weights == "no_king"
    assert v.store.rounds().total == 0  # no round was created, so none is left half-done
    _nobody_judged(v)
    _logged(caplog, "prompt sampling failed", marker)
    assert v.epoch().round_state == "no_prompts"  # backing off: the source is not asked in a tight loop
    broken["on"] = False
    world.sim.advance(5)
    report = v.epoch()
    assert report.round_state == "done" and v.store.current_king().hotkey == world.miners["m1"]


def test_a_rejected_token_while_listing_the_dataset_is_reported(world, monkeypatch, tmp_path):
    hub_online(monkeypatch)
    fake = FakeHub(world.hub)
    try:
        fake.add_dataset(world.rules.dataset, world.rules.dataset_revision, tmp_path / "empty")
        fake.valid_tokens = {"hf_renewed"}
        src = FineWebSource(world.rules, endpoint=fake.url, token="hf_expired")
        seed(world, ("m1", "alice/m1"))
        v = _validator(world, prompts=src)
        assert v.epoch().round_state == "no_prompts"
        assert v.store.meta()["hub_auth"] == "rejected" and "prompt sampling" in v.store.meta()["hub_auth_detail"]
    finally:
        fake.close()


# --- pod dispatch and polling ---------------------------------------------------------------------------------
POD_FAULTS: list[tuple[str, str, Any, str]] = [
    ("connect_error", "submit", httpx.ConnectError("[Errno 111] Connection refused"), "ConnectError"),
    ("submit_timeout", "submit", httpx.ConnectTimeout("timed out"), "ConnectTimeout"),
    ("submit_503", "submit", 503, "HTTP 503"),
    ("poll_read_timeout", "poll", httpx.ReadTimeout("timed out"), "ReadTimeout"),
    ("poll_disconnect", "poll", httpx.RemoteProtocolError("Server disconnected"), "RemoteProtocolError"),
    ("poll_502", "poll", 502, "HTTP 502"),
    ("job_failed", "poll", {"state": "failed", "error": "CUDA out of memory"}, "PodJobFailed"),
    ("garbage_status", "poll", b"<html>proxy error</html>", "InvalidResult"),
]


@pytest.mark.parametrize(("name", "where", "fault", "marker"), POD_FAULTS, ids=[f[0] for f in POD_FAULTS])
def test_pod_outage_during_dispatch_or_polling(world, caplog, name, where, fault, marker):
    def answer(request: httpx.Request) -> httpx.Response:
        job_id = json.loads(request.content)["job_id"] if request.method == "POST" else request.url.path.split("/")[-1]
        if where == "submit" or request.method == "GET":
            if isinstance(fault, Exception):
                raise fault
            if isinstance(fault, int):
                return httpx.Response(fault, text="bad gateway")
            if isinstance(fault, bytes):
                return httpx.Response(200, content=fault)
            return httpx.Response(200, json={"job_id": job_id, **fault})
        return httpx.Response(202, json={"job_id": job_id, "state": "queued"})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    pod = HttpPod(
        "http://pod.invalid:8091",
        world.wallet,
        client=client,
        sleep=lambda _s: None,
        down_grace_s=0,
        poll_interval=0.01,
        retries=2,
    )
    seed(world, ("m1", "alice/m1"))
    v = _validator(world, pod=pod)
    report = v.epoch()
    assert report.round_state == "failed" and report.weights == "no_king"
    assert v.store.rounds().items[0].state == "failed" and v.store.current_king() is None
    assert v.store.submission(world.miners["m1"])[0].status == "admitted"  # still in the queue
    _nobody_judged(v)
    _logged(caplog, "failed, nobody judged", marker)
    v.rounds.pod = FakePod({"alice/m1": 0.5})  # the pod is back
    world.sim.advance(1)
    assert v.epoch().round_state == "done" and v.store.current_king().hotkey == world.miners["m1"]

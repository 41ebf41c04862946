"""HuggingFaceStore against a real HTTP stand-in for the hub API on loopback (no internet)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from admission_fixtures import VOCAB, write_model, write_teacher
from hub_standin import FakeHub

import miner
from eval.admission import Admitted, Rejected, TeacherSpec, check_model
from eval.errors import TransientError
from eval.model_store.huggingface import HuggingFaceStore
from eval.model_store.local import LocalHub
from eval.model_store.port import RepoInaccessible, RepoNotFound, RevisionNotFound
from eval.rules import ContestRules

RULES = ContestRules(vocab_size=VOCAB)
TOKEN = "hf_secret_token_value"


@pytest.fixture
def online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the stand-in is on loopback


class _NoSleepTime:
    """The ``time`` module with ``sleep`` as a no-op: huggingface_hub's own retry back-off, without the wait."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(_seconds: float) -> None:
        return None


@pytest.fixture
def fake(tmp_path, online, monkeypatch):
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", _NoSleepTime())
    f = FakeHub(LocalHub(tmp_path / "hub"))
    yield f
    f.close()


@pytest.fixture
def teacher(tmp_path):
    return TeacherSpec.from_dir(write_teacher(tmp_path / "teacher"))


def test_admission_over_http_counts_calls_and_caches(fake, tmp_path, teacher):
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src", shards=4))
    store = HuggingFaceStore(endpoint=fake.url, token=TOKEN, timeout=5)
    out = check_model(store, "org/m", rev, RULES, teacher)
    assert isinstance(out, Admitted) and out.shards == 4
    # model_info + config.json + tokenizer_config.json (no LFS sha) + index + one range read per shard
    assert len(fake.calls) == store.http_calls == 1 + 1 + 1 + 1 + 4
    assert all(a == f"Bearer {TOKEN}" for a in fake.auth_seen)
    assert out.metadata_hash == check_model(fake.hub, "org/m", rev, RULES, teacher).metadata_hash
    before = len(fake.calls)
    assert check_model(store, "org/m", rev, RULES, teacher) == out
    assert len(fake.calls) == before  # an admitted revision costs zero HTTP calls
    assert TOKEN not in repr(store)


def test_resolve_and_exact_pins(fake, tmp_path):
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src"))
    store = HuggingFaceStore(endpoint=fake.url, timeout=5)
    assert store.resolve("org/m") == rev
    with pytest.raises(ValueError):
        store.files("org/m", "main")
    assert len(fake.calls) == 1


def test_definite_errors(fake, tmp_path, teacher):
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src"))
    store = HuggingFaceStore(endpoint=fake.url, timeout=5)
    with pytest.raises(RepoNotFound):
        store.files("org/none", rev)
    with pytest.raises(RevisionNotFound):
        store.files("org/m", "f" * 40)
    fake.gated.add("org/m")
    with pytest.raises(RepoInaccessible):
        store.files("org/m", rev)
    out = check_model(store, "org/m", rev, RULES, teacher, existed_before=True)
    assert (out.reason, out.check) == ("REMOVED", "availability")
    out = check_model(store, "org/none", rev, RULES, teacher)
    assert isinstance(out, Rejected) and (out.reason, out.check) == ("INVALID", "availability")


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_overload_is_transient_never_a_rejection(fake, tmp_path, teacher, status):
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src"))
    store = HuggingFaceStore(endpoint=fake.url, timeout=5)
    fake.fail_next = [status]
    with pytest.raises(TransientError):
        check_model(store, "org/m", rev, RULES, teacher, existed_before=True)
    assert isinstance(check_model(store, "org/m", rev, RULES, teacher), Admitted)  # retry later succeeds


def test_transient_error_in_a_header_read(fake, tmp_path, teacher):
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src", shards=2))
    store = HuggingFaceStore(endpoint=fake.url, timeout=5)
    store.files("org/m", rev)
    fake.fail_next = [503]
    with pytest.raises(TransientError):
        store.safetensors_header("org/m", rev, "model-00001-of-00002.safetensors")


def test_connection_refused_and_timeout_are_transient(online, tmp_path):
    store = HuggingFaceStore(endpoint="http://127.0.0.1:9", timeout=2)  # discard port: refused
    with pytest.raises(TransientError):
        store.files("org/m", "a" * 40)
    silent = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # accepts, never answers
    silent.RequestHandlerClass = type(
        "Mute", (BaseHTTPRequestHandler,), {"handle": lambda self: __import__("time").sleep(3)}
    )
    threading.Thread(target=silent.serve_forever, daemon=True).start()
    try:
        store = HuggingFaceStore(endpoint=f"http://127.0.0.1:{silent.server_address[1]}", timeout=0.5)
        with pytest.raises(TransientError):
            store.files("org/m", "a" * 40)
    finally:
        silent.shutdown()
        silent.server_close()


def test_big_header_needs_second_range_read(fake, tmp_path, teacher):
    import torch
    from admission_fixtures import tensors

    t = tensors() | {f"model.layers.0.extra_{i:05d}.weight": torch.zeros(1) for i in range(3000)}
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src", tensor_dict=t))
    store = HuggingFaceStore(endpoint=fake.url, timeout=5)
    h = store.safetensors_header("org/m", rev, "model.safetensors")
    assert h.header_len > 64 * 1024 and len(h.tensors) == len(t)
    assert store.http_calls == 3  # model_info + two range reads


def test_miner_check_through_hf_endpoint(fake, tmp_path, capsys):
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src"))
    teacher_dir = write_teacher(tmp_path / "teacher")
    code = miner.main(
        ["check", "--model", f"org/m@{rev}", "--teacher", str(teacher_dir), "--json", "--hf-endpoint", fake.url]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["ok"] and doc["params"] > 0
    fake.fail_next = [503, 503]
    assert miner.main(["check", "--model", "org/m", "--teacher", str(teacher_dir), "--hf-endpoint", fake.url]) == 2
    human = capsys.readouterr().out
    assert human.startswith("TRY AGAIN LATER org/m [transient]") and "nothing is known to be wrong" in human


@pytest.mark.parametrize("status", [429, 503])
def test_miner_check_outage_is_no_verdict_exit_2(fake, tmp_path, capsys, status):
    # An outage is neither "admissible" (0) nor "not admissible" (1, LESSONS 21): exit 2, check "transient".
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src", shards=2))
    teacher_dir = write_teacher(tmp_path / "teacher")
    fake.fail_files = [status] * 50  # the listing answers; every file read fails
    code = miner.main(
        ["check", "--model", f"org/m@{rev}", "--teacher", str(teacher_dir), "--json", "--hf-endpoint", fake.url]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 2
    assert doc == {
        "ok": False,
        "reason": None,
        "check": "transient",
        "detail": doc["detail"],
        "params": None,
        "content_hash": None,
    }
    assert "try again later" in doc["detail"] and TOKEN not in doc["detail"]
    fake.fail_files = []
    assert (
        miner.main(["check", "--model", f"org/m@{rev}", "--teacher", str(teacher_dir), "--hf-endpoint", fake.url]) == 0
    )


def _publish_with_unsafe_files(fake, tmp_path):
    src = write_model(tmp_path / "src")
    (src / "modeling_evil.py").write_text("raise SystemExit('never run')\n")
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    return fake.hub.publish("org/m", src)


def test_download_fetches_only_allowed_patterns_at_the_pinned_revision(fake, tmp_path):
    first = _publish_with_unsafe_files(fake, tmp_path)
    second = fake.hub.publish("org/m", write_model(tmp_path / "src2", shards=2))  # main moves on
    assert second != first
    store = HuggingFaceStore(endpoint=fake.url, token=TOKEN, timeout=5)
    dest = tmp_path / "dl"
    out = store.download("org/m", first, dest, ["*.json", "*.safetensors"])
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert got == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    fetched = [c for c in fake.calls if "/resolve/" in c]
    assert fetched and all(f"/resolve/{first}/" in c for c in fetched)  # the pin, never main
    assert not any(c.endswith((".py", ".bin")) for c in fake.calls)  # never even asked for
    for name in got:
        assert (out / name).read_bytes() == (fake.hub.root / "org/m" / first / name).read_bytes()
    assert all(a == f"Bearer {TOKEN}" for a in fake.auth_seen)


@pytest.mark.parametrize("where", ["listing", "file"])
def test_download_overload_is_transient(fake, tmp_path, where):
    rev = _publish_with_unsafe_files(fake, tmp_path)
    store = HuggingFaceStore(endpoint=fake.url, timeout=5)
    if where == "listing":
        fake.fail_next = [503] * 8  # more than any client-side retry would absorb
    else:
        fake.fail_files = [503] * 100  # every try of every file
    with pytest.raises(TransientError):
        store.download("org/m", rev, tmp_path / "dl", ["*.json", "*.safetensors"])


def test_safetensors_outside_lfs_is_invalid_not_a_crash(fake, tmp_path, teacher):
    # No sha256 for a shard: the metadata hash (exact-copy detection) cannot be formed; fail closed, do not raise.
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src", shards=2))
    fake.no_lfs.add("model-00002-of-00002.safetensors")
    out = check_model(HuggingFaceStore(endpoint=fake.url, timeout=5), "org/m", rev, RULES, teacher)
    assert isinstance(out, Rejected) and (out.reason, out.check) == ("INVALID", "files")
    assert "model-00002-of-00002.safetensors" in out.detail and "LFS" in out.detail


# --- the validator's own credentials are never the repo's fault (LESSONS 28) -----------------------------
@pytest.mark.parametrize("problem", ["expired_token", "bare_403"])
def test_rejected_token_gives_no_verdict_even_for_the_king(fake, tmp_path, teacher, problem):
    from eval.errors import HubAuthError

    rev = fake.hub.publish("org/m", write_model(tmp_path / "src"))
    if problem == "expired_token":
        fake.valid_tokens = {"hf_the_valid_one"}  # TOKEN is unknown to the hub: 401, no repository error code
    else:
        fake.forbid_all = True  # a token without read permission: a bare 403
    store = HuggingFaceStore(endpoint=fake.url, token=TOKEN, timeout=5)
    with pytest.raises(HubAuthError, match="HF_TOKEN") as info:
        store.files("org/m", rev)
    assert TOKEN not in str(info.value)
    with pytest.raises(TransientError):  # neither INVALID for a new submission nor REMOVED for the king
        check_model(store, "org/m", rev, RULES, teacher, existed_before=True)
    with pytest.raises(HubAuthError):
        store.download("org/m", rev, tmp_path / "dl", ["*.json"])
    fake.valid_tokens, fake.forbid_all = None, False
    assert isinstance(check_model(store, "org/m", rev, RULES, teacher), Admitted)


def test_private_or_missing_repo_stays_definite_with_or_without_a_token(fake, tmp_path, teacher):
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src"))
    fake.private.add("org/m")
    for token in (None, TOKEN):  # 401 + RepoNotFound anonymously, 404 + RepoNotFound with a token
        store = HuggingFaceStore(endpoint=fake.url, token=token, timeout=5)
        with pytest.raises(RepoNotFound):
            store.files("org/m", rev)
        out = check_model(store, "org/m", rev, RULES, teacher, existed_before=True)
        assert (out.reason, out.check) == ("REMOVED", "availability")
        with pytest.raises(RepoNotFound):
            store.download("org/m", rev, tmp_path / "dl", ["*.json"])


def test_disabled_repo_is_definite_in_listing_and_in_download(fake, tmp_path, teacher):
    # snapshot_download wraps the hub's 403 "disabled" in LocalEntryNotFoundError; the cause decides.
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src"))
    fake.disabled.add("org/m")
    store = HuggingFaceStore(endpoint=fake.url, token=TOKEN, timeout=5)
    with pytest.raises(RepoInaccessible, match="disabled"):
        store.download("org/m", rev, tmp_path / "dl", ["*.json", "*.safetensors"])
    with pytest.raises(RepoInaccessible, match="disabled"):
        store.files("org/m", rev)
    out = check_model(store, "org/m", rev, RULES, teacher, existed_before=True)
    assert (out.reason, out.check) == ("REMOVED", "availability")


def test_download_from_an_unreachable_hub_stays_transient(online, tmp_path, monkeypatch):
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", _NoSleepTime())  # the library's own retries, without the wait
    store = HuggingFaceStore(endpoint="http://127.0.0.1:9", timeout=2)  # refused: LocalEntryNotFoundError
    with pytest.raises(TransientError) as info:
        store.download("org/m", "a" * 40, tmp_path / "dl", ["*.json"])
    assert not isinstance(info.value, RepoInaccessible)


def test_the_listing_expires_so_the_kings_repo_check_asks_again(fake, tmp_path, teacher):
    rev = fake.hub.publish("org/m", write_model(tmp_path / "src", shards=2))
    now = [0.0]
    store = HuggingFaceStore(endpoint=fake.url, timeout=5, listing_ttl_s=60, clock=lambda: now[0])
    assert isinstance(check_model(store, "org/m", rev, RULES, teacher), Admitted)
    calls = store.http_calls
    now[0] = 59.0
    store.files("org/m", rev)
    assert store.http_calls == calls  # within the TTL: cached
    now[0] = 61.0
    fake.hub.delete("org/m")  # the owner deletes the repo
    with pytest.raises(RepoNotFound):
        store.files("org/m", rev)  # a fresh answer: LESSONS 20 (a vanished king is noticed)
    assert store.http_calls == calls + 1

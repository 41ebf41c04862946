"""HuggingFaceStore against a real HTTP stand-in for the hub API on loopback (no internet)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from admission_fixtures import VOCAB, write_model, write_teacher

import miner
from eval.admission import Admitted, Rejected, TeacherSpec, check_model
from eval.errors import TransientError
from eval.hf_store import HuggingFaceStore
from eval.rules import ContestRules
from eval.stores import LocalHub, RepoInaccessible, RepoNotFound, RevisionNotFound

RULES = ContestRules(vocab_size=VOCAB)
TOKEN = "hf_secret_token_value"


class FakeHub:
    """Serves a LocalHub's content with the hub's URL layout, error codes and Range semantics."""

    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub
        self.calls: list[str] = []
        self.fail_next: list[int] = []  # statuses to answer before serving normally
        self.gated: set[str] = set()
        self.no_lfs: set[str] = set()  # files listed as plain git files (no LFS sha256)
        self.fail_files: list[int] = []  # statuses to answer on file requests (HEAD/GET .../resolve/...) only
        self.auth_seen: list[str | None] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                fake.calls.append(self.path)
                fake.auth_seen.append(self.headers.get("Authorization"))
                if fake.fail_next:
                    return self._send(fake.fail_next.pop(0), b"busy")
                m = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/?]+)", self.path)
                if m:
                    return self._tree(*m.groups())
                m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/?]+))?", self.path)
                if m:
                    return self._info(m.group(1), m.group(2) or "main")
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path)
                if m and fake.fail_files:
                    return self._send(fake.fail_files.pop(0), b"busy")
                if m:
                    return self._file(*m.groups())
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"})

            def do_HEAD(self):  # noqa: N802  (what hf_hub_download asks before a GET: commit, etag, size)
                fake.calls.append("HEAD " + self.path)
                if fake.fail_next or fake.fail_files:
                    return self._send((fake.fail_next or fake.fail_files).pop(0), b"", head=True)
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path)
                rev = self._resolve(*m.groups()[:2]) if m else None
                if rev is None:
                    return None if m else self._send(404, b"", head=True)
                data = (fake.hub.root / m.group(1) / rev / m.group(3)).read_bytes()
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                headers = {"X-Repo-Commit": rev, "ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(len(data))}
                self._send(200, data, headers, head=True)

            def _tree(self, repo, ref):
                rev = self._resolve(repo, ref)
                if rev is None:
                    return
                entries = []
                for f in fake.hub.files(repo, rev):
                    e = {"type": "file", "path": f.path, "size": f.size, "oid": "0" * 40}
                    if f.sha256:
                        e["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
                    entries.append(e)
                self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

            def _send(self, status, body, headers=None, head=False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _resolve(self, repo, ref):
                if repo in fake.gated:
                    self._send(403, b"gated", {"X-Error-Code": "GatedRepo"})
                    return None
                try:
                    return fake.hub.resolve(repo, ref)
                except RepoNotFound:
                    self._send(404, b"", {"X-Error-Code": "RepoNotFound"})
                except (RevisionNotFound, ValueError):
                    self._send(404, b"", {"X-Error-Code": "RevisionNotFound"})
                return None

            def _info(self, repo, ref):
                rev = self._resolve(repo, ref)
                if rev is None:
                    return
                sib = []
                for f in fake.hub.files(repo, rev):
                    s = {"rfilename": f.path, "size": f.size, "blobId": "0" * 40}
                    if f.path.endswith((".safetensors", "tokenizer.json")) and f.path not in fake.no_lfs:
                        s["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
                    sib.append(s)
                body = {"id": repo, "sha": rev, "private": False, "gated": False, "disabled": False, "siblings": sib}
                self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

            def _file(self, repo, ref, path):
                rev = self._resolve(repo, ref)
                if rev is None:
                    return
                data = (fake.hub.root / repo / rev / path).read_bytes()
                rng = self.headers.get("Range")
                if rng:
                    a, b = (int(x) for x in rng.removeprefix("bytes=").split("-"))
                    return self._send(206, data[a : b + 1], {"Content-Range": f"bytes {a}-{b}/{len(data)}"})
                self._send(200, data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


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
    f.server.shutdown()
    f.server.server_close()


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
    code = miner.main(["check", "--model", f"org/m@{rev}", "--teacher", str(teacher_dir), "--json",
                       "--hf-endpoint", fake.url])  # fmt: skip
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
    code = miner.main(["check", "--model", f"org/m@{rev}", "--teacher", str(teacher_dir), "--json",
                       "--hf-endpoint", fake.url])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert code == 2
    assert doc == {"ok": False, "reason": None, "check": "transient", "detail": doc["detail"], "params": None,
                   "content_hash": None}  # fmt: skip
    assert "try again later" in doc["detail"] and TOKEN not in doc["detail"]
    fake.fail_files = []
    assert miner.main(["check", "--model", f"org/m@{rev}", "--teacher", str(teacher_dir), "--hf-endpoint",
                       fake.url]) == 0  # fmt: skip


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

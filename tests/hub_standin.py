"""A loopback stand-in for the Hugging Face hub: the URL layout, status codes, error headers and Range
semantics that huggingface_hub 2.4.0 reads (``utils/_http.py::hf_raise_for_status``).

Models come from a ``LocalHub``; datasets from plain directories (``add_dataset``). Error answers copy the
hub's: ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``),
``X-Error-Message`` and a JSON body ``{"error": ...}``. An unknown token gets the hub's 401 "Invalid
credentials in Authorization header" (no error code) on every route, public repos included; a missing or
private repo is 401 + ``RepoNotFound`` without a token and 404 + ``RepoNotFound`` with one; a disabled repo
is 403 with the exact "disabled" message.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from eval.model_store.errors import DISABLED_MESSAGE, INVALID_CREDENTIALS
from eval.model_store.local import LocalHub
from eval.model_store.port import RepoNotFound, RevisionNotFound

_KIND = r"(models|datasets)"


class FakeHub:
    """Serves a LocalHub's models (and registered dataset directories) as the hub does; records every call."""

    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub
        self.calls: list[str] = []
        self.fail_next: list[int] = []  # statuses to answer before serving normally
        self.gated: set[str] = set()
        self.disabled: set[str] = set()
        self.private: set[str] = set()
        self.no_lfs: set[str] = set()  # files listed as plain git files (no LFS sha256)
        self.fail_files: list[int] = []  # statuses to answer on file requests (HEAD/GET .../resolve/...) only
        self.auth_seen: list[str | None] = []
        self.valid_tokens: set[str] | None = None  # None: any token is accepted
        self.forbid_all = False  # a token without read permission: a bare 403 on every route
        self.datasets: dict[str, dict[str, Path]] = {}  # repo -> revision -> directory
        self.bytes_sent: dict[str, int] = {}  # file path -> body bytes served
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def add_dataset(self, repo: str, revision: str, directory: Path) -> None:
        self.datasets.setdefault(repo, {})[revision] = Path(directory)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(fake: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:  # quiet
            pass

        # --- routing ---------------------------------------------------------------------------------
        def do_GET(self) -> None:  # noqa: N802
            self._route(head=False)

        def do_HEAD(self) -> None:  # noqa: N802  (what hf_hub_download asks before a GET: commit, etag, size)
            self._route(head=True)

        def _route(self, head: bool) -> None:
            with fake.lock:
                fake.calls.append(("HEAD " if head else "") + self.path)
                fake.auth_seen.append(self.headers.get("Authorization"))
            if self._refused(head):
                return None
            path = urlparse(self.path).path
            file_route = re.match(r"^/(?:(datasets)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
            if fake.fail_next or (file_route and fake.fail_files):
                return self._send((fake.fail_next or fake.fail_files).pop(0), b"busy", head=head)
            if head and not file_route:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head=True)
            m = re.match(rf"^/api/{_KIND}/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$", path)
            if m:
                return self._tree(m.group(1), m.group(2), m.group(3), unquote(m.group(4) or ""), self.path)
            m = re.match(rf"^/api/{_KIND}/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
            if m:
                return self._info(m.group(1), m.group(2), m.group(3) or "main")
            if file_route:
                kind = "datasets" if file_route.group(1) else "models"
                return self._file(kind, file_route.group(2), file_route.group(3), unquote(file_route.group(4)), head)
            return self._error(404, "EntryNotFound", "Entry not found", head)

        # --- the hub's refusals ----------------------------------------------------------------------
        def _refused(self, head: bool) -> bool:
            auth = self.headers.get("Authorization") or ""
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
            if token is not None and fake.valid_tokens is not None and token not in fake.valid_tokens:
                self._error(401, None, INVALID_CREDENTIALS, head)
                return True
            if fake.forbid_all:
                self._error(403, None, "This authentication method does not have sufficient permissions", head)
                return True
            return False

        def _error(self, status: int, code: str | None, message: str, head: bool = False) -> None:
            headers = {"X-Error-Message": message, "Content-Type": "application/json"}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _resolve(self, kind: str, repo: str, ref: str, head: bool = False) -> str | None:
            """The commit for ``ref``, or None after answering the hub's error for this repo."""
            authed = bool(self.headers.get("Authorization"))
            missing = (404 if authed else 401, "RepoNotFound", "Repository not found")
            if repo in fake.disabled:
                self._error(403, None, DISABLED_MESSAGE, head)
                return None
            if repo in fake.gated:
                self._error(403, "GatedRepo", f"Access to {repo} is restricted", head)
                return None
            if repo in fake.private:
                self._error(*missing, head)
                return None
            if kind == "datasets":
                revs = fake.datasets.get(repo)
                if revs is None:
                    self._error(*missing, head)
                    return None
                if ref not in revs:
                    self._error(404, "RevisionNotFound", "Invalid rev id", head)
                    return None
                return ref
            try:
                return fake.hub.resolve(repo, ref)
            except RepoNotFound:
                self._error(*missing, head)
            except (RevisionNotFound, ValueError):
                self._error(404, "RevisionNotFound", "Invalid rev id", head)
            return None

        def _root(self, kind: str, repo: str, rev: str) -> Path:
            return fake.datasets[repo][rev] if kind == "datasets" else fake.hub.root / repo / rev

        # --- answers ---------------------------------------------------------------------------------
        def _listing(self, kind: str, repo: str, rev: str) -> list[tuple[str, int, str | None]]:
            if kind == "models":
                return [(f.path, f.size, f.sha256) for f in fake.hub.files(repo, rev)]
            root = self._root(kind, repo, rev)
            out = []
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    out.append(
                        (p.relative_to(root).as_posix(), p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
                    )
            return out

        def _tree(self, kind: str, repo: str, ref: str, under: str, raw: str) -> None:
            rev = self._resolve(kind, repo, ref)
            if rev is None:
                return
            recursive = parse_qs(urlparse(raw).query).get("recursive", ["False"])[0].lower() == "true"
            prefix = under.strip("/") + "/" if under.strip("/") else ""
            files = [f for f in self._listing(kind, repo, rev) if f[0].startswith(prefix)]
            if under and not files:
                return self._error(404, "EntryNotFound", f"{under} does not exist on {rev}")
            entries: list[dict[str, Any]] = []
            dirs: set[str] = set()
            for path, size, sha in files:
                rest = path[len(prefix) :]
                if not recursive and "/" in rest:
                    dirs.add(prefix + rest.split("/")[0])
                    continue
                e: dict[str, Any] = {"type": "file", "path": path, "size": size, "oid": "0" * 40}
                if sha and (kind == "datasets" or path.endswith((".safetensors", "tokenizer.json"))):
                    e["lfs"] = {"oid": sha, "size": size, "pointerSize": 134}
                entries.append(e)
            entries += [{"type": "directory", "path": d, "size": 0, "oid": "0" * 40} for d in sorted(dirs)]
            self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

        def _info(self, kind: str, repo: str, ref: str) -> None:
            rev = self._resolve(kind, repo, ref)
            if rev is None:
                return
            sib = []
            for path, size, sha in self._listing(kind, repo, rev):
                s: dict[str, Any] = {"rfilename": path, "size": size, "blobId": "0" * 40}
                if kind == "models" and path.endswith((".safetensors", "tokenizer.json")) and path not in fake.no_lfs:
                    s["lfs"] = {"sha256": sha, "size": size, "pointerSize": 134}
                sib.append(s)
            body = {"id": repo, "sha": rev, "private": False, "gated": False, "disabled": False, "siblings": sib}
            self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

        def _file(self, kind: str, repo: str, ref: str, path: str, head: bool) -> None:
            rev = self._resolve(kind, repo, ref, head)
            if rev is None:
                return
            target = self._root(kind, repo, rev) / path
            if not target.is_file():
                return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", head)
            data = target.read_bytes()
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            headers = {
                "X-Repo-Commit": rev,
                "ETag": etag,
                "X-Linked-Etag": etag,
                "X-Linked-Size": str(len(data)),
                "Accept-Ranges": "bytes",
            }
            rng = self.headers.get("Range")
            status, body = 200, data
            if rng and not head:
                a, b = rng.removeprefix("bytes=").split("-")
                lo, hi = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
                status, body = 206, data[lo : hi + 1]
                headers["Content-Range"] = f"bytes {lo}-{hi}/{len(data)}"
            if not head:
                with fake.lock:
                    fake.bytes_sent[path] = fake.bytes_sent.get(path, 0) + len(body)
            self._send(status, body, headers, head=head)

    return Handler


class NoSleepTime:
    """The ``time`` module with ``sleep`` as a no-op: huggingface_hub's own retry back-off, without the wait."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(_seconds: float) -> None:
        return None


def hub_online(monkeypatch: Any) -> None:
    """Let huggingface_hub talk to the loopback stand-in (tests run with HF_HUB_OFFLINE=1), retrying without waits."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(_http, "time", NoSleepTime())

"""The pod's authentication dependency: no route but the public one runs unsigned; refusal order and codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from scripts.pod_fixtures import make_job, make_wallet
from tests.pod_helpers import ScriptedRunner
from validator.pod import signing
from validator.pod.auth import signed_request
from validator.pod.server import PodSettings, create_app

PUBLIC = {("GET", "/health")}  # version, state, GPU, free disk, kernels: nothing to sign for


@pytest.fixture(scope="module")
def wallets(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("wallets")
    return make_wallet(root, "validator"), make_wallet(root, "stranger")


def make_app(tmp_path: Path, wallets, **kw) -> FastAPI:
    settings = PodSettings(allow_hotkeys=frozenset({wallets[0].hotkey.ss58_address}), workdir=tmp_path, **kw)
    return create_app(settings, runner=ScriptedRunner())


def unsigned_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) whose route does not depend, at any depth, on ``signed_request``."""

    def signed(dependant) -> bool:  # type: ignore[no-untyped-def]
        return any(d.call is signed_request or signed(d) for d in dependant.dependencies)

    return sorted(
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and not signed(route.dependant)
        for method in route.methods
    )


def test_every_route_but_health_requires_a_signature(tmp_path, wallets):
    app = make_app(tmp_path, wallets)
    assert set(unsigned_routes(app)) == PUBLIC
    assert {("POST", "/jobs"), ("GET", "/jobs/{job_id}"), ("DELETE", "/jobs/{job_id}")} <= {
        (m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods
    }


def test_a_route_added_without_the_dependency_is_caught(tmp_path, wallets):
    app = make_app(tmp_path, wallets)

    @app.get("/jobs")
    def list_jobs() -> list[str]:
        return []

    assert ("GET", "/jobs") in unsigned_routes(app)


def test_refusals_come_in_order_size_then_signature_then_allow_list(tmp_path, wallets):
    validator, stranger = wallets
    deep = b"[" * 40 + b"]" * 40  # nested deeper than the pod parses (422)
    with TestClient(make_app(tmp_path, wallets, max_body_bytes=8192)) as client:
        # an oversize body is refused before its (bad) signature is even checked
        huge = b"x" * 10_000
        resp = client.post("/jobs", content=huge, headers=signing.sign_request(validator, "POST", "/jobs", b""))
        assert resp.status_code == 413 and resp.json() == {"error": "body larger than 8192 bytes"}
        # a bad signature is refused before the body is parsed (it would be a 422)
        resp = client.post("/jobs", content=deep, headers=signing.sign_request(validator, "POST", "/jobs", b"[]"))
        assert resp.status_code == 401 and resp.json()["error"].startswith("BadSignature")
        # a stranger's valid signature is refused before the body is parsed, and before a job id is looked up
        resp = client.post("/jobs", content=deep, headers=signing.sign_request(stranger, "POST", "/jobs", deep))
        assert resp.status_code == 403 and resp.json() == {"error": "hotkey not allowed"}
        for method in ("GET", "DELETE"):
            headers = signing.sign_request(stranger, method, "/jobs/bad!id")
            assert client.request(method, "/jobs/bad!id", headers=headers).status_code == 403
        # the validator passes all three: the route itself answers
        assert (
            client.post(
                "/jobs", content=deep, headers=signing.sign_request(validator, "POST", "/jobs", deep)
            ).status_code
            == 422
        )
        body = make_job("a-1").model_dump_json().encode()
        assert (
            client.post(
                "/jobs", content=body, headers=signing.sign_request(validator, "POST", "/jobs", body)
            ).status_code
            == 202
        )
        assert client.get("/health").status_code == 200
        assert client.get("/nowhere").json() == {"detail": "Not Found"}  # FastAPI's own 404 is untouched

"""The signing contract: what is signed, the receiver binding, the freshness window, one definition."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from bittensor import http_auth

from scripts.pod_fixtures import make_wallet
from validator.pod import signing
from validator.pod.auth import open_nonces

ROOT = Path(__file__).resolve().parents[1]
BODY = b'{"job_id": "s-1"}'


@pytest.fixture(scope="module")
def wallets(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("wallets")
    return make_wallet(root, "host"), make_wallet(root, "pod-a"), make_wallet(root, "pod-b")


def ss58(wallet) -> str:
    return str(wallet.hotkey.ss58_address)


def verify(headers, body=BODY, method="POST", target="/jobs", receiver=None, now_ns=None):
    nonces = http_auth.InMemoryNonceStore(retention=signing.nonce_retention())
    return signing.verify_request(
        headers, body, method=method, target=target, receiver_ss58=receiver, nonces=nonces, now_ns=now_ns
    )


def test_method_target_and_body_are_signed(wallets):
    host = wallets[0]
    headers = signing.sign_request(host, "POST", "/jobs", BODY)
    assert verify(headers).hotkey_ss58 == ss58(host)
    for change in ({"method": "PUT"}, {"target": "/jobs/x"}, {"body": BODY + b" "}):
        with pytest.raises(http_auth.BadSignature):
            verify(headers, **change)


def test_the_query_string_is_part_of_the_target(wallets):
    assert signing.request_target("/jobs/a", "") == "/jobs/a"
    target = signing.request_target("/jobs/a", "wait=1")
    headers = signing.sign_request(wallets[0], "GET", target)
    verify(headers, b"", "GET", target)
    with pytest.raises(http_auth.BadSignature):
        verify(headers, b"", "GET", "/jobs/a")


def test_a_pod_with_a_hotkey_takes_only_requests_bound_to_it(wallets):
    host, pod_a, pod_b = wallets
    bound = signing.sign_request(host, "POST", "/jobs", BODY, ss58(pod_a))
    assert verify(bound, receiver=ss58(pod_a)).hotkey_ss58 == ss58(host)
    with pytest.raises(http_auth.WrongReceiver):  # captured on its way to pod A, replayed to pod B
        verify(bound, receiver=ss58(pod_b))
    with pytest.raises(http_auth.WrongReceiver):  # unbound: could be replayed to any pod
        verify(signing.sign_request(host, "POST", "/jobs", BODY), receiver=ss58(pod_a))
    with pytest.raises(http_auth.WrongReceiver):  # bound to a pod, sent to one without a hotkey
        verify(bound)


def test_freshness_window(wallets):
    headers = signing.sign_request(wallets[0], "POST", "/jobs", BODY)
    nonce = int(headers[signing.HEADER_NONCE])
    verify(headers, now_ns=nonce + int((signing.MAX_AGE_S - 0.5) * 1e9))
    with pytest.raises(http_auth.StaleRequest, match="older"):
        verify(headers, now_ns=nonce + int((signing.MAX_AGE_S + 0.5) * 1e9))
    verify(headers, now_ns=nonce - int((signing.ALLOWED_SKEW_S - 0.5) * 1e9))
    with pytest.raises(http_auth.StaleRequest, match="future"):
        verify(headers, now_ns=nonce - int((signing.ALLOWED_SKEW_S + 0.5) * 1e9))


@pytest.mark.parametrize("max_age_s", [1.0, signing.MAX_AGE_S, 55.0, 600.0])
def test_nonces_are_kept_for_the_whole_window(wallets, tmp_path, max_age_s):
    """The pod's durable store outlives every accepted nonce's window, so a replay inside it is always seen."""
    assert signing.nonce_retention(max_age_s) >= max_age_s + signing.ALLOWED_SKEW_S
    store = open_nonces(tmp_path, max_age_s)
    headers = signing.sign_request(wallets[0], "GET", "/jobs/a")
    kw = {"method": "GET", "target": "/jobs/a", "receiver_ss58": None, "nonces": store, "max_age_s": max_age_s}
    signing.verify_request(headers, b"", **kw)  # the SDK refuses a store that retains less than the window
    with pytest.raises(http_auth.ReplayedRequest):
        signing.verify_request(headers, b"", **kw)


def _header_literal(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and "x-bittensor-" in node.value.lower()


def _contract_uses(path: Path) -> list[str]:
    """Code (not prose) that signs, verifies or spells a header or window of btauth/1 by itself."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "http_auth":
            if node.attr in ("sign", "verify", "InMemoryNonceStore") or node.attr.startswith(("DEFAULT_", "HEADER_")):
                found.append(f"{where}: http_auth.{node.attr}")
        elif _header_literal(node) and id(node) not in docstrings:
            found.append(f"{where}: {getattr(node, 'value', '')!r}")
    return found


def test_the_contract_is_defined_only_in_the_signing_module():
    """Host and pod sign and verify through ``validator.pod.signing``; no second copy of a header or window."""
    files = sorted([*(ROOT / "validator").rglob("*.py"), *(ROOT / "eval").rglob("*.py"), ROOT / "miner.py"])
    offenders = [
        use for path in files if path != ROOT / "validator" / "pod" / "signing.py" for use in _contract_uses(path)
    ]
    assert offenders == []

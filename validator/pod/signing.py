"""The signing contract between the host and its pods, in one place (btauth/1, ``bittensor.http_auth``).

What is signed: the HTTP method, the request target (path plus ``?query`` exactly as sent) and
the sha256 of the raw body bytes, with a nanosecond-timestamp nonce, the sender's hotkey and the
receiver's hotkey when the host binds a pod to one (``--pod URL#HOTKEY``). A pod started with
its own hotkey refuses requests signed for no receiver or another one, so a job captured on
the way to one pod cannot be replayed to another.

Freshness: a nonce older than ``MAX_AGE_S`` or more than ``ALLOWED_SKEW_S`` ahead of the pod's
clock is refused; accepted nonces are remembered for ``nonce_retention(max_age_s)`` seconds,
which always covers the whole window (the SDK refuses a store that retains less).

Why a module of its own: the host's client signs and the pod verifies, and a constant that
drifts between the two (a header name, the window, what goes into the target) refuses every
job, or worse, accepts a replay. Both sides import these names; neither defines its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bittensor import http_auth

HEADER_VERSION = http_auth.HEADER_VERSION
HEADER_HOTKEY = http_auth.HEADER_HOTKEY
HEADER_RECEIVER = http_auth.HEADER_RECEIVER
HEADER_NONCE = http_auth.HEADER_NONCE
HEADER_CRYPTO = http_auth.HEADER_CRYPTO
HEADER_SIGNATURE = http_auth.HEADER_SIGNATURE
HEADERS = (HEADER_VERSION, HEADER_HOTKEY, HEADER_RECEIVER, HEADER_NONCE, HEADER_CRYPTO, HEADER_SIGNATURE)

MAX_AGE_S = http_auth.DEFAULT_MAX_AGE
"""How old a nonce may be when the pod sees it (seconds); the pod's default freshness window."""
ALLOWED_SKEW_S = http_auth.DEFAULT_ALLOWED_SKEW
"""How far ahead of the pod's clock a nonce may be (the signer's clock runs fast)."""
MIN_NONCE_RETENTION_S = 60.0
RETENTION_MARGIN_S = 10.0

AuthError = http_auth.AuthError
Caller = http_auth.Caller
NonceStore = http_auth.NonceStore


def nonce_retention(max_age_s: float = MAX_AGE_S) -> float:
    """Seconds a pod remembers an accepted nonce: the window plus a margin larger than the skew, at least a minute."""
    return max(MIN_NONCE_RETENTION_S, max_age_s + RETENTION_MARGIN_S)


def request_target(path: str, query: str = "") -> str:
    """The request target as signed: the path, plus ``?query`` when there is one."""
    return path + (f"?{query}" if query else "")


def sign_request(
    wallet: Any, method: str, target: str, body: bytes = b"", receiver_ss58: str | None = None
) -> dict[str, str]:
    """The btauth/1 headers for one request; sign again (a fresh nonce) for every retry."""
    return http_auth.sign(wallet, method=method, path=target, body=body, receiver_ss58=receiver_ss58)


def verify_request(
    headers: Mapping[str, str],
    body: bytes,
    *,
    method: str,
    target: str,
    receiver_ss58: str | None,
    nonces: NonceStore,
    max_age_s: float = MAX_AGE_S,
    now_ns: int | None = None,
) -> Caller:
    """The authenticated caller, or an ``AuthError`` subclass saying why not.

    ``body`` is the raw received bytes (hashed before any parsing). With ``receiver_ss58`` None the
    pod has no hotkey of its own and accepts unbound requests; with one, only requests bound to it.
    """
    return http_auth.verify(
        headers,
        body,
        method=method,
        path=target,
        self_hotkey_ss58=receiver_ss58 or "",
        require_receiver=receiver_ss58 is not None,
        max_age=max_age_s,
        allowed_skew=ALLOWED_SKEW_S,
        nonce_store=nonces,
        now_ns=now_ns,
    )

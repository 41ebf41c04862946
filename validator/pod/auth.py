"""The pod's authentication as a FastAPI dependency: a route that takes ``Signed`` cannot run unsigned.

Order, for every signed route: the body is read with a bound (413 without reading the rest),
the signature is verified over those raw bytes before anything is parsed (401: unsigned,
malformed, stale, replayed, tampered, bound to another pod), then the allow-list (403). Only
then does the route see the body. Refusals answer ``{"error": ...}`` like every other pod error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from validator.pod import signing
from validator.pod.nonce_store import SqliteNonceStore

log = logging.getLogger(__name__)


class Refused(Exception):
    """A request the pod will not serve; the handler turns it into ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class SignedRequest:
    """A verified call: who sent it and the exact bytes that were signed."""

    hotkey_ss58: str
    body: bytes


@dataclass(frozen=True)
class PodAuth:
    """Who the pod obeys and how it checks: the allow-list, its own hotkey, the window, the seen nonces."""

    allow_hotkeys: frozenset[str]
    pod_hotkey: str | None
    max_age_s: float
    max_body_bytes: int
    nonces: signing.NonceStore


def open_nonces(workdir: Path, max_age_s: float) -> SqliteNonceStore:
    """Durable seen-nonce store: a request captured before a restart must not be replayable after it.

    An unusable file is moved aside and replaced by a store refusing everything signed before the reset.
    """
    return SqliteNonceStore(
        workdir / "nonces.sqlite3",
        retention=signing.nonce_retention(max_age_s),
        future_skew=signing.ALLOWED_SKEW_S,
    )


def install(app: FastAPI, auth: PodAuth) -> None:
    """Make ``Signed`` work on ``app``: where it finds the settings, and how a refusal is answered."""
    app.state.auth = auth

    async def refused(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Refused)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    app.add_exception_handler(Refused, refused)


async def read_bounded(request: Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes; refuse early on a declared or streamed oversize body (413)."""
    too_large = Refused(413, f"body larger than {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def signed_request(request: Request) -> SignedRequest:
    """The dependency: the bounded body, verified, from an allow-listed hotkey; ``Refused`` otherwise."""
    auth: PodAuth = request.app.state.auth
    body = await read_bounded(request, auth.max_body_bytes)
    target = signing.request_target(request.url.path, request.url.query)
    try:
        caller = signing.verify_request(
            request.headers,
            body,
            method=request.method,
            target=target,
            receiver_ss58=auth.pod_hotkey,
            nonces=auth.nonces,
            max_age_s=auth.max_age_s,
        )
    except signing.AuthError as exc:
        log.warning("refused %s %s: %s", request.method, target, type(exc).__name__)
        raise Refused(401, f"{type(exc).__name__}: {exc}") from exc
    if caller.hotkey_ss58 not in auth.allow_hotkeys:
        log.warning("refused %s %s: hotkey %s not allow-listed", request.method, target, caller.hotkey_ss58)
        raise Refused(403, "hotkey not allowed")
    return SignedRequest(caller.hotkey_ss58, body)


Signed = Annotated[SignedRequest, Depends(signed_request)]
"""Declare a route parameter of this type and the route is signed; see the module docstring."""

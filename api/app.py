"""The public read-only REST API and dashboard: ``create_app(settings)``.

Routes are thin: each one names a cache key and a view from ``api.views``. The
store is opened read-only (``Store.open_readonly``: ``mode=ro`` + ``query_only``)
lazily on first use, so the API starts before the validator has created it and
keeps serving (from cache, then 503) if the file is briefly unreadable. Errors
are short JSON without stack traces or paths.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from api import models as m
from api import views
from api.cache import TTLCache
from api.metrics import render_metrics
from api.price import PriceReader, PriceService, reader_for
from api.ratelimit import RateLimitMiddleware
from api.settings import Settings
from validator.store.api_reads import MAX_PER_PAGE
from validator.store.database import Store, StoreError

T = TypeVar("T")
NOT_FOUND = b""
HOTKEY_PATTERN = r"^[A-Za-z0-9]{1,64}$"
SETTINGS_ENV = "KLHILL_API_SETTINGS"


class StoreUnavailable(Exception):
    """The store cannot be read right now (missing, locked, corrupt)."""


class StoreReader:
    """One read-only connection per process, serialised by a lock (sqlite3 connections are not thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._store: Store | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        with self._lock:
            return self._open()

    def _open(self) -> Store:
        if self._store is None:
            self._store = Store.open_readonly(self.path)
        return self._store

    def run(self, fn: Callable[[Store], T]) -> T:
        with self._lock:
            try:
                return fn(self._open())
            except (StoreError, sqlite3.DatabaseError) as exc:
                if self._store is not None and not isinstance(exc, sqlite3.OperationalError):
                    self._store.close()
                    self._store = None
                raise StoreUnavailable(type(exc).__name__) from None

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def _version() -> str:
    try:
        return metadata.version("klhill")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _error(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) and len(exc.detail) <= 200 else None
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": [str(x) for x in e.get("loc", ())][:4], "msg": str(e.get("msg", ""))[:200]}
            for e in exc.errors()[:10]
        ]
        return _error(422, "invalid_request", detail)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return _error(503, "store_unavailable", "the validator store cannot be read right now", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal_error", None)


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": m.ErrorOut} for code in (404, 422, 429, 503)}


def create_app(settings: Settings | None = None, *, price_reader: PriceReader | None = None) -> FastAPI:
    """Build the app. ``price_reader`` overrides the one chosen from ``settings.network`` (tests)."""
    s = settings or Settings()
    app = FastAPI(
        title="klhill validator API",
        version=_version(),
        docs_url="/docs",
        redoc_url=None,
        description="Read-only public view of a klhill validator: scores, rounds, audit records.",
    )
    reader = StoreReader(Path(s.db))
    cache = TTLCache(ttl_s=s.cache_ttl_s)
    prices = PriceService(price_reader or reader_for(s.network), s.netuid, ttl_s=s.price_ttl_s)
    app.state.settings, app.state.reader, app.state.cache, app.state.prices = s, reader, cache, prices
    _install_error_handlers(app)
    counters: dict[str, int] = {"rate_limited": 0}

    def json_bytes(body: bytes) -> Response:
        if body == NOT_FOUND:
            raise HTTPException(404, "not found")
        return Response(body, media_type="application/json")

    async def cached(key: str, view: Callable[[Store], BaseModel | None]) -> Response:
        def produce() -> bytes:
            model = reader.run(view)
            return NOT_FOUND if model is None else views.render(model)

        return json_bytes(await cache.get(key, produce))

    endpoints = [
        "/api/health",
        "/api/metagraph",
        "/api/commitments",
        "/api/scores",
        "/api/disqualifications",
        "/api/rounds",
        "/api/rounds/{id}",
        "/api/miners/{hotkey}",
        "/api/history",
        "/api/eval-progress",
        "/api/rules",
        "/api/consensus",
        "/api/price",
        "/metrics",
        "/dashboard",
    ]
    overview = views.render(
        m.Overview(
            name="klhill",
            version=_version(),
            network=s.network,
            netuid=s.netuid,
            dashboard="/dashboard",
            openapi="/openapi.json",
            endpoints=endpoints,
        )
    )

    @app.get("/", response_model=m.Overview)
    async def root() -> Response:
        return Response(overview, media_type="application/json")

    @app.get("/api/health", response_model=m.Health)
    async def health() -> Response:
        def produce() -> bytes:
            try:
                return views.render(reader.run(lambda st: views.health(st, expect=(s.network, s.netuid))))
            except StoreUnavailable:
                return views.render(m.Health(status="down", db_ok=False, now=time.time()))

        return Response(await cache.get("health", produce), media_type="application/json")

    @app.get("/api/metagraph", response_model=m.MetagraphOut, responses=ERRORS)
    async def metagraph() -> Response:
        return await cached("metagraph", views.metagraph)

    @app.get("/api/commitments", response_model=m.CommitmentsOut, responses=ERRORS)
    async def commitments() -> Response:
        return await cached("commitments", views.commitments)

    @app.get("/api/scores", response_model=m.ScoresOut, responses=ERRORS)
    async def scores() -> Response:
        return await cached("scores", views.scores)

    @app.get("/api/disqualifications", response_model=m.DisqualificationsOut, responses=ERRORS)
    async def disqualifications() -> Response:
        return await cached("dqs", views.disqualifications)

    @app.get("/api/rounds", response_model=m.RoundsPage, responses=ERRORS)
    async def rounds(
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1, per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 20
    ) -> Response:
        return await cached(f"rounds:{page}:{per_page}", lambda st: views.rounds(st, page, per_page))

    @app.get("/api/rounds/{round_id}", response_model=m.RoundAudit, responses=ERRORS)
    async def round_audit(round_id: Annotated[int, PathParam(ge=1, le=2**62)]) -> Response:
        return await cached(f"round:{round_id}", lambda st: views.round_audit(st, round_id))

    @app.get("/api/miners/{hotkey}", response_model=m.MinerOut, responses=ERRORS)
    async def miner(hotkey: Annotated[str, PathParam(pattern=HOTKEY_PATTERN)]) -> Response:
        return await cached(f"miner:{hotkey}", lambda st: views.miner(st, hotkey))

    @app.get("/api/history", response_model=m.HistoryOut, responses=ERRORS)
    async def history() -> Response:
        return await cached("history", views.history)

    @app.get("/api/eval-progress", response_model=m.ProgressOut, responses=ERRORS)
    async def eval_progress() -> Response:
        return await cached("progress", views.progress)

    @app.get("/api/rules", response_model=m.RulesOut, responses=ERRORS)
    async def rules() -> Response:
        return await cached("rules", views.rules)

    @app.get("/api/consensus", response_model=m.ConsensusOut, responses=ERRORS)
    async def consensus() -> Response:
        return await cached("consensus", views.consensus)

    @app.get("/api/price", response_model=m.PriceOut)
    async def price() -> Response:
        def produce() -> bytes:
            q, at = prices.get()
            return views.render(
                m.PriceOut(
                    network=s.network,
                    netuid=s.netuid,
                    available=q.price_tao_per_alpha is not None,
                    price_tao_per_alpha=q.price_tao_per_alpha,
                    emission_tao_per_block=q.emission_tao_per_block,
                    block=q.block,
                    reason=q.reason,
                    fetched_at=at,
                )
            )

        return Response(await cache.get("price", produce), media_type="application/json")

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        def produce() -> bytes:
            extra = {"cache_hits": cache.hits, "cache_misses": cache.misses, **counters}
            return reader.run(lambda st: render_metrics(st, extra))

        return Response(await cache.get("metrics", produce), media_type=METRICS_CONTENT_TYPE)

    page = files("api").joinpath("static/dashboard.html").read_bytes()
    csp = (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )

    @app.get("/dashboard", response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(
            page,
            headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )

    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["*"],
        allow_credentials=False,
    )
    if s.rate_per_s > 0:
        app.add_middleware(
            RateLimitMiddleware,
            rate=s.rate_per_s,
            burst=s.rate_burst,
            trusted_proxies=s.trusted_proxies,
            exempt=("/api/health",),
            stats=counters,
        )
    app.state.counters = counters
    return app


def settings_to_env(s: Settings) -> str:
    return s.model_dump_json()


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` with several workers: the parent's resolved settings travel in env."""
    return create_app(Settings.model_validate_json(os.environ.get(SETTINGS_ENV, "{}")))

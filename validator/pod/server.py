"""The GPU pod service: signed evaluation jobs in, results out (started by ``python -m validator.pod``).

The pod holds no wallet key and never touches the chain; it obeys only the
allow-listed validator hotkeys. Every job route takes the ``Signed``
dependency (``validator.pod.auth``; the contract in ``validator.pod.signing``),
verified over the raw bytes *before* anything is parsed or done: unsigned,
malformed, stale, replayed or tampered -> 401, a valid signature from a hotkey
not on the list -> 403. Bodies are bounded (413 without reading the rest), JSON
nesting is bounded, and the schema bounds the rest (422). ``GET /health`` is
public and says nothing sensitive (version, state, GPU, free disk, and which
attention kernels a model will run with).
"""

from __future__ import annotations

import logging
import re
import shutil
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from eval.downloads import DiskLimits
from eval.kernels import KernelReport, environment_report, kernel_warning
from eval.runner import run_job
from eval.schemas import EvalJob
from validator.pod.auth import PodAuth, Signed, install, open_nonces
from validator.pod.jobs import JobConflict, JobManager, QueueFull, Runner
from validator.pod.settings import PodSettings

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 32
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")  # same as eval.schemas.JobId


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def json_too_deep(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """True when brackets nest deeper than ``max_depth`` outside strings (checked before parsing)."""
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > max_depth:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def _default_runner(settings: PodSettings) -> Runner:
    if settings.hub:
        from eval.model_store.local import LocalHub

        store: Any = LocalHub(settings.hub)
    else:
        from eval.model_store.huggingface import HuggingFaceStore  # token from HF_TOKEN only, never argv

        store = HuggingFaceStore()
    limits = DiskLimits(
        min_free_bytes=int(settings.min_free_gb * 1024**3),
        max_workdir_bytes=int(settings.max_disk_gb * 1024**3) if settings.max_disk_gb else None,
    )

    def run(job: EvalJob, on_progress: Any, should_cancel: Any) -> Any:
        return run_job(
            job,
            store,
            settings.workdir,
            settings.device,
            on_progress=on_progress,
            should_cancel=should_cancel,
            limits=limits,
        )

    return run


def gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # health must answer even when the driver is broken
        return "unknown"


def log_kernels(report: KernelReport, warning: str | None) -> None:
    """One line naming the kernels; a slow fallback on CUDA is a WARNING, not a silent default."""
    log.info("kernels: %s", ", ".join(f"{k}={v}" for k, v in report.as_dict().items()))
    if warning:
        log.warning("kernel fallback: %s", warning)


def create_app(settings: PodSettings, runner: Runner | None = None) -> FastAPI:
    """Wire the job manager and the routes; ``runner`` is injectable for tests of the edge."""
    run = runner or _default_runner(settings)
    # decided once, when transformers imported its Qwen3.5 code: computed once, served by /health
    kernels = environment_report(settings.device)
    warning = kernel_warning(kernels)
    manager = JobManager(settings.workdir / "jobs", run, max_queued=settings.max_queued)
    auth = PodAuth(
        allow_hotkeys=settings.allow_hotkeys,
        pod_hotkey=settings.pod_hotkey,
        max_age_s=settings.max_age_s,
        max_body_bytes=settings.max_body_bytes,
        nonces=open_nonces(settings.workdir, settings.max_age_s),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        log_kernels(kernels, warning)
        manager.start()
        try:
            yield
        finally:
            manager.stop()

    app = FastAPI(title="klhill pod", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.manager = manager
    app.state.kernels, app.state.kernel_warning = kernels, warning

    install(app, auth)  # every route but /health takes ``Signed``: verified before it runs

    @app.get("/health")
    def health() -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("klhill")
        except PackageNotFoundError:
            ver = "unknown"
        return {
            "version": ver,
            "state": "busy" if manager.busy else "idle",
            "queued": manager.queued(),
            "gpu": gpu_name(),
            "free_disk_bytes": shutil.disk_usage(settings.workdir).free,
            "kernels": app.state.kernels.as_dict(),
            "kernel_warning": app.state.kernel_warning,
        }

    @app.post("/jobs")
    async def post_job(call: Signed) -> JSONResponse:
        if json_too_deep(call.body):
            return _error(422, f"JSON nested deeper than {MAX_JSON_DEPTH}")
        try:
            job = EvalJob.model_validate_json(call.body)
        except ValidationError as exc:
            return _error(422, f"invalid job: {exc.error_count()} errors; first: {exc.errors()[0]['msg']}"[:500])
        try:
            status, created = manager.submit(job)
        except JobConflict as exc:
            return _error(409, str(exc))
        except QueueFull as exc:
            return _error(429, str(exc))
        return JSONResponse(status.model_dump(mode="json"), status_code=202 if created else 200)

    def _job_call(job_id: str, cancel: bool) -> JSONResponse:
        if not JOB_ID_RE.match(job_id):
            return _error(404, "no such job")
        status = manager.cancel(job_id) if cancel else manager.status(job_id)
        if status is None:
            return _error(404, "no such job")
        return JSONResponse(status.model_dump(mode="json"))

    @app.get("/jobs/{job_id}")
    async def get_job(job_id: str, _: Signed) -> JSONResponse:
        return _job_call(job_id, cancel=False)

    @app.delete("/jobs/{job_id}")
    async def delete_job(job_id: str, _: Signed) -> JSONResponse:
        return _job_call(job_id, cancel=True)

    return app

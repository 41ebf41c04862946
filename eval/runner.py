"""The one evaluation routine: an ``EvalJob`` in, an ``EvalResult`` out.

The pod service, the in-process pod and ``miner.py eval`` all call
:func:`run_job`, so a miner reproduces exactly what a validator computes.
Order of work: the teacher is downloaded and run once per job; then every
model, king first, is downloaded at its pinned revision only, hashed, loaded,
scored (challengers may stop early against *this round's* king, never the king
itself - LESSONS 14/15), made to continue the round's first prompts itself for
the on-policy guard (``eval.onpolicy``; the teacher judges that text either at
once, if it stays loaded, or after the last model), fingerprinted on the fixed
canary prompts, freed and deleted from disk (LESSONS 24).

Failure split: a model's own fault becomes ``model_error`` with a reason and
the job goes on; a fault of the machine (disk full, out of memory, the teacher
missing, a hub that keeps answering "not now") raises :class:`InfraError` and
fails the whole job, so nobody is penalised for it (LESSONS 21). What is
downloaded, and the disk bounds checked before, are ``eval.downloads``.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eval import onpolicy, scoring
from eval.downloads import DiskLimits, check_disk, download, download_size, fetch_teacher, is_disk_full, job_dir_name
from eval.errors import InfraError, KlhillError, ModelError
from eval.hashing import HashingError, content_hash
from eval.model_store import port as stores
from eval.model_store.safetensors_header import HeaderError
from eval.progress import JobProgressTracker, ProgressFn
from eval.schemas import (
    EvalJob,
    EvalResult,
    ModelRef,
    ModelResult,
    ModelTimings,
    OnPolicyPrompt,
    TeacherInfo,
)
from eval.stats import needs_onpolicy
from eval.teacher import run_teacher

log = logging.getLogger(__name__)

DEFAULT_TEACHER_RAM_BYTES = 4 * 1024**3
# GPU memory kept free beside the teacher and its log-prob cache: generation's
# KV cache and one right-padded forward of the largest batch.
TEACHER_PHASE_RESERVE_BYTES = 16 * 1024**3
# ... and beside the cache while students are scored: the largest admissible
# student in bf16 (rules.max_params x 2 bytes) plus its batch and KL blocks.
STUDENT_ACTIVATION_RESERVE_BYTES = 12 * 1024**3

CancelFn = Callable[[], bool]


class JobCancelled(KlhillError):
    """The caller asked the job to stop; no partial result is returned."""


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def _teacher(
    job: EvalJob, store: stores.ModelStore, workdir: Path, device: str, limits: DiskLimits
) -> tuple[str, Path, Any, Any]:
    """Resolve, download (cached by revision) and load the teacher; any failure is ours."""
    repo = job.rules.teacher_repo
    revision = job.teacher_revision or job.rules.teacher_revision
    try:
        if revision is None:
            revision = store.resolve(repo)
        dest = fetch_teacher(store, repo, revision, workdir, limits)
        tokenizer = scoring.load_tokenizer(dest)
        model = scoring.load_causal_lm(dest, device)
    except InfraError:
        raise
    except (KlhillError, OSError) as exc:
        raise InfraError(f"teacher {repo}@{revision} unavailable: {exc}") from exc
    return revision, dest, tokenizer, model


def _device_cache_bytes(device: str, reserve: int = TEACHER_PHASE_RESERVE_BYTES) -> int:
    """GPU memory the teacher's log-prob cache may (still) take: what is free now, less ``reserve``."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return 0
    free, _ = torch.cuda.mem_get_info(dev)
    return max(0, free - reserve)


def _score_one(
    ref: ModelRef,
    ctx: _JobContext,
    king_kl: list[float] | None,
    is_king: bool = False,
) -> ModelResult:
    """Download, hash, load, score and fingerprint one model; its own faults become model_error."""
    t0 = time.monotonic()
    dest = ctx.workdir / "models" / job_dir_name(ctx.job.job_id) / ref.key.replace(":", "_")
    timings: dict[str, float] = {}
    model = None
    try:
        ctx.progress.phase("download", ref.spec, ctx.index)
        try:
            check_disk(ctx.workdir, ctx.limits, download_size(ctx.store, ref.repo, ref.revision))
            download(ctx.store, ref.repo, ref.revision, dest)
        except stores.DefiniteStoreError as exc:
            return _error(ref, f"repo removed or inaccessible: {exc}", t0)
        timings["download_s"] = time.monotonic() - t0
        try:
            digest = content_hash(dest)
        except (HashingError, HeaderError) as exc:  # unreadable weights are the repo's fault
            return _error(ref, f"cannot hash weights: {exc}", t0)
        t1 = time.monotonic()
        model = scoring.load_causal_lm(dest, ctx.device)
        timings["load_s"] = time.monotonic() - t1
        ctx.progress.phase("student", ref.spec, ctx.index)
        t2 = time.monotonic()
        score = scoring.score_student(
            model,
            ctx.run,
            ctx.job.rules,
            king_kl=king_kl,
            progress=ctx.progress.callback(),
            should_cancel=ctx.should_cancel,
        )
        if score.status not in ("ok", "early_stopped") or ctx.should_cancel():
            raise JobCancelled(f"job {ctx.job.job_id} cancelled")
        timings["score_s"] = time.monotonic() - t2
        values: list[OnPolicyPrompt] = []
        # The guard judges only a challenger that beats the king's KL margin, against the king's own figures:
        # measure those two (miner.py eval measures every model, so a miner always sees its figures).
        guarded = ctx.guard_all or needs_onpolicy(is_king, king_kl, score.prompt_kl, ctx.job.rules)
        if score.status == "ok" and ctx.guard.enabled and guarded:
            ctx.progress.phase("onpolicy", ref.spec, ctx.index)
            t3 = time.monotonic()
            values = ctx.guard.measure(ref.key, model)
            timings["onpolicy_s"] = time.monotonic() - t3
        ctx.progress.phase("fingerprint", ref.spec, ctx.index)
        fp = scoring.fingerprint(model, ctx.tokenizer, ctx.job.rules)
        return ModelResult(
            ref=ref,
            status=score.status,
            prompt_kl=list(score.prompt_kl),
            prompt_tokens=list(score.prompt_tokens),
            content_hash=digest,
            fingerprint=list(fp),
            onpolicy=values,
            timings=ModelTimings(**timings, total_s=time.monotonic() - t0),
        )
    except ModelError as exc:
        if exc.__cause__ is not None and (_is_oom(exc.__cause__) or is_disk_full(exc.__cause__)):
            raise InfraError(f"{ref.spec}: {type(exc.__cause__).__name__} while loading: {exc}") from exc
        return _error(ref, str(exc) or type(exc).__name__, t0)
    except (JobCancelled, InfraError):
        raise
    except BaseException as exc:
        if is_disk_full(exc) or _is_oom(exc):
            raise InfraError(f"{ref.spec}: {type(exc).__name__}: {exc}") from exc
        raise
    finally:
        if model is not None:
            scoring.free_model(model)
        shutil.rmtree(dest, ignore_errors=True)


def _error(ref: ModelRef, reason: str, t0: float) -> ModelResult:
    log.warning("model_error %s: %s", ref.spec, reason)
    return ModelResult(
        ref=ref, status="model_error", error=reason[:2000], timings=ModelTimings(total_s=time.monotonic() - t0)
    )


@dataclass
class _JobContext:
    job: EvalJob
    store: stores.ModelStore
    workdir: Path
    device: str
    limits: DiskLimits
    progress: JobProgressTracker
    should_cancel: CancelFn
    run: Any = None
    tokenizer: Any = None
    guard: Any = None
    guard_all: bool = False
    index: int = 0


def _with_onpolicy(result: ModelResult, values: list[OnPolicyPrompt] | None) -> ModelResult:
    """``result`` with the values the teacher judged after the last model (validated again)."""
    if not values:
        return result
    return ModelResult.model_validate({**result.model_dump(), "onpolicy": [v.model_dump() for v in values]})


def _reload_teacher(path: Path, device: str) -> Any:
    try:
        return scoring.load_causal_lm(path, device)
    except KlhillError as exc:  # it loaded once this job: now failing is ours, never a model's
        raise InfraError(f"teacher reload for the on-policy guard failed: {exc}") from exc


def run_job(
    job: EvalJob,
    store: stores.ModelStore,
    workdir: Path,
    device: str,
    *,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    teacher_store: stores.ModelStore | None = None,
    limits: DiskLimits | None = None,
    teacher_ram_bytes: int = DEFAULT_TEACHER_RAM_BYTES,
    onpolicy_mode: onpolicy.Residency = "auto",
    onpolicy_all: bool = False,
) -> EvalResult:
    """Evaluate every model of ``job`` on the job's prompts; see the module docstring.

    ``onpolicy_all`` measures every fully scored model's own text, not only the king's and those that beat
    its KL margin (``eval.stats.needs_onpolicy``): for ``miner.py eval``, where a miner wants the figures.
    ``onpolicy_mode`` says whether the teacher stays loaded for the on-policy guard
    ("auto": when memory allows, ``eval.onpolicy.teacher_stays_resident``); the result
    is the same either way. Raises InfraError (job failed, nobody penalised) or
    JobCancelled; otherwise every model of the job appears exactly once, in job order.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    limits = limits or DiskLimits()
    cancel = should_cancel or (lambda: False)
    models = job.models
    progress = JobProgressTracker(on_progress, len(models), len(job.prompts))
    ctx = _JobContext(job, store, workdir, device, limits, progress, cancel, guard_all=onpolicy_all)
    started = time.monotonic()
    cache_dir = workdir / "teacher-cache" / job_dir_name(job.job_id)
    teacher_model = None
    try:
        ctx.progress.phase("teacher", job.rules.teacher_repo)
        revision, teacher_dir, ctx.tokenizer, teacher_model = _teacher(
            job, teacher_store or store, workdir, device, limits
        )
        cache_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        try:
            ctx.run = run_teacher(
                teacher_model,
                ctx.tokenizer,
                list(job.prompts),
                job.rules,
                cache_dir=cache_dir,
                ram_limit_bytes=teacher_ram_bytes,
                device_limit_bytes=_device_cache_bytes(device),
                progress=ctx.progress.callback(),
            )
        except (ModelError, OSError, MemoryError) as exc:
            raise InfraError(f"teacher run failed: {type(exc).__name__}: {exc}") from exc
        seconds = time.monotonic() - t0
        ctx.guard = onpolicy.GuardPass(job.rules, ctx.run.prompt_ids, ctx.tokenizer, teacher_model, mode=onpolicy_mode)
        if not ctx.guard.keeps_teacher:
            scoring.free_model(teacher_model)
            teacher_model = None
            if torch.device(device).type == "cuda":  # the teacher's memory is free now: bring the cache over
                reserve = 2 * job.rules.max_params + STUDENT_ACTIVATION_RESERVE_BYTES
                free = _device_cache_bytes(device, reserve)
                moved = ctx.run.promote(torch.device(device), ctx.run.device_bytes + free)
                log.info(
                    "teacher cache: %d prompts on the GPU (%d moved from host RAM), %d on disk",
                    ctx.run.on_device,
                    moved,
                    ctx.run.spilled,
                )
        results: list[ModelResult] = []
        king_kl: list[float] | None = None
        for index, ref in enumerate(models):
            if cancel():
                raise JobCancelled(f"job {job.job_id} cancelled")
            ctx.index = index
            is_king = job.king is not None and index == 0
            result = _score_one(ref, ctx, None if is_king else king_kl, is_king)
            if is_king and result.status == "ok":
                king_kl = list(result.prompt_kl)
            log.info("job %s model %d/%d %s: %s", job.job_id, index + 1, len(models), ref.spec, result.status)
            results.append(result)
        if cancel():
            raise JobCancelled(f"job {job.job_id} cancelled")
        ctx.progress.phase("onpolicy", job.rules.teacher_repo)
        late = ctx.guard.finish(lambda: _reload_teacher(teacher_dir, device))
        results = [_with_onpolicy(r, late.get(r.ref.key)) for r in results]
        teacher = TeacherInfo(
            repo=job.rules.teacher_repo,
            revision=revision,
            continuation_tokens=[len(c) for c in ctx.run.continuation_ids],
            seconds=seconds,
            onpolicy_s=ctx.guard.teacher_s,
        )
        ctx.progress.phase("done")
        return EvalResult(
            job_id=job.job_id,
            block_hash=job.block_hash,
            teacher=teacher,
            models=results,
            device=device[:200],
            total_s=time.monotonic() - started,
        )
    finally:
        if ctx.guard is not None:
            ctx.guard.close()
        if teacher_model is not None:
            scoring.free_model(teacher_model)
        if ctx.run is not None:
            ctx.run.close()
        shutil.rmtree(cache_dir, ignore_errors=True)
        shutil.rmtree(workdir / "models" / job_dir_name(job.job_id), ignore_errors=True)

"""A miner's local score estimate: the validator's job for a block hash, scored by the pod routine.

``miner.py eval`` is a thin shell around ``run_eval``. The job is built the way the
validator builds a round (prompts sampled from the block hash and the *published* rules, the
king first, the challenger after it), and the result is read with the validator's own
statistics (``eval.stats.mean_ci``, ``eval.stats.decide``), so "would I dethrone the king?"
gets the answer the validator would give on the same prompts.

Prompts depend on the rules digest: they are sampled with the rules as given, before any
local override (a shorter ``max_new_tokens`` for a quick run changes the job's rules only).

Wiring: local directories are served by ``eval.model_store.linked.LinkedDirs`` (symlinks, no copy),
hub references by the usual store; the job is run by ``eval.runner.run_job`` (the pod's own
routine). To reproduce a past round, pass its block hash and the rules it was judged by. The
summary and its text are ``eval.estimate_summary``.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.errors import UsageError
from eval.estimate_summary import AGAINST_HOTKEY, MODEL_HOTKEY, render, summarize
from eval.exit_codes import ExitCode
from eval.fineweb import FineWebSource
from eval.jobs import build_job, model_ref
from eval.model_store.linked import LinkedDirs
from eval.model_store.port import ModelStore
from eval.prompts import LocalCorpus, sample_prompts
from eval.rules import DEFAULT_RULES, ContestRules
from eval.schemas import (
    BLOCK_HASH_PATTERN,
    MAX_PROMPTS_PER_JOB,
    EvalJob,
    SubmissionId,
)

_HASH_RE = re.compile(BLOCK_HASH_PATTERN)


@dataclass(frozen=True)
class Pinned:
    """A model at an exact revision, as the job will name it."""

    repo: str
    revision: str

    @property
    def spec(self) -> str:
        return f"{self.repo}@{self.revision}"


def job_rules(
    rules: ContestRules, *, teacher_repo: str | None = None, max_new_tokens: int | None = None
) -> ContestRules:
    """The rules the job carries: the published ones, with the local teacher name and token override."""
    update: dict[str, Any] = {}
    if teacher_repo is not None and teacher_repo != rules.teacher_repo:
        update["teacher_repo"] = teacher_repo
    if max_new_tokens is not None:
        update["max_new_tokens"] = max_new_tokens
    return ContestRules.model_validate({**rules.model_dump(), **update}) if update else rules


def local_job(
    block_hash: str,
    rules: ContestRules,
    prompts: list[str],
    model: Pinned,
    *,
    against: Pinned | None = None,
    teacher_revision: str | None = None,
) -> EvalJob:
    """The job a validator would send: ``against`` is the king (scored in full, first), ``model`` the challenger."""
    king = model_ref(against.repo, against.revision, SubmissionId(AGAINST_HOTKEY, 0)) if against is not None else None
    challenger = model_ref(model.repo, model.revision, SubmissionId(MODEL_HOTKEY, 0))
    return build_job(
        f"miner-eval-{block_hash[2:18]}", 0, block_hash, rules, teacher_revision, prompts, king, [challenger]
    )


# --- the command: flags -> job -> pod routine -> estimate ------------------------------------------------------


class EvalUsageError(UsageError):
    """A bad flag value: nothing was evaluated."""


@dataclass(frozen=True)
class EvalRequest:
    """What ``miner.py eval`` was asked: specs are ``org/name[@revision]`` or local directories."""

    model: str
    teacher: str | None = None  # default: the rules' teacher
    against: str | None = None  # the king to compare with
    prompts: int | None = None  # default: the rules' prompt count
    block_hash: str | None = None  # default: a fresh random hash
    rules: Path | None = None  # the round's ContestRules JSON; default: the built-in rules
    corpus: str | None = None  # a corpus directory or "builtin"; default: FineWeb
    device: str | None = None  # default: cuda when available
    max_new_tokens: int | None = None
    workdir: Path | None = None  # default: a temporary directory, removed afterwards
    as_json: bool = False


def block_hash_arg(value: str | None) -> str:
    """The given hash (validated), or a fresh random one."""
    if value is None:
        return "0x" + secrets.token_hex(32)
    value = value.lower()
    if not _HASH_RE.match(value):
        raise EvalUsageError(f"--block-hash must be 0x followed by 64 hex digits, got {value!r}")
    return value


def load_rules(path: Path | None) -> ContestRules:
    return ContestRules.from_json(path.read_text()) if path else DEFAULT_RULES


def pin(spec: str, name: str, linked: LinkedDirs, hub: Callable[[], ModelStore]) -> Pinned:
    """A local directory (served under ``name``) or ``org/name[@revision]`` (``main`` resolved to its SHA)."""
    if Path(spec).is_dir():
        return Pinned(name, linked.add(name, spec))
    repo, sep, revision = spec.partition("@")
    return Pinned(repo, revision if sep else hub().resolve(repo, "main"))


def prompt_source(corpus: str | None, rules: ContestRules) -> Any:
    if corpus is None:
        return FineWebSource(rules)
    return LocalCorpus(None if corpus == "builtin" else corpus)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_eval(request: EvalRequest, hub_factory: Callable[[], ModelStore], out: Callable[[str], Any] = print) -> int:
    """``miner.py eval``: build the round's job for the block hash, run it with the pod routine, print the estimate.

    Returns ``ExitCode.OK``, or ``ExitCode.REFUSED`` when the model could not be scored (a model error).
    """
    from eval.runner import run_job  # imported lazily: torch and transformers load only for this command

    hub_cache: list[ModelStore] = []

    def hub() -> ModelStore:
        if not hub_cache:
            hub_cache.append(hub_factory())
        return hub_cache[0]

    r = request
    rules = load_rules(r.rules)
    block_hash = block_hash_arg(r.block_hash)
    if r.prompts is not None and not 1 <= r.prompts <= MAX_PROMPTS_PER_JOB:
        raise EvalUsageError(f"--prompts must be in 1..{MAX_PROMPTS_PER_JOB}, got {r.prompts}")
    if not r.as_json:
        out(f"block hash: {block_hash} (pass it as --block-hash to reproduce this run)")
    linked = LinkedDirs()
    model = pin(r.model, "local/model", linked, hub)
    against = pin(r.against, "local/king", linked, hub) if r.against else None
    teacher_spec = r.teacher or (
        f"{rules.teacher_repo}@{rules.teacher_revision}" if rules.teacher_revision else rules.teacher_repo
    )
    teacher = pin(teacher_spec, rules.teacher_repo, linked, hub)
    if any(p is not None and not linked.has(p.repo, p.revision) for p in (model, against, teacher)):
        linked.fallback = hub()
    prompts = sample_prompts(block_hash, rules, prompt_source(r.corpus, rules), r.prompts)
    run_rules = job_rules(rules, teacher_repo=teacher.repo, max_new_tokens=r.max_new_tokens)
    job = local_job(block_hash, run_rules, prompts, model, against=against, teacher_revision=teacher.revision)
    workdir = Path(r.workdir) if r.workdir else Path(tempfile.mkdtemp(prefix="klhill-eval-"))
    try:
        result = run_job(job, linked, workdir, r.device or default_device(), onpolicy_all=True)
    finally:
        if not r.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    doc = summarize(result, run_rules)
    if r.as_json:
        out(json.dumps(doc, sort_keys=True))
    else:
        for line in render(doc)[1:]:
            out(line)
    return ExitCode.OK if doc["model"]["status"] != "model_error" else ExitCode.REFUSED

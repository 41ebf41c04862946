"""``miner.py eval``: score a model locally exactly as a validator round would, before committing.

Wiring only: local directories are served by ``eval.linked_store.LinkedDirs`` (symlinks, no
copy), hub references by the usual store; the job is built by ``eval.estimate.build_job``, run
by ``eval.runner.run_job`` (the pod's own routine) and read by ``eval.estimate.summarize``.
To reproduce a past round, pass its block hash and the rules it was judged by (``--rules``).
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.errors import KlhillError
from eval.estimate import Pinned, build_job, job_rules, render, summarize
from eval.linked_store import LinkedDirs
from eval.prompts import FineWebSource, LocalCorpus, sample_prompts
from eval.rules import DEFAULT_RULES, ContestRules
from eval.schemas import BLOCK_HASH_PATTERN
from eval.stores import ModelStore

EXIT_OK, EXIT_MODEL_ERROR, EXIT_USAGE = 0, 1, 2
_HASH_RE = re.compile(BLOCK_HASH_PATTERN)


class EvalUsageError(KlhillError):
    """A bad flag value: nothing was evaluated."""


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


def run_eval(args: argparse.Namespace, hub_factory: Callable[[], ModelStore], out: Callable[[str], Any] = print) -> int:
    """Build the round's job for the block hash, run it with the pod routine, print the estimate."""
    from eval.runner import run_job  # imported lazily: torch and transformers load only for this command

    hub_cache: list[ModelStore] = []

    def hub() -> ModelStore:
        if not hub_cache:
            hub_cache.append(hub_factory())
        return hub_cache[0]

    rules = load_rules(args.rules)
    block_hash = block_hash_arg(args.block_hash)
    if not args.json:
        out(f"block hash: {block_hash} (pass it as --block-hash to reproduce this run)")
    linked = LinkedDirs()
    model = pin(args.model, "local/model", linked, hub)
    against = pin(args.against, "local/king", linked, hub) if args.against else None
    teacher_spec = args.teacher or (f"{rules.teacher_repo}@{rules.teacher_revision}" if rules.teacher_revision
                                    else rules.teacher_repo)  # fmt: skip
    teacher = pin(teacher_spec, rules.teacher_repo, linked, hub)
    if any(p is not None and not linked.has(p.repo, p.revision) for p in (model, against, teacher)):
        linked.fallback = hub()
    prompts = sample_prompts(block_hash, rules, prompt_source(args.corpus, rules), args.prompts)
    run_rules = job_rules(rules, teacher_repo=teacher.repo, max_new_tokens=args.max_new_tokens)
    job = build_job(block_hash, run_rules, prompts, model, against=against, teacher_revision=teacher.revision)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="klhill-eval-"))
    try:
        result = run_job(job, linked, workdir, args.device or default_device())
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    doc = summarize(result, run_rules)
    if args.json:
        out(json.dumps(doc, sort_keys=True))
    else:
        for line in render(doc)[1:]:
            out(line)
    return EXIT_OK if doc["model"]["status"] != "model_error" else EXIT_MODEL_ERROR

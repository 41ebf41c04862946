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
routine). To reproduce a past round, pass its block hash and the rules it was judged by.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.errors import UsageError
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
    EvalResult,
    ModelResult,
    SubmissionId,
)
from eval.stats import decide, mean_ci, onpolicy_guard

# Placeholder submission identities (valid ss58-shaped strings): a local run has no chain.
MODEL_HOTKEY = "5" + "M" * 47
AGAINST_HOTKEY = "5" + "K" * 47
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


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def model_summary(result: ModelResult) -> dict[str, Any]:
    """Status, mean KL with a 95% t-interval (None when undefined), and the per-prompt values."""
    out: dict[str, Any] = {
        "spec": result.ref.spec,
        "status": result.status,
        "error": result.error,
        "prompt_kl": list(result.prompt_kl),
        "prompt_tokens": list(result.prompt_tokens),
        "mean_kl": None,
        "ci95": None,
        "content_hash": result.content_hash,
    }
    if result.prompt_kl:
        mean, lo, hi = mean_ci(result.prompt_kl)
        out["mean_kl"] = mean
        out["ci95"] = [_finite(lo), _finite(hi)]
    out["onpolicy"] = onpolicy_summary(result)
    return out


def onpolicy_summary(result: ModelResult) -> dict[str, Any] | None:
    """Means of the on-policy guard's values over the guarded prompts, and the values themselves (None if none)."""
    values = result.onpolicy
    if not values:
        return None
    n = len(values)
    return {
        "prompts": n,
        "teacher_nll": sum(v.teacher_nll for v in values) / n,
        "reverse_kl": sum(v.reverse_kl for v in values) / n,
        "repetition": sum(v.repetition for v in values) / n,
        "per_prompt": [v.model_dump(mode="json") for v in values],
    }


def guard_summary(king: ModelResult, mine: ModelResult, rules: ContestRules) -> dict[str, Any] | None:
    """The validator's on-policy guard for ``mine`` against ``king`` (None when either has no values)."""
    if not king.onpolicy or len(king.onpolicy) != len(mine.onpolicy):
        return None
    g = onpolicy_guard(
        [v.teacher_nll for v in king.onpolicy],
        [v.teacher_nll for v in mine.onpolicy],
        [v.repetition for v in king.onpolicy],
        [v.repetition for v in mine.onpolicy],
        rules,
    )
    return {
        "stop": g.stop,
        "reason": g.reason,
        "checks": [
            {
                "figure": c.figure,
                "king_mean": c.king_mean,
                "model_mean": c.challenger_mean,
                "limit": c.limit,
                "p_value": c.p_value,
                "fails": c.fails,
            }
            for c in g.checks
        ],
    }


def summarize(result: EvalResult, rules: ContestRules) -> dict[str, Any]:
    """One JSON-safe document: the model, the king it was compared with, and the dethrone decision.

    Mirrors the validator: a challenger that errored or was stopped early does not dethrone; a
    king that errored cannot be compared with (the validator would fail the round's comparison).
    Over ``rules.max_kl`` the model would be disqualified (KL_TOO_HIGH).
    """
    by_hotkey = {m.ref.submission.hotkey: m for m in result.models}
    mine = by_hotkey[MODEL_HOTKEY]
    doc: dict[str, Any] = {
        "block_hash": result.block_hash,
        "teacher": result.teacher.model_dump(mode="json"),
        "prompts": len(result.teacher.continuation_tokens),
        "model": model_summary(mine),
        "against": None,
        "decision": None,
    }
    mean = doc["model"]["mean_kl"]
    doc["model"]["over_max_kl"] = mean is not None and mine.status == "ok" and mean > rules.max_kl
    king = by_hotkey.get(AGAINST_HOTKEY)
    if king is None:
        return doc
    doc["against"] = model_summary(king)
    if king.status != "ok":
        doc["decision"] = {"dethrone": None, "reason": f"the king could not be scored: {king.error}"}
    elif mine.status == "early_stopped":
        n = len(mine.prompt_kl)
        doc["decision"] = {"dethrone": False, "reason": f"stopped early after {n} prompts: it cannot beat the king"}
    elif mine.status != "ok":
        doc["decision"] = {"dethrone": False, "reason": f"the model could not be scored: {mine.error}"}
    else:
        d = decide(king.prompt_kl, mine.prompt_kl, rules)
        guard = guard_summary(king, mine, rules) if rules.onpolicy_prompts > 0 else None
        stopped = bool(guard and guard["stop"])
        reason = f"beats the king on KL but {guard['reason']}" if d.dethrone and stopped and guard else d.reason
        doc["decision"] = {
            "dethrone": d.dethrone and not stopped,
            "beats_on_kl": d.dethrone,
            "p_value": d.p_value,
            "threshold": d.threshold,
            "king_mean": d.king_mean,
            "challenger_mean": d.challenger_mean,
            "epsilon": rules.epsilon,
            "alpha": rules.alpha,
            "reason": reason,
            "onpolicy_guard": guard,
        }
    return doc


def render(doc: dict[str, Any]) -> list[str]:
    """Human-readable lines for ``doc`` (what ``miner.py eval`` prints without --json)."""
    lines = [
        f"block hash: {doc['block_hash']}",
        f"prompts: {doc['prompts']}; teacher {doc['teacher']['repo']}@{doc['teacher']['revision']}",
    ]
    for label in ("model", "against"):
        m = doc[label]
        if m is None:
            continue
        if m["mean_kl"] is None:
            lines.append(f"{label}: {m['spec']}: {m['status']}: {m['error']}")
            continue
        lo, hi = m["ci95"]
        ci = f"[{lo:.6f}, {hi:.6f}]" if lo is not None else "[undefined with one prompt]"
        lines.append(
            f"{label}: {m['spec']}: mean KL {m['mean_kl']:.6f}, 95% CI {ci}, n={len(m['prompt_kl'])} ({m['status']})"
        )
        if m.get("over_max_kl"):
            lines.append("  above the rules' max_kl: the validator would disqualify it (KL_TOO_HIGH)")
        own = m.get("onpolicy")
        if own:
            lines.append(
                f"  on policy (its own greedy text on the first {own['prompts']} prompts): teacher NLL "
                f"{own['teacher_nll']:.4f}/token, reverse KL {own['reverse_kl']:.4f}, "
                f"repeated n-grams {own['repetition']:.0%}"
            )
    d = doc["decision"]
    if d is not None:
        verdict = {True: "DETHRONE: yes", False: "DETHRONE: no", None: "DETHRONE: undecided"}[d["dethrone"]]
        extra = f" (p={d['p_value']:.4g}, threshold {d['threshold']:.6f})" if "p_value" in d else ""
        lines.append(f"{verdict}{extra}: {d['reason']}")
        guard = d.get("onpolicy_guard")
        if guard is not None:
            lines.append(
                ("ON-POLICY GUARD: would stop it: " if guard["stop"] else "ON-POLICY GUARD: passes: ") + guard["reason"]
            )
    return lines


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

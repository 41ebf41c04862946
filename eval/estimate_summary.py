"""What a miner's local estimate says: one JSON-safe document and its text (pure).

The result is read with the validator's own statistics (``eval.stats.mean_ci``,
``eval.stats.decide``, ``eval.stats.onpolicy_guard``), so "would I dethrone the
king?" gets the answer the validator would give on the same prompts. The job
names the two models by the placeholder identities below (a local run has no
chain); ``eval.estimate`` builds and runs it.
"""

from __future__ import annotations

import math
from typing import Any

from eval.rules import ContestRules
from eval.schemas import EvalResult, ModelResult
from eval.stats import decide, mean_ci, onpolicy_guard

# Placeholder submission identities (valid ss58-shaped strings): a local run has no chain.
MODEL_HOTKEY = "5" + "M" * 47
AGAINST_HOTKEY = "5" + "K" * 47


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

"""The demo's report: the leaderboard read back through the API, and the check of every outcome.

Kept apart from the driver (scripts/demo.py) so the end-to-end tests can judge a
contest with exactly the checks the demo prints.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any

import httpx

from scripts.demo_cast import NETUID

if TYPE_CHECKING:
    from scripts.demo import Demo, Entry


def api_get(d: Demo, path: str) -> Any:
    for _ in range(20):
        r = httpx.get(f"{d.api_url}{path}", timeout=10)
        if r.status_code == 429:
            time.sleep(float(r.headers.get("Retry-After", "1")))
            continue
        r.raise_for_status()
        return r.json()
    raise RuntimeError(f"API kept refusing {path}")


def leaderboard(d: Demo, scores: dict[str, Any], dqs: dict[str, Any]) -> str:
    """The final table: king, each evaluated model's KL with its 95% CI, disqualifications with reasons."""
    names = {hk: n for n, hk in d.hotkeys.items()}
    king = scores.get("king")
    lines = ["", "=" * 78, "FINAL LEADERBOARD", "=" * 78]
    if king:
        lines.append(
            f"king: {names.get(king['hotkey'], king['hotkey'])} ({king.get('repo')}) uid {king.get('uid')} "
            f"KL {king.get('kl') or float('nan'):.4f} since block {king['since_block']}"
        )
    lines.append(f"{'miner':<10} {'repo':<20} {'state':<15} {'mean KL':>9}  {'95% CI':<19} prompts")
    rows = sorted(scores.get("evaluations", []), key=lambda s: (s.get("mean_kl") is None, s.get("mean_kl") or 0))
    seen: set[str] = set()
    for s in rows:
        if s["hotkey"] in seen:
            continue
        seen.add(s["hotkey"])
        kl = f"{s['mean_kl']:.4f}" if s.get("mean_kl") is not None else "-"
        ci = f"[{s['ci_lo']:.4f}, {s['ci_hi']:.4f}]" if s.get("ci_lo") is not None else "-"
        lines.append(
            f"{names.get(s['hotkey'], s['hotkey'][:10]):<10} {str(s.get('repo'))[:20]:<20} "
            f"{s['state']:<15} {kl:>9}  {ci:<19} {s['n_prompts']}"
        )
    stopped = [s for s in rows if s["state"] == "onpolicy_stopped"]
    if stopped:
        lines.append("stopped by the on-policy guard (beat the king on KL, but not on their own text):")
        for s in stopped:
            lines.append(f"  {names.get(s['hotkey'], s['hotkey'][:10]):<10} {str(s.get('reason'))[:200]}")
    lines.append("disqualified:")
    for q in dqs.get("items", []):
        of = (q.get("evidence") or {}).get("copy_of")
        extra = f" (copy of {names.get(of['hotkey'], of['hotkey'])})" if of else ""
        lines.append(
            f"  {names.get(q['hotkey'], q['hotkey'][:10]):<10} {q['reason']:<16} [{q['check']}] "
            f"{q['detail'][:70]}{extra}"
        )
    lines.append("=" * 78)
    return "\n".join(lines)


def _latest(scores: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each hotkey's evaluation in its most recent round."""
    out: dict[str, dict[str, Any]] = {}
    for s in sorted(scores.get("evaluations", []), key=lambda s: s["round_id"]):
        out[s["hotkey"]] = s
    return out


def _paired_gain(d: Demo, round_id: int, challenger: str, king: str) -> tuple[float, float] | None:
    """Mean KL of (challenger, king) over the prompts both were scored on in one round (from its audit)."""
    audit = api_get(d, f"/api/rounds/{round_id}")
    kl = {e["hotkey"]: e["prompt_kl"] for e in audit["evaluations"]}
    if challenger not in kl or king not in kl:
        return None
    pairs = [(a, b) for a, b in zip(kl[challenger], kl[king], strict=False) if a is not None and b is not None]
    if not pairs:
        return None
    return sum(a for a, _ in pairs) / len(pairs), sum(b for _, b in pairs) / len(pairs)


def check_outcome(
    d: Demo, e: Entry, scores: dict[str, Any], dqs: dict[str, dict[str, Any]], history: dict[str, Any]
) -> str | None:
    """None when ``e`` ended as its ``outcome`` says, else what happened instead."""
    hk, of = d.hotkeys[e.name], d.hotkeys.get(e.of, "")
    king = (scores.get("king") or {}).get("hotkey")
    latest = _latest(scores)
    mine, theirs, dq = latest.get(hk), latest.get(of), dqs.get(hk)
    got = f"state {mine['state'] if mine else 'not evaluated'}" + (f", disqualified {dq['reason']}" if dq else "")
    kind, _, check = e.outcome.partition(":")
    if kind in ("COPY", "FUNCTIONAL_COPY", "INVALID"):
        if dq is None or dq["reason"] != kind or (check and dq["check"] != check):
            return got + (f" [{dq['check']}]" if dq else "")
        copy_of = (dq.get("evidence") or {}).get("copy_of") or {}
        if kind != "INVALID" and copy_of.get("hotkey") != of:
            return f"{kind} of {copy_of.get('hotkey')}, not of {e.of}"
        return None
    if dq is not None:
        return got
    if kind == "king":
        return None if king == hk else f"{got}; the king is {king}"
    if kind == "dethroned":
        was_king = any(c.get("hotkey") == hk for c in history.get("changes", []))
        return None if was_king and king != hk and mine and mine["state"] == "dethroned" else got
    if kind == "loses":
        ok = mine and theirs and king != hk and mine["mean_kl"] is not None and mine["mean_kl"] > theirs["mean_kl"]
        return None if ok else got
    if kind == "guarded":  # beat the king on KL (by more than epsilon) and the on-policy guard stopped it
        why = str((mine or {}).get("reason"))
        if mine is None or mine["state"] != "onpolicy_stopped" or "its own continuations" not in why:
            return got
        gain, eps, problem = _gain_over(d, scores, mine, hk, of, e.of, got)
        if problem:
            return problem
        ok = gain > eps and king != hk
        return None if ok else f"{got}; paired KL gain over {e.of} {gain:+.1%} (wanted > {eps:.0%})"
    if kind == "marginal":
        if mine is None or king == hk or mine["state"] == "won":
            return got
        gain, eps, problem = _gain_over(d, scores, mine, hk, of, e.of, got)
        if problem:
            return problem
        return None if 0 < gain < eps else f"{got}; paired KL gain over {e.of} {gain:+.1%} (wanted 0..{eps:.0%})"
    raise ValueError(f"unknown expected outcome {e.outcome!r} for {e.name}")


def _gain_over(
    d: Demo, scores: dict[str, Any], mine: dict[str, Any], hk: str, of: str, of_name: str, got: str
) -> tuple[float, float, str | None]:
    """(relative KL gain over ``of`` in the same round, the rules' epsilon, a problem or None)."""
    pair = _paired_gain(d, mine["round_id"], hk, of)
    eps = float(scores.get("epsilon", d.recipe.rules.get("epsilon", 0.0)))
    if pair is None:
        return 0.0, eps, f"{got}; not paired with {of_name} in round {mine['round_id']}"
    return 1 - pair[0] / pair[1], eps, None


def check_outcomes(d: Demo, scores: dict[str, Any], dqs_page: dict[str, Any]) -> tuple[int, list[str]]:
    """Compare every cast member's outcome (read through the API) and the chain's weights with the expectations.

    Returns the number of differences and a report, one line per check.
    """
    dqs = {q["hotkey"]: q for q in dqs_page.get("items", [])}
    history = api_get(d, "/api/history")
    lines, failed = [], 0
    for e in d.cast:
        if not e.outcome:
            continue
        why = check_outcome(d, e, scores, dqs, history)
        failed += why is not None
        lines.append(
            f"  {'ok  ' if why is None else 'FAIL'} {e.name:<10} expected {e.expect or e.outcome}"
            + ("" if why is None else f" - got {why}")
        )
    king = (scores.get("king") or {}).get("hotkey")
    weights = chain_weights(d)
    uid = next((n.uid for n in d.sim.neurons() if n.hotkey == king), None) if king else None
    w = dict(zip(*weights, strict=True)) if weights else {}
    ok_w = uid is not None and w.get(uid) == 1.0 and sum(w.values()) == 1.0
    failed += not ok_w
    lines.append(
        f"  {'ok  ' if ok_w else 'FAIL'} {'weights':<10} expected all the weight on the king's uid {uid}"
        f" - got {({u: x for u, x in w.items() if x}) or 'no weights'} on the chain"
    )
    kings = {name: _last_king(d, name) for name in d.validator_names}
    agree = len(set(kings.values())) == 1 and all(
        chain_weights(d, name) == weights for name in d.validator_names if kings[name] is not None
    )
    failed += not agree
    lines.append(
        f"  {'ok  ' if agree else 'FAIL'} {'agreement':<10} expected all {len(kings)} validator(s) to crown one king"
        f" and set one weight vector - got {sorted({_name(d, k) for k in kings.values()})}"
    )
    head = "all outcomes as expected" if not failed else f"{failed} OUTCOME(S) DIFFER FROM THE EXPECTATIONS"
    return failed, [f"expectations: {head}", *lines, *([head] if failed else [])]


def chain_weights(d: Demo, name: str = "validator") -> tuple[list[int], list[float]] | None:
    """Validator ``name``'s weight vector as the SimChain recorded it (read-only)."""
    with closing(sqlite3.connect(f"file:{d.sim_db}?mode=ro", uri=True)) as conn:
        row = conn.execute(
            "SELECT uids, weights FROM weights WHERE netuid = ? AND hotkey = ?", (NETUID, d.hotkeys[name])
        ).fetchone()
    return (json.loads(row[0]), json.loads(row[1])) if row else None


def slot_records(d: Demo, name: str) -> list[dict[str, Any]]:
    """Validator ``name``'s slot records (``validator.store`` table ``slots``), oldest first; [] before any."""
    path = d.db_of(name)
    if not path.exists():
        return []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM slots ORDER BY slot")]


def _name(d: Demo, hotkey: str | None) -> str:
    return next((n for n, hk in d.hotkeys.items() if hk == hotkey), str(hotkey))


def _last_king(d: Demo, name: str) -> str | None:
    done = [r for r in slot_records(d, name) if r["state"] != "open"]
    return done[-1]["king_hotkey"] if done else None


def agreement_table(d: Demo) -> str:
    """Each validator's king after every slot it judged, and whether the chain's consensus agreed with it."""
    names = {hk: n for n, hk in d.hotkeys.items()}
    per = {v: {r["slot"]: r for r in slot_records(d, v) if r["state"] != "open"} for v in d.validator_names}
    slots = sorted({s for rows in per.values() for s, r in rows.items() if r["state"] == "judged" or r["anchor"]})
    width = max(20, *(len(v) + 2 for v in d.validator_names))
    lines = ["", "KINGS PER SLOT (each validator's own store; 'adopted' = taken from the chain's consensus)"]
    lines.append(f"{'slot':<6}" + "".join(f"{v:<{width}}" for v in d.validator_names) + "all agree")
    for slot in slots:
        rows = {v: per[v].get(slot) for v in d.validator_names}
        kings = {names.get(r["king_hotkey"], "none") for r in rows.values() if r}
        cells = [
            "-"
            if r is None
            else names.get(r["king_hotkey"], "none") + (" (adopted)" if r["anchor"] == "consensus" else "")
            for r in rows.values()
        ]
        lines.append(f"{slot:<6}" + "".join(f"{c:<{width}}" for c in cells) + ("yes" if len(kings) == 1 else "NO"))
    return "\n".join(lines)

"""Store rows -> response models: one function per endpoint, no HTTP in here.

Each takes the read-only ``Store`` (and the current wall time where ages are
reported) and returns a validated model; ``render`` turns it into the bytes
the cache keeps.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from pydantic import BaseModel, ValidationError

from api import models as m
from eval.rules import DEFAULT_RULES, ContestRules
from eval.schemas import JobProgress
from validator.store.database import Store

PROGRESS_STALE_S = 900.0
"""Progress older than this (and no dispatched round) is shown as inactive."""
SYNC_STALE_S = 1800.0
"""A last sync older than this (six default epochs) makes /api/health ``degraded`` unless a round is progressing."""
NOT_RANKED = frozenset({"model_error", "kl_too_high", "copy", "functional_copy", "onpolicy_stopped"})
"""Evaluation states whose KL is not comparable on the leaderboard (a KL the on-policy guard refused included)."""
PROGRESS_KEYS = frozenset({"round_id", "job_id", "kind", "block", "models", "phase", "progress"}) | frozenset(
    JobProgress.model_fields
)
"""What the progress row may show publicly (the loop also records the pod's address, which stays private)."""


def render(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def _plain(rows: Any) -> Any:
    """Store rows (dataclasses, or lists of them) as the plain dicts the response models validate."""
    if isinstance(rows, list):
        return [_plain(x) for x in rows]
    return dataclasses.asdict(rows)


def _rules(store: Store) -> tuple[ContestRules | dict[str, Any], str, int | None]:
    row = store.latest_rules()
    if row is None:
        return DEFAULT_RULES, DEFAULT_RULES.digest(), None
    try:
        return ContestRules.model_validate(row.rules), row.rules_digest, row.round_id
    except ValidationError:  # rules written by another version of the code: serve them as stored
        return m.sanitize(row.rules), row.rules_digest, row.round_id


def _age(now: float, at: float | None) -> float | None:
    return max(0.0, now - at) if at is not None else None


def health(store: Store, now: float | None = None, expect: tuple[str, int] | None = None) -> m.Health:
    """Last sync = the loop's newest metagraph snapshot (``save_metagraph`` + meta ``last_epoch_block`` each epoch).

    ``degraded`` when the validator never synced, or its last sync is older than ``SYNC_STALE_S``
    while no live round progress is fresher than ``PROGRESS_STALE_S`` (a long pod round blocks the
    epoch loop, but then progress keeps arriving). ``expect`` is the API's own (network, netuid): a store
    the validator wrote for another subnet is reported, since the overview and prices would then be wrong.
    A hub token the hub rejects (``validator.hub_health``) also degrades: nobody is judged meanwhile.
    """
    now = time.time() if now is None else now
    meta = store.meta()
    mg = store.metagraph()
    blocks = [b for b in (meta.get("last_epoch_block"), mg.block if mg else None) if isinstance(b, int)]
    block = max(blocks) if blocks else None
    sync_age = _age(now, mg.at) if mg else None
    last = store.stats(recent=1).last_round
    last_at = (last.finished or last.started) if last else None
    prog = store.progress()
    prog_age = _age(now, prog.updated) if prog else None
    reasons: list[str] = []
    if expect is not None and "network" in meta and "netuid" in meta and (meta["network"], meta["netuid"]) != expect:
        reasons.append(
            f"the store is for network {str(meta['network'])[:40]} netuid {meta['netuid']}, "
            f"this API is configured for {expect[0][:40]} netuid {expect[1]}"
        )
    if block is None:
        reasons.append("the validator has not synced yet")
    elif (sync_age is None or sync_age > SYNC_STALE_S) and (prog_age is None or prog_age > PROGRESS_STALE_S):
        reasons.append(f"last sync older than {SYNC_STALE_S:.0f}s and no live round progress")
    hub_auth = meta.get("hub_auth") if meta.get("hub_auth") in ("ok", "rejected") else None
    hub_detail = str(meta.get("hub_auth_detail") or "")[:500] or None
    if hub_auth == "rejected":
        reasons.append(
            f"the hub rejects the validator's token (HF_TOKEN) since block {meta.get('hub_auth_block')}: "
            "submissions wait unjudged until it is fixed"
        )
    return m.Health(
        status="degraded" if reasons else "ok",
        db_ok=True,
        last_sync_block=block,
        last_sync_age_s=sync_age,
        last_round_id=last.id if last else None,
        last_round_state=last.state if last else None,
        last_round_age_s=_age(now, last_at),
        hub_auth=hub_auth,
        hub_auth_detail=hub_detail if hub_auth == "rejected" else None,
        reasons=reasons,
        now=now,
    )


def metagraph(store: Store) -> m.MetagraphOut:
    mg = store.metagraph()
    if mg is None:
        return m.MetagraphOut(n=0, neurons=[])
    neurons = m.sanitize(mg.neurons)
    return m.MetagraphOut(block=mg.block, at=mg.at, n=len(neurons), neurons=neurons)


def commitments(store: Store) -> m.CommitmentsOut:
    rows = store.commitments()
    return m.CommitmentsOut(total=len(rows), items=m.sanitize(_plain(rows)))


def _rank(evaluations: list[dict[str, Any]]) -> None:
    """Rank 1.. by mean KL, only among comparable rows; the rest get no rank (not the next number)."""
    ok = [
        e
        for e in evaluations
        if e.get("status") == "ok"
        and e.get("mean_kl") is not None
        and e.get("state") not in NOT_RANKED
        and not e.get("disqualified")
    ]
    for i, e in enumerate(sorted(ok, key=lambda e: (e["mean_kl"], e["commit_block"], e["hotkey"])), 1):
        e["rank"] = i


def scores(store: Store) -> m.ScoresOut:
    data = m.sanitize(_plain(store.scores()))
    _rank(data["evaluations"])
    rules, digest, _ = _rules(store)
    r = rules if isinstance(rules, ContestRules) else DEFAULT_RULES
    return m.ScoresOut(
        **data, epsilon=r.epsilon, alpha=r.alpha, max_kl=r.max_kl, rules_version=r.version, rules_digest=digest
    )


def disqualifications(store: Store) -> m.DisqualificationsOut:
    rows = store.disqualifications()
    return m.DisqualificationsOut(total=len(rows), items=m.sanitize(_plain(rows)))


def rounds(store: Store, page: int, per_page: int) -> m.RoundsPage:
    data = m.sanitize(_plain(store.rounds(page=page, per_page=per_page)))
    pages = max(1, -(-data["total"] // data["per_page"]))
    return m.RoundsPage(**data, pages=pages)


def _public_pod(name: Any) -> str | None:
    """The pod label without addresses: ``--pod`` URLs are the operator's private GPU hosts."""
    if not isinstance(name, str):
        return None
    return ",".join("remote" if ":" in p and not p.startswith("local:") else p for p in name.split(","))


def round_audit(store: Store, round_id: int) -> m.RoundAudit | None:
    row = store.round(round_id)
    if row is None:
        return None
    data = m.sanitize(_plain(row))  # the models' ids become {"hotkey", "commit_block"} objects
    data["pod"] = _public_pod(row.pod)
    return m.RoundAudit(**data)


def miner(store: Store, hotkey: str) -> m.MinerOut | None:
    subs = store.submission(hotkey)
    if not subs:
        return None
    king = store.current_king()
    return m.MinerOut(hotkey=hotkey, is_king=bool(king and king.hotkey == hotkey), submissions=m.sanitize(_plain(subs)))


def history(store: Store) -> m.HistoryOut:
    return m.HistoryOut(
        points=m.sanitize(_plain(store.king_kl_series())), changes=m.sanitize(_plain(store.king_history()))
    )


def progress(store: Store, now: float | None = None) -> m.ProgressOut:
    now = time.time() if now is None else now
    row = store.progress()
    if row is None:
        return m.ProgressOut(active=False)
    data = m.sanitize(row.data)
    if not isinstance(data, dict):
        data = {}
    data = {k: v for k, v in data.items() if k in PROGRESS_KEYS}
    src: dict[str, Any] = data["progress"] if isinstance(data.get("progress"), dict) else data
    try:
        prog: JobProgress | None = JobProgress.model_validate(
            {k: v for k, v in src.items() if k in JobProgress.model_fields}
        )
    except ValidationError:
        prog = None
    rid = data.get("round_id")
    live = store.interrupted_rounds()
    active = bool(live) and (rid is None or any(r.id == rid for r in live))
    age = _age(now, row.updated)
    active = active and (age is None or age < PROGRESS_STALE_S)
    return m.ProgressOut(
        active=active,
        round_id=rid if isinstance(rid, int) else None,
        updated=row.updated,
        age_s=age,
        phase=str(data["phase"])[:40] if data.get("phase") is not None else None,
        progress=prog,
        data=data,
    )


def rules(store: Store) -> m.RulesOut:
    r, digest, rid = _rules(store)
    return m.RulesOut(source="round" if rid is not None else "default", round_id=rid, digest=digest, rules=r)


def _key(hotkey: str | None, block: int | None) -> m.SubmissionKey | None:
    return m.SubmissionKey(hotkey=hotkey, commit_block=block) if hotkey and block is not None else None


def consensus(store: Store, recent: int = 20) -> m.ConsensusOut:
    """The newest finished slot's agreement record, with the slots before it (what ``validator.slots`` wrote)."""
    rows = store.latest_slots(recent)
    slots = [
        m.SlotOut(
            slot=r.slot,
            start_block=r.start_block,
            state=r.state,  # type: ignore[arg-type]  # one of SLOT_STATES, checked by the schema
            round_id=r.round_id,
            king=_key(r.king_hotkey, r.king_block),
            consensus_king=_key(r.consensus_hotkey, r.consensus_block),
            agree=r.agree,
            anchor=r.anchor,  # type: ignore[arg-type]
            observed_block=r.observed_block,
        )
        for r in rows
    ]
    done = next((r for r in rows if r.state != "open"), None)
    if done is None:
        return m.ConsensusOut(slots=slots)
    return m.ConsensusOut(
        slot=done.slot,
        own_king=_key(done.king_hotkey, done.king_block),
        consensus_king=_key(done.consensus_hotkey, done.consensus_block),
        agreeing=done.agree,
        disagreeing_slots=done.streak or 0,
        vtrust=m.sanitize(done.vtrust),
        observed_block=done.observed_block,
        slots=slots,
    )

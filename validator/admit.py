"""The admission driver: run ``eval.admission.check_model`` on new submissions only, and
check the king's repo before weights.

Why a driver apart from the loop: the rules of *when* to ask the model store are
what went wrong before - outages disqualified good models (LESSONS 21), ghost
repos kept their slot (LESSONS 19), a vanished king kept the crown (LESSONS 20)
and a copy committed later took an earlier commit's place (LESSONS 1). Each is
one small function here. The decisions themselves stay in ``validator.contest``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from eval.admission import Admitted, Rejected, TeacherSpec, check_model
from eval.errors import HubAuthError, TransientError
from eval.model_store.port import DefiniteStoreError, ModelStore
from eval.rules import ContestRules
from eval.schemas import SubmissionId
from validator import hub_health
from validator.contest import SubmissionStatus, strike_missing_repo
from validator.store.database import Store

log = logging.getLogger(__name__)

CheckFn = Callable[..., Admitted | Rejected]
AdmissionResult = Literal["admitted", "rejected", "transient"]
_STATUS_AFTER: dict[AdmissionResult, SubmissionStatus] = {
    "admitted": "admitted",
    "rejected": "invalid",
    "transient": "pending",
}


@dataclass
class AdmitReport:
    admitted: list[SubmissionId] = field(default_factory=list)
    rejected: list[SubmissionId] = field(default_factory=list)
    copies: list[SubmissionId] = field(default_factory=list)
    transient: list[SubmissionId] = field(default_factory=list)
    checks: int = 0
    hub_auth_error: str | None = None


def backoff_blocks(attempts: int, base: int, cap: int) -> int:
    """Blocks to wait before retry number ``attempts + 1``: doubling from ``base``, at most ``cap``."""
    return int(min(cap, base * 2 ** min(max(attempts, 0), 30)))


def admission_status(result: AdmissionResult, detail: str | None) -> tuple[SubmissionStatus, str | None]:
    """A submission's status and status detail after an admission attempt (pure).

    Admitted: a challenger, nothing to explain. Rejected: final, ``invalid`` (LESSONS 18).
    Transient: still ``pending``, retried later and never held against it (LESSONS 21).
    """
    return _STATUS_AFTER[result], (None if result == "admitted" else detail)


def record_attempt(
    store: Store,
    key: SubmissionId,
    result: AdmissionResult,
    *,
    params: int | None = None,
    metadata_hash: str | None = None,
    check: str | None = None,
    detail: str | None = None,
    next_retry_block: int | None = None,
) -> None:
    """Record an admission attempt with the status ``admission_status`` decides for it."""
    status, status_detail = admission_status(result, detail)
    store.record_admission(
        key,
        result,
        status,
        status_detail=status_detail,
        params=params,
        metadata_hash=metadata_hash,
        check=check,
        detail=detail,
        next_retry_block=next_retry_block,
    )


def admit_pending(
    store: Store,
    model_store: ModelStore,
    head_block: int,
    rules: ContestRules,
    teacher: Callable[[], TeacherSpec],
    *,
    backoff_base: int = 5,
    backoff_cap: int = 600,
    check: CheckFn = check_model,
) -> AdmitReport:
    """Admit every pending submission whose retry time has come, oldest commit first.

    ``teacher`` is called lazily (only when something is pending) so a teacher
    lookup never costs anything on a quiet epoch. A ``TransientError`` (from the
    store or the teacher lookup) schedules a retry with backoff and never rejects.
    A ``HubAuthError`` (the hub refused our token) touches no submission: it is
    reported (ERROR log, ``/api/health``) and the rest of the queue waits for the
    next epoch, since every other call would be refused the same way.
    """
    report = AdmitReport()
    pending = store.pending_admissions(head_block)
    if not pending:
        return report
    spec: TeacherSpec | None = None
    for row in pending:
        key = row.key
        try:
            spec = spec or teacher()
            report.checks += 1
            verdict = check(model_store, row.repo, row.revision, rules, spec)
        except HubAuthError as exc:
            hub_health.report_rejected(store, str(exc), head_block, "admission")
            report.hub_auth_error = str(exc)
            break
        except TransientError as exc:
            wait = backoff_blocks(row.attempts or 0, backoff_base, backoff_cap)
            record_attempt(
                store, key, "transient", detail=f"transient: {exc}"[:2000], next_retry_block=head_block + wait
            )
            report.transient.append(key)
            log.warning("admission of %s deferred %d blocks: %s", key, wait, exc)
            continue
        hub_health.report_ok(store, head_block)
        if isinstance(verdict, Rejected):
            with store.transaction():
                record_attempt(store, key, "rejected", check=verdict.check, detail=verdict.detail)
                store.add_disqualification(key, verdict.reason, verdict.check, verdict.detail, {}, head_block)
            report.rejected.append(key)
            log.info("rejected %s (%s): %s", key, verdict.check, verdict.detail)
            continue
        copy_of = _record_admitted(store, key, verdict, head_block)
        (report.copies if copy_of else report.admitted).append(key)
    return report


def _record_admitted(store: Store, key: SubmissionId, verdict: Admitted, head_block: int) -> SubmissionId | None:
    """Record an admitted model; the earliest commit of the same metadata hash owns it (LESSONS 1).

    Returns the owner when ``key`` is a copy. A later commit that was admitted
    earlier (its elder was delayed by an outage) is disqualified now, whatever its state.
    """
    with store.transaction():
        holders = [k for k in store.metadata_hash_holders(verdict.metadata_hash) if k != key]
        record_attempt(store, key, "admitted", params=verdict.params, metadata_hash=verdict.metadata_hash)
        store.add_integrity(key, {f.path: f.sha256 for f in verdict.files if f.sha256})
        elder = [k for k in holders if k < key]
        if elder:
            _disqualify_copy(store, key, elder[0], verdict.metadata_hash, head_block)
            return elder[0]
        for later in (k for k in holders if k > key):
            _disqualify_copy(store, later, key, verdict.metadata_hash, head_block)
    log.info("admitted %s (%d params)", key, verdict.params)
    return None


def _disqualify_copy(store: Store, key: SubmissionId, owner: SubmissionId, metadata_hash: str, block: int) -> None:
    detail = f"same files as the earlier commit {owner}"
    evidence: dict[str, Any] = {
        "copy_of": {"hotkey": owner.hotkey, "commit_block": owner.commit_block},
        "metadata_hash": metadata_hash,
    }
    store.add_disqualification(key, "COPY", "metadata_hash", detail, evidence, block)
    store.set_status(key, "disqualified", detail)
    log.info("COPY: %s is a copy of %s", key, owner)


def check_king_repo(store: Store, model_store: ModelStore, head_block: int, max_strikes: int) -> bool:
    """Is the king's pinned revision still there? Bounded strikes, then REMOVED (LESSONS 19, 20).

    Returns False when the king was removed now. Transient errors never count, nor
    does a refused token (``HubAuthError``: reported, not held against the king).
    """
    king = store.current_king()
    if king is None:
        return True
    key = king.key
    strikes = store.strikes(key)
    try:
        model_store.files(king.repo, king.revision)
        outcome = "ok"
        detail = ""
    except HubAuthError as exc:
        hub_health.report_rejected(store, str(exc), head_block, "the king's repo check")
        return True
    except TransientError as exc:
        log.warning("king repo check deferred (transient): %s", exc)
        return True
    except DefiniteStoreError as exc:
        outcome = "missing"
        detail = f"{type(exc).__name__}: {exc}"
    hub_health.report_ok(store, head_block)
    result = strike_missing_repo(strikes, max_strikes, outcome)  # type: ignore[arg-type]
    if result.strikes != strikes:
        store.set_strikes(key, result.strikes)
    if outcome == "missing":
        log.warning("king %s repo missing (strike %d/%d): %s", key, result.strikes, max_strikes, detail)
    if not result.removed:
        return True
    with store.transaction():
        store.set_status(key, "removed", detail)
        store.add_disqualification(key, "REMOVED", "availability", detail, {"strikes": result.strikes}, head_block)
    log.warning("king %s REMOVED: its repo is gone", key)
    return False

"""Does the hub accept this validator's token? One status, written by the loop, read by ``/api/health``.

Why it is kept at all: a rejected ``HF_TOKEN`` gives no verdict (LESSONS 28), so
nothing else in the store would change - submissions just stay pending and the
king unchecked. The operator must see it, in the log (ERROR, every time it
happens) and on the public health endpoint, which reads only the store. It lives
in the store's ``meta`` rows (``hub_auth``, ``hub_auth_detail``,
``hub_auth_block``, ``hub_auth_at``): no schema change.
"""

from __future__ import annotations

import logging
import time

from validator.store.database import Store

log = logging.getLogger(__name__)

REJECTED = "rejected"
OK = "ok"


MODELS = "models"
DATASET = "dataset"
"""Which reader met the hub: the model store and the prompt dataset may be configured apart (a local
hub with FineWeb), so only the same reader's success clears a rejection it recorded."""


def report_rejected(store: Store, detail: str, block: int | None, step: str, source: str = MODELS) -> None:
    """Log an ERROR and record that the hub refused our credentials during ``step``."""
    log.error(
        "the hub rejected this validator's token (HF_TOKEN) during %s: %s; no verdict, nobody is "
        "judged by it; fix the token - retried every epoch",
        step,
        detail,
    )
    store.set_meta(
        hub_auth=REJECTED,
        hub_auth_detail=f"{step}: {detail}"[:500],
        hub_auth_block=block or 0,
        hub_auth_source=source,
        hub_auth_at=time.time(),
    )


def report_ok(store: Store, block: int | None, source: str = MODELS) -> None:
    """The hub answered ``source``'s request: clear a rejection that source recorded (writes only on a change)."""
    meta = store.meta()
    state = meta.get("hub_auth")
    if state == OK or (state == REJECTED and meta.get("hub_auth_source", MODELS) != source):
        return
    if state == REJECTED:
        log.warning("the hub accepts this validator's token again")
    store.set_meta(
        hub_auth=OK, hub_auth_detail="", hub_auth_block=block or 0, hub_auth_source=source, hub_auth_at=time.time()
    )

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

from validator.store import Store

log = logging.getLogger(__name__)

REJECTED = "rejected"
OK = "ok"


def report_rejected(store: Store, detail: str, block: int | None, step: str) -> None:
    """Log an ERROR and record that the hub refused our credentials during ``step``."""
    log.error("the hub rejected this validator's token (HF_TOKEN) during %s: %s; no verdict, nobody is "
              "judged by it; fix the token - retried every epoch", step, detail)  # fmt: skip
    store.set_meta(hub_auth=REJECTED, hub_auth_detail=f"{step}: {detail}"[:500], hub_auth_block=block or 0,
                   hub_auth_at=time.time())  # fmt: skip


def report_ok(store: Store, block: int | None) -> None:
    """The hub answered a request with our token: clear a recorded rejection (writes only on a change)."""
    state = store.meta().get("hub_auth")
    if state == OK:
        return
    if state == REJECTED:
        log.warning("the hub accepts this validator's token again")
    store.set_meta(hub_auth=OK, hub_auth_detail="", hub_auth_block=block or 0, hub_auth_at=time.time())

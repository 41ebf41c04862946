"""The validator's state: one SQLite file in WAL mode, written by the loop, read by the API.

``Store`` is composed of one module per job: the connection and its transaction
(``connection``), submission and admission writes (``submission_writes``), round
and throne writes (``round_writes``), the validator's own status - meta, weights,
metagraph, progress (``status_writes``) - and the read queries: the loop's own
(``loop_reads``) and those the API publishes (``api_reads``). The store persists
what the domain decided and derives nothing.
"""

from __future__ import annotations

from validator.store.api_reads import ApiReads
from validator.store.connection import BUSY_TIMEOUT_MS, DEFAULT_PATH, StoreError, dumps, real
from validator.store.round_writes import RoundWrites
from validator.store.status_writes import StatusWrites

__all__ = ["BUSY_TIMEOUT_MS", "DEFAULT_PATH", "Store", "StoreError", "dumps", "real"]


class Store(RoundWrites, StatusWrites, ApiReads):
    """One connection to the store. Use ``Store.open`` (writer) or ``Store.open_readonly`` (API)."""

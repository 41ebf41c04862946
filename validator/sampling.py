"""The round's prompts, drawn so that a failing prompt source ends one step, never the loop.

The source reads FineWeb through the hub, HTTP clients, fsspec and pyarrow. Any
failure there (``PromptSourceUnavailable``, ``HubAuthError``, or an exception
nobody translated) becomes a typed ``TransientError`` with a logged reason; the
epoch goes on to weights, nobody is judged, and the source is asked again with
backoff (from one epoch up to ``cap`` blocks) instead of on every poll.
"""

from __future__ import annotations

import logging

from eval.errors import HubAuthError, KlhillError, PromptSourceUnavailable, TransientError
from eval.prompts import PromptSource, sample_prompts
from eval.rules import ContestRules
from validator import hub_health
from validator.admit import backoff_blocks
from validator.store.database import Store

log = logging.getLogger(__name__)


class PromptSampler:
    """``sample_prompts`` with backoff state; owned by the loop thread (it writes hub health to the store)."""

    def __init__(self, source: PromptSource, store: Store, base_blocks: int, cap_blocks: int) -> None:
        self.source, self.store = source, store
        self.base, self.cap = max(1, base_blocks), max(1, cap_blocks)
        self.failures = 0
        self.retry_block = 0

    def sample(self, block_hash: str, rules: ContestRules, block: int) -> list[str]:
        """The prompts for this block hash; a ``TransientError`` while the source fails or backs off.

        A ``PromptError`` that is not transient (no files, too few usable rows) is
        logged and re-raised as is: it is about the configuration or this hash.
        """
        if block < self.retry_block:
            raise PromptSourceUnavailable(f"the prompt source failed recently; next try at block {self.retry_block}")
        try:
            prompts = sample_prompts(block_hash, rules, self.source)
        except TransientError as exc:
            self._failed(block, exc)
            raise
        except KlhillError as exc:
            log.error("prompt sampling failed: %s: %s; no round this epoch, nobody judged", type(exc).__name__, exc)
            raise
        except Exception as exc:  # noqa: BLE001 - third-party I/O must never end the loop
            self._failed(block, exc)
            raise PromptSourceUnavailable(f"unexpected {type(exc).__name__} from the prompt source: {exc}") from exc
        hub_health.report_ok(self.store, block, hub_health.DATASET)
        self.failures = self.retry_block = 0
        return prompts

    def _failed(self, block: int, exc: BaseException) -> None:
        wait = backoff_blocks(self.failures, self.base, self.cap)
        self.failures += 1
        self.retry_block = block + wait
        if isinstance(exc, HubAuthError):
            hub_health.report_rejected(self.store, str(exc), block, "prompt sampling", hub_health.DATASET)
        log.error(
            "prompt sampling failed (%s: %s); no round now, nobody judged; next try in %d blocks",
            type(exc).__name__,
            exc,
            wait,
            exc_info=not isinstance(exc, KlhillError),
        )

"""The weights step of an epoch: king 1.0, everyone else 0.0, until the chain shows exactly that.

A submission goes through up to three states, each in the store and the log:

1. **sent**: only when due (changed, or ``weights_interval`` passed), outside the chain's rate
   limit and a retry window after a failure (LESSONS 22, 23), and only when this validator has a
   permit and enough stake; otherwise a failed row says why and nothing is signed.
2. **accepted**: a direct set (``set``) or a timelocked commit (``committed``, subtensor's default),
   expected on chain by ``reveal_block``.
3. **confirmed**: ``Chain.weights_of`` shows the vector (``revealed`` for a commit), or, past its
   ``reveal_block`` without it, ``unconfirmed``: the reveal never came (subtensor drops a failed
   reveal silently) and the weights are submitted again when due.

While a commit waits for its reveal, nothing is re-sent for the same vector: each epoch only
reads whether it showed. A new king's vector may be committed meanwhile (the rate limit still
applies); the older commit is then ``superseded``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from eval.errors import TransientError
from validator.chain.port import Chain, ChainError, Neuron, weights_match, weights_standing
from validator.contest import Candidate, king_vanished, weights_due, weights_for
from validator.settings import LoopConfig
from validator.store.database import Store
from validator.store.rows import WeightsRow

log = logging.getLogger(__name__)
_CHAIN_ERRORS = (ChainError, TransientError)


def standing_refusal(me: Neuron | None, min_stake: float) -> tuple[str, str] | None:
    """(reason, message) when this validator's weights would not count now; None when they would."""
    if me is None:
        return weights_standing(registered=False, permit=False, stake=0.0, min_stake=min_stake)
    return weights_standing(registered=True, permit=me.validator_permit, stake=me.stake, min_stake=min_stake)


def _same(row: WeightsRow, uids: Sequence[int], weights: Sequence[float]) -> bool:
    return row.uids == list(uids) and row.weights == list(weights)


class WeightsKeeper:
    """Runs the weights step for the loop; owns no state beyond the store's rows."""

    def __init__(self, store: Store, config: LoopConfig, hotkey: str | None) -> None:
        self.store, self.config, self.hotkey = store, config, hotkey
        self.chain: Chain

    def step(self, chain: Chain, block: int, neurons: list[Neuron], king: Candidate | None) -> str:
        """One epoch's weights step on ``chain``; returns what happened (for the epoch report and the log)."""
        self.chain = chain
        vector = None if king is None or king_vanished(king) else weights_for(king.key, neurons)  # type: ignore[arg-type]
        if vector is None:
            return "no_king"
        uids, weights = vector
        settled = ""
        pending = self.store.pending_weights()
        if pending is not None:
            settled = self._settle(pending, block)
            if settled in ("waiting", "chain_error") and _same(pending, uids, weights):
                return "awaiting_reveal" if settled == "waiting" else "chain_error"
            if settled == "confirmed" and pending.state == "committed":
                settled = "revealed"
        last_any = self.store.last_weights(successful=False)
        if last_any and not last_any.success and block - last_any.block < self.config.weights_retry_blocks:
            return "retry_later"
        try:
            on_chain = self.chain.last_weights_block(self.hotkey) if self.hotkey else None
            rate_limit = self.chain.weights_rate_limit()
        except _CHAIN_ERRORS as exc:
            log.warning("weights skipped this epoch: chain read failed: %s: %s", type(exc).__name__, exc)
            return "chain_error"
        shown = self.store.last_weights(confirmed=True)
        changed = settled == "waiting" or shown is None or not _same(shown, uids, weights)
        last_ok = self.store.last_weights(successful=True)
        last_block = on_chain if on_chain is not None else (last_ok.block if last_ok else None)
        if not weights_due(last_block, block, changed, self.config.weights_interval, rate_limit):
            return {"confirmed": "confirmed", "revealed": "revealed", "missed": "unconfirmed"}.get(settled, "not_due")
        return self._send(block, neurons, uids, weights, king)

    def _send(self, block: int, neurons: list[Neuron], uids: list[int], weights: list[float], king: Any) -> str:
        try:
            refusal = self._standing(neurons)
        except _CHAIN_ERRORS as exc:
            log.warning("weights not sent this epoch: cannot read the stake threshold: %s: %s", type(exc).__name__, exc)
            return "chain_error"
        if refusal is not None:
            reason, message = refusal
            self.store.record_weights(block, uids, weights, False, f"{reason}: {message}")
            log.warning(
                "weights not sent (%s): %s; nothing signed, next try in %d blocks",
                reason,
                message,
                self.config.weights_retry_blocks,
            )
            return "skipped"
        try:
            receipt = self.chain.set_weights(uids, weights)
        except _CHAIN_ERRORS as exc:
            self.store.record_weights(block, uids, weights, False, f"{type(exc).__name__}: {exc}")
            log.error(
                "set_weights raised %s; retried in %d blocks: %s",
                type(exc).__name__,
                self.config.weights_retry_blocks,
                exc,
            )
            return "failed"
        if not receipt.success:
            message = f"{receipt.reason or 'failed'}: {receipt.message}"
            self.store.record_weights(block, uids, weights, False, message)
            log.error("weights refused (%s); retried in %d blocks", message, self.config.weights_retry_blocks)
            return "failed"
        at = receipt.block if receipt.block is not None else block
        state = "committed" if receipt.committed else "set"
        reveal = receipt.reveal_by if receipt.reveal_by is not None else at
        wid = self.store.record_weights(at, uids, weights, True, receipt.message, state=state, reveal_block=reveal)
        log.info(
            "weights %s at block %d: king %s -> 1.0 over %d uids%s",
            state,
            at,
            king.key,
            len(uids),
            f"; reveal expected by block {reveal}" if receipt.committed else "",
        )
        if receipt.committed:
            return "committed"
        row = self.store.pending_weights()
        settled = self._settle(row, block) if row is not None and row.id == wid else "chain_error"
        return {"confirmed": "set", "missed": "unconfirmed", "waiting": "set_unconfirmed"}.get(settled, settled)

    def _standing(self, neurons: list[Neuron]) -> tuple[str, str] | None:
        if self.hotkey is None:
            return None
        me = next((n for n in neurons if n.hotkey == self.hotkey), None)
        return standing_refusal(me, self.chain.weights_min_stake())

    def _settle(self, row: WeightsRow, block: int) -> str:
        """Has an accepted submission shown on chain? confirmed / waiting / missed / chain_error."""
        if self.hotkey is None:
            return "waiting"
        try:
            shown = self.chain.weights_of(self.hotkey)
        except _CHAIN_ERRORS as exc:
            log.warning("could not read weights to confirm submission %d: %s: %s", row.id, type(exc).__name__, exc)
            return "chain_error"
        committed = row.state == "committed"
        if weights_match(shown, row.uids, row.weights):
            self.store.confirm_weights(row.id, True, "revealed" if committed else None)
            log.info("weights from block %d %s on chain", row.block, "revealed" if committed else "confirmed")
            return "confirmed"
        deadline = row.reveal_block if row.reveal_block is not None else row.block
        if block < deadline:
            return "waiting"
        self.store.confirm_weights(row.id, False, "unconfirmed")
        log.error(
            "weights %s at block %d never showed on chain by block %d (%s); they are sent again when due",
            row.state,
            row.block,
            deadline,
            "the reveal failed: a timelocked commit is revealed only with "
            "a permit and enough stake, and a failed reveal is dropped silently"
            if committed
            else "the chain does not hold them",
        )
        return "missed"

"""A job's progress as the pod reports it: scorer callbacks in, ``JobProgress`` snapshots (tokens/s, ETA) out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from eval.schemas import JobProgress

log = logging.getLogger(__name__)

ProgressFn = Callable[[JobProgress], None]


class JobProgressTracker:
    """Turns scorer callbacks into JobProgress snapshots (tokens/s, ETA)."""

    def __init__(self, sink: ProgressFn | None, model_count: int, prompt_count: int) -> None:
        self.sink = sink
        self.state = JobProgress(phase="queued", model_count=model_count, prompt_count=prompt_count)
        self._t0 = time.monotonic()
        self._tokens = 0

    def phase(self, phase: str, model: str | None = None, index: int = 0) -> None:
        self._t0, self._tokens = time.monotonic(), 0
        self._emit(phase=phase, model=model, model_index=index, prompt=0, tokens_per_s=0.0, eta_s=None)

    def prompt_done(self, done: int, total: int | None = None, tokens: int = 0) -> None:
        total = total or self.state.prompt_count
        self._tokens += max(0, int(tokens))
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        eta = elapsed / done * (total - done) if done > 0 else None
        self._emit(prompt=min(done, total), prompt_count=total, tokens_per_s=self._tokens / elapsed, eta_s=eta)

    def callback(self) -> Callable[..., None]:
        def cb(done: int, total: int | None = None, tokens: int = 0, *_: Any, **__: Any) -> None:
            self.prompt_done(done, total, tokens)

        return cb

    def _emit(self, **changes: Any) -> None:
        self.state = self.state.model_copy(update=changes)
        if self.sink is not None:
            try:
                self.sink(self.state)
            except Exception:  # a broken progress sink must never break an evaluation
                log.exception("progress sink failed")

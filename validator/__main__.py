"""``python -m validator run ...``: wire the adapters chosen by flags into the epoch loop.

Production defaults are SubtensorChain, the Hugging Face model store, FineWeb
prompts and remote pods over HTTP; ``--network sim``, ``--hub-dir``,
``--corpus`` and ``--local-pod`` swap in the embedded ones. Wallet keys stay on
this host: pods receive signed jobs only. SIGTERM/SIGINT stop the loop after
the current step; an open round is resumed with the same job on the next start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from eval.exit_codes import ExitCode
from validator.settings import Settings, parse_args

log = logging.getLogger("validator")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


def setup_logging(fmt: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if fmt == "json":
        _route_library_output()


def _route_library_output() -> None:
    """JSON logs are JSON lines only: library progress bars off, library warnings through ``logging``.

    transformers writes to stderr through its own handler and tqdm bars (model loading in
    ``--local-pod``); a log shipper reading the JSON stream would choke on them.
    """
    logging.captureWarnings(True)
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


def _model_store(s: Settings) -> Any:
    if s.hub_dir is not None:
        from eval.model_store.local import LocalHub

        return LocalHub(s.hub_dir)
    from eval.model_store.huggingface import HuggingFaceStore  # token from HF_TOKEN only, never argv

    return HuggingFaceStore()


def _prompt_source(s: Settings, rules: Any) -> Any:
    from eval.fineweb import FineWebSource
    from eval.prompts import LocalCorpus

    if s.corpus is None:  # listings are kept per dataset revision next to the state database
        return FineWebSource(rules, cache_dir=s.db.parent / "dataset-listings")
    return LocalCorpus(None if s.corpus == "builtin" else s.corpus)


def _teacher_fn(s: Settings, model_store: Any, rules: Any) -> Callable[[], Any]:
    from eval.admission import TeacherSpec

    if s.teacher_dir is not None:
        return lambda: TeacherSpec.from_dir(s.teacher_dir)  # type: ignore[arg-type]

    def from_store() -> TeacherSpec:
        revision = rules.teacher_revision or model_store.resolve(rules.teacher_repo)
        return TeacherSpec.from_store(model_store, rules.teacher_repo, revision)

    return from_store


def _chain(s: Settings, wallet: Any) -> Any:
    if s.is_sim:
        from validator.chain.sim import SimChain

        assert s.sim_db is not None  # Settings guarantees it
        return SimChain(s.sim_db, s.netuid, block_time=s.sim_block_time, hotkey=wallet.hotkey.ss58_address)
    from validator.chain.subtensor import SubtensorChain

    return SubtensorChain(s.network, s.netuid, wallet)


def _pod(s: Settings, wallet: Any, model_store: Any) -> tuple[Any, str]:
    from validator.local_pod import LocalPod
    from validator.pod_client import HttpPod
    from validator.pod_pool import PodPool

    if s.local_pod:
        pod = LocalPod(model_store, s.workdir, s.device)
        return pod, f"local:{s.device}"
    targets = s.pod_targets
    pods = [HttpPod(t.url, wallet, receiver_ss58=t.hotkey) for t in targets]
    name = ",".join(t.url for t in targets)
    return (pods[0] if len(pods) == 1 else PodPool(pods)), name


def build(s: Settings) -> Any:
    """Construct the Validator for these settings (no network calls happen here)."""
    from validator.chain.wallets import load_wallet
    from validator.loop import Validator
    from validator.store.database import Store

    rules = s.load_rules()
    wallet = load_wallet(s.wallet_name, s.hotkey_name, s.wallet_path)
    model_store = _model_store(s)
    pod, pod_name = _pod(s, wallet, model_store)
    store = Store.open(s.db)
    config = dataclasses.replace(s.loop, pod_name=pod_name[:200])
    chain = _chain(s, wallet)
    store.set_meta(
        network=s.network,
        netuid=s.netuid,
        hotkey=str(wallet.hotkey.ss58_address),
        rules_digest=rules.digest(),
        started=time.time(),
    )
    return Validator(
        chain,
        store,
        model_store,
        pod,
        _prompt_source(s, rules),
        rules,
        _teacher_fn(s, model_store, rules),
        config,
    )


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_args(argv)
    setup_logging(s.log_format, s.log_level)
    from eval.errors import KlhillError

    try:
        validator = build(s)
    except (KlhillError, OSError, ValueError) as exc:
        log.error("cannot start: %s: %s", type(exc).__name__, exc)
        return ExitCode.NO_VERDICT  # PM2 does not restart it: a restart cannot fix the cause

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.warning("received %s: finishing the current step, then stopping", signal.Signals(signum).name)
        validator.request_stop()
        signal.signal(signum, signal.SIG_DFL)  # a second signal stops at once

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "validator starting: network=%s netuid=%d db=%s pod=%s", s.network, s.netuid, s.db, validator.config.pod_name
    )
    try:
        return int(validator.run(once=s.once))
    finally:
        validator.store.close()


if __name__ == "__main__":
    sys.exit(main())

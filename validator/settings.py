"""Typed validator settings, parsed from flags with environment fallbacks.

Only names, paths and URLs pass through argv; wallet secrets stay in the wallet
files (or env-named paths) and are never logged (LESSONS 25).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.rules import ContestRules
from validator.chain.sim import SIM_NETWORK


@dataclass(frozen=True)
class PodTarget:
    """A pod's URL and, optionally, the pod's own hotkey: every job is signed for that receiver.

    A pod started with ``--pod-hotkey`` accepts only jobs bound to it, so a job signed for one
    pod cannot be replayed to another pod of the same validator (btauth/1 ``receiver``).
    """

    url: str
    hotkey: str | None = None

    @classmethod
    def parse(cls, spec: str) -> PodTarget:
        """``URL`` or ``URL#HOTKEY_SS58``; raises ``ValueError`` naming what is wrong."""
        url, sep, hotkey = spec.strip().partition("#")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"pod {spec!r}: the URL must start with http:// or https://")
        if sep and not hotkey:
            raise ValueError(f"pod {spec!r}: nothing after '#'; give the pod's hotkey ss58 or drop the '#'")
        if hotkey:
            from bittensor.keyfiles import Keypair

            try:
                Keypair(ss58_address=hotkey)
            except ValueError as exc:
                raise ValueError(f"pod {spec!r}: {hotkey!r} is not a valid ss58 hotkey ({exc})") from None
        return cls(url.rstrip("/"), hotkey or None)


@dataclass(frozen=True)
class LoopConfig:
    """How the epoch loop paces itself: the one place these defaults live."""

    max_challengers: int | None = None
    weights_interval: int = 360
    weights_retry_blocks: int = 10
    epoch_blocks: int = 25
    poll_seconds: float = 12.0
    pod_deadline_s: float = 4 * 3600.0
    max_strikes: int = 3
    backoff_base: int = 5
    backoff_cap: int = 600
    chain_backoff_cap_s: float = 600.0
    pod_name: str = "pod"
    prompts_backoff_cap: int = 100  # blocks between tries of a failing prompt source, at most (~20 min)


@dataclass(frozen=True)
class Settings:
    """Everything one validator process needs; built by :func:`parse_args`."""

    network: str = "finney"
    netuid: int = 1
    sim_db: Path | None = None
    sim_block_time: float = 12.0
    wallet_name: str | None = None
    hotkey_name: str | None = None
    wallet_path: str | None = None
    db: Path = Path("state/validator.db")
    pods: tuple[str, ...] = ()  # each URL[#POD_HOTKEY], checked by parse_args: see pod_targets
    local_pod: bool = False
    device: str = "cpu"
    workdir: Path = Path("state/local-pod")
    hub_dir: Path | None = None
    corpus: str | None = None  # a directory, "builtin" (stdlib help topics), or None for FineWeb
    teacher_dir: Path | None = None
    teacher: str | None = None  # REPO[@REV]
    rules_path: Path | None = None
    loop: LoopConfig = LoopConfig()
    once: bool = False
    log_format: str = "plain"
    log_level: str = "INFO"

    @property
    def is_sim(self) -> bool:
        return self.network == SIM_NETWORK

    @property
    def pod_targets(self) -> tuple[PodTarget, ...]:
        return tuple(PodTarget.parse(p) for p in self.pods)

    def load_rules(self) -> ContestRules:
        """Rules from ``--rules`` (JSON) or the defaults, with ``--teacher REPO[@REV]`` applied."""
        rules = ContestRules.from_json(self.rules_path.read_text()) if self.rules_path else ContestRules()
        if self.teacher:
            repo, _, rev = self.teacher.partition("@")
            update = {"teacher_repo": repo, "teacher_revision": rev or None}
            rules = ContestRules.model_validate({**rules.model_dump(), **update})
        return rules


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    d = LoopConfig()
    p = argparse.ArgumentParser(prog="python -m validator", description="klhill king-of-the-hill validator")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the validator loop")
    r.add_argument(
        "--network",
        default=env.get("BT_NETWORK", "finney"),
        help="sim | finney | test | local | ws://... (env BT_NETWORK)",
    )
    r.add_argument("--netuid", type=int, default=int(env.get("KLHILL_NETUID", "1")))
    r.add_argument("--sim-db", type=Path, default=env.get("KLHILL_SIM_DB"), help="SimChain file (--network sim)")
    r.add_argument("--sim-block-time", type=_positive(float), default=12.0)
    r.add_argument("--wallet-name", default=None, help="env BT_WALLET")
    r.add_argument("--hotkey-name", default=None, help="env BT_WALLET_HOTKEY")
    r.add_argument("--wallet-path", default=None, help="env BT_WALLET_PATH")
    r.add_argument("--db", type=Path, default=Path(env.get("KLHILL_DB", "state/validator.db")))
    pods = r.add_mutually_exclusive_group()
    pods.add_argument(
        "--pod",
        action="append",
        default=None,
        metavar="URL[#HOTKEY]",
        help="pod service URL, optionally with the pod's hotkey ss58 after '#' (repeatable; env "
        "KLHILL_PODS, comma-separated)",
    )
    pods.add_argument("--local-pod", action="store_true", help="evaluate in this process (CPU demo, tests)")
    r.add_argument("--device", default="cpu", help="device for --local-pod")
    r.add_argument("--workdir", type=Path, default=Path("state/local-pod"), help="scratch dir for --local-pod")
    r.add_argument("--hub-dir", type=Path, default=None, help="LocalHub directory instead of Hugging Face")
    r.add_argument("--corpus", default=None, help="prompt corpus dir, or 'builtin'; FineWeb by default")
    teacher = r.add_mutually_exclusive_group()
    teacher.add_argument("--teacher-dir", type=Path, default=None, help="local teacher dir for admission checks")
    teacher.add_argument("--teacher", default=None, metavar="REPO[@REV]", help="teacher repo (overrides the rules)")
    r.add_argument("--rules", dest="rules_path", type=Path, default=None, help="ContestRules JSON file")
    r.add_argument("--max-challengers", type=_positive(int), default=None)
    r.add_argument(
        "--weights-interval", type=_positive(int), default=d.weights_interval, help="blocks between weight refreshes"
    )
    r.add_argument(
        "--weights-retry-blocks",
        type=_positive(int),
        default=d.weights_retry_blocks,
        help="blocks to wait after a failed weight submission",
    )
    r.add_argument("--epoch-blocks", type=_positive(int), default=d.epoch_blocks, help="blocks between epochs")
    r.add_argument("--poll-seconds", type=_positive(float), default=d.poll_seconds)
    r.add_argument("--pod-deadline", dest="pod_deadline_s", type=_positive(float), default=d.pod_deadline_s)
    r.add_argument("--max-strikes", type=_positive(int), default=d.max_strikes)
    r.add_argument("--once", action="store_true", help="run one epoch and exit")
    r.add_argument("--log-format", choices=("plain", "json"), default=env.get("KLHILL_LOG_FORMAT", "plain"))
    r.add_argument("--log-level", default=env.get("KLHILL_LOG_LEVEL", "INFO"))
    return p


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    parser = build_parser(env)
    a = parser.parse_args(argv)
    if a.network == SIM_NETWORK and a.sim_db is None:
        parser.error("--network sim needs --sim-db PATH")
    if a.hub_dir is not None and not Path(a.hub_dir).is_dir():
        parser.error(f"--hub-dir {a.hub_dir} is not a directory")
    if not a.pod and not a.local_pod:
        urls = [u for u in env.get("KLHILL_PODS", "").split(",") if u.strip()]
        if not urls:
            parser.error("give --pod URL (repeatable, or env KLHILL_PODS) or --local-pod")
        a.pod = urls
    for spec in a.pod or ():
        try:
            PodTarget.parse(spec)
        except ValueError as exc:
            parser.error(str(exc))
    return Settings(
        network=a.network,
        netuid=a.netuid,
        sim_db=a.sim_db,
        sim_block_time=a.sim_block_time,
        wallet_name=a.wallet_name,
        hotkey_name=a.hotkey_name,
        wallet_path=a.wallet_path,
        db=a.db,
        pods=tuple(a.pod or ()),
        local_pod=a.local_pod,
        device=a.device,
        workdir=a.workdir,
        hub_dir=a.hub_dir,
        corpus=a.corpus,
        teacher_dir=a.teacher_dir,
        teacher=a.teacher,
        rules_path=a.rules_path,
        loop=LoopConfig(
            max_challengers=a.max_challengers,
            weights_interval=a.weights_interval,
            weights_retry_blocks=a.weights_retry_blocks,
            epoch_blocks=a.epoch_blocks,
            poll_seconds=a.poll_seconds,
            pod_deadline_s=a.pod_deadline_s,
            max_strikes=a.max_strikes,
        ),
        once=a.once,
        log_format=a.log_format,
        log_level=a.log_level,
    )

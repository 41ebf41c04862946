"""The validator's settings (``python -m validator run``): one ``EnvSettings`` model and its flags.

Precedence is flag > environment > default: argparse collects only the flags that were given,
the model reads the documented environment names (``BT_NETWORK``, ``BT_WALLET``,
``BT_WALLET_HOTKEY``, ``BT_WALLET_PATH``, ``KLHILL_NETUID``, ``KLHILL_SIM_DB``, ``KLHILL_DB``,
``KLHILL_PODS``, ``KLHILL_LOG_FORMAT``, ``KLHILL_LOG_LEVEL``) and holds the defaults. Only names,
paths and URLs pass through argv; wallet secrets stay in the wallet files (or env-named paths) and
are never logged (LESSONS 25).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from eval.env_settings import Env, EnvSettings
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
    max_catchup_slots: int = 48  # further behind than this (a day at 150-block slots): anchor on the consensus
    max_disagreement_slots: int = 16  # slots in a row against the chain's consensus king before re-anchoring


class Settings(EnvSettings):
    """Everything one validator process needs; built from flags and environment by :func:`parse_args`."""

    network: Annotated[str, Env("BT_NETWORK")] = "finney"
    netuid: Annotated[int, Env("KLHILL_NETUID")] = 1
    sim_db: Annotated[Path | None, Env("KLHILL_SIM_DB")] = None
    sim_block_time: float = Field(12.0, gt=0)
    wallet_name: Annotated[str | None, Env("BT_WALLET")] = None
    hotkey_name: Annotated[str | None, Env("BT_WALLET_HOTKEY")] = None
    wallet_path: Annotated[str | None, Env("BT_WALLET_PATH")] = None
    db: Annotated[Path, Env("KLHILL_DB")] = Path("state/validator.db")
    pods: Annotated[tuple[str, ...], Env("KLHILL_PODS")] = ()  # each URL[#POD_HOTKEY]: see pod_targets
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
    log_format: Annotated[Literal["plain", "json"], Env("KLHILL_LOG_FORMAT")] = "plain"
    log_level: Annotated[str, Env("KLHILL_LOG_LEVEL")] = "INFO"

    @field_validator("pods", mode="before")
    @classmethod
    def _split_pods(cls, value: Any) -> Any:
        """``KLHILL_PODS`` is comma-separated; each pod spec must parse (URL scheme, hotkey ss58)."""
        specs = value.split(",") if isinstance(value, str) else value
        specs = tuple(s.strip() for s in specs if s.strip())
        for spec in specs:
            PodTarget.parse(spec)
        return specs

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.network == SIM_NETWORK and self.sim_db is None:
            raise ValueError("--network sim needs --sim-db PATH")
        if self.hub_dir is not None and not self.hub_dir.is_dir():
            raise ValueError(f"--hub-dir {self.hub_dir} is not a directory")
        if self.local_pod and self.pods:
            raise ValueError("--local-pod and --pod exclude each other")
        if not self.local_pod and not self.pods:
            raise ValueError("give --pod URL (repeatable, or env KLHILL_PODS) or --local-pod")
        if self.teacher_dir is not None and self.teacher is not None:
            raise ValueError("--teacher-dir and --teacher exclude each other")
        return self

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


LOOP_FLAGS = frozenset(f.name for f in dataclasses.fields(LoopConfig))


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The flags; each is absent from the namespace unless given, so the environment and defaults can apply."""
    p = argparse.ArgumentParser(prog="python -m validator", description="klhill king-of-the-hill validator")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the validator loop", argument_default=argparse.SUPPRESS)
    r.add_argument("--network", help="sim | finney | test | local | ws://... (env BT_NETWORK; default finney)")
    r.add_argument("--netuid", type=int, help="env KLHILL_NETUID; default 1")
    r.add_argument("--sim-db", type=Path, help="SimChain file (--network sim; env KLHILL_SIM_DB)")
    r.add_argument("--sim-block-time", type=_positive(float))
    r.add_argument("--wallet-name", help="env BT_WALLET")
    r.add_argument("--hotkey-name", help="env BT_WALLET_HOTKEY")
    r.add_argument("--wallet-path", help="env BT_WALLET_PATH")
    r.add_argument("--db", type=Path, help="state database (env KLHILL_DB; default state/validator.db)")
    pods = r.add_mutually_exclusive_group()
    pods.add_argument(
        "--pod",
        dest="pods",
        action="append",
        metavar="URL[#HOTKEY]",
        help="pod service URL, optionally with the pod's hotkey ss58 after '#' (repeatable; env "
        "KLHILL_PODS, comma-separated)",
    )
    pods.add_argument("--local-pod", action="store_true", help="evaluate in this process (CPU demo, tests)")
    r.add_argument("--device", help="device for --local-pod (default cpu)")
    r.add_argument("--workdir", type=Path, help="scratch dir for --local-pod (default state/local-pod)")
    r.add_argument("--hub-dir", type=Path, help="LocalHub directory instead of Hugging Face")
    r.add_argument("--corpus", help="prompt corpus dir, or 'builtin'; FineWeb by default")
    teacher = r.add_mutually_exclusive_group()
    teacher.add_argument("--teacher-dir", type=Path, help="local teacher dir for admission checks")
    teacher.add_argument("--teacher", metavar="REPO[@REV]", help="teacher repo (overrides the rules)")
    r.add_argument("--rules", dest="rules_path", type=Path, help="ContestRules JSON file")
    r.add_argument("--weights-interval", type=_positive(int), help="blocks between weight refreshes")
    r.add_argument(
        "--weights-retry-blocks", type=_positive(int), help="blocks to wait after a failed weight submission"
    )
    r.add_argument("--epoch-blocks", type=_positive(int), help="blocks between epochs")
    r.add_argument("--poll-seconds", type=_positive(float))
    r.add_argument("--pod-deadline", dest="pod_deadline_s", type=_positive(float))
    r.add_argument("--max-strikes", type=_positive(int))
    r.add_argument(
        "--max-catchup-slots",
        type=_positive(int),
        help="slots this validator judges to catch up; further behind, it adopts the chain's consensus king",
    )
    r.add_argument(
        "--max-disagreement-slots",
        type=_positive(int),
        help="slots in a row against the chain's consensus king before re-anchoring on it",
    )
    r.add_argument("--once", action="store_true", help="run one epoch and exit")
    r.add_argument("--log-format", choices=("plain", "json"), help="env KLHILL_LOG_FORMAT; default plain")
    r.add_argument("--log-level", help="env KLHILL_LOG_LEVEL; default INFO")
    return p


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``argv`` over ``env`` (``os.environ`` when None); a bad value exits 2 with usage."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    given.pop("command")
    loop = {name: given.pop(name) for name in LOOP_FLAGS & given.keys()}
    if loop:
        given["loop"] = LoopConfig(**loop)
    if given.get("local_pod"):
        given["pods"] = ()  # the flag chose the in-process pod: KLHILL_PODS does not apply
    return Settings.from_flags(parser, given, env)

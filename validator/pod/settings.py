"""The pod service's settings and entry point (``python -m validator.pod``).

One ``EnvSettings`` model; every flag has an environment equivalent (``KLHILL_POD_*``, listed
in ``--help``) and a flag wins over it. The Hugging Face token comes from ``HF_TOKEN`` only and
never passes through here. The service itself (``validator.pod.server``) is imported only by
``main``, so ``--help`` and a usage error answer without loading FastAPI or torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import field_validator, model_validator

from eval.env_settings import Env, EnvSettings
from eval.exit_codes import ExitCode
from validator.pod import signing

log = logging.getLogger("validator.pod.server")  # the service's logger: its start line stays where operators look

DEFAULT_MAX_BODY_BYTES = 8 * 1024**2


class PodSettings(EnvSettings):
    """Everything the service needs; built from flags and environment by :func:`parse_args`."""

    allow_hotkeys: Annotated[frozenset[str], Env("KLHILL_POD_ALLOW_HOTKEYS")] = frozenset()
    workdir: Annotated[Path, Env("KLHILL_POD_WORKDIR")] = Path("state/pod")
    device: Annotated[str, Env("KLHILL_POD_DEVICE")] = "cpu"  # parse_args detects cuda when neither says
    host: Annotated[str, Env("KLHILL_POD_HOST")] = "127.0.0.1"
    port: Annotated[int, Env("KLHILL_POD_PORT")] = 8091
    max_disk_gb: Annotated[float | None, Env("KLHILL_POD_MAX_DISK_GB")] = None  # 0 means no bound
    min_free_gb: Annotated[float, Env("KLHILL_POD_MIN_FREE_GB")] = 2.0
    pod_hotkey: Annotated[str | None, Env("KLHILL_POD_HOTKEY")] = None  # requests must be bound to it
    hub: Annotated[Path | None, Env("KLHILL_POD_HUB")] = None  # a LocalHub root instead of Hugging Face
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_queued: Annotated[int, Env("KLHILL_POD_MAX_QUEUED")] = 4
    max_age_s: float = signing.MAX_AGE_S

    @field_validator("allow_hotkeys", mode="before")
    @classmethod
    def _split_hotkeys(cls, value: Any) -> Any:
        """``KLHILL_POD_ALLOW_HOTKEYS`` is comma-separated; blanks around each entry are dropped."""
        items = value.split(",") if isinstance(value, str) else value
        return frozenset(h.strip() for h in items if h.strip())

    @field_validator("max_disk_gb", mode="after")
    @classmethod
    def _zero_is_unbounded(cls, value: float | None) -> float | None:
        return value or None

    @model_validator(mode="after")
    def _obeys_someone(self) -> PodSettings:
        if not self.allow_hotkeys:
            raise ValueError(
                "refusing to start without --allow-hotkey (env KLHILL_POD_ALLOW_HOTKEYS): the pod would obey nobody"
            )
        return self


def build_parser() -> argparse.ArgumentParser:
    """The flags; each is absent from the namespace unless given, so the environment and defaults can apply."""
    p = argparse.ArgumentParser(
        prog="python -m validator.pod",
        description="klhill GPU pod service",
        argument_default=argparse.SUPPRESS,
        epilog="Environment equivalents (a flag wins): KLHILL_POD_HOST, KLHILL_POD_PORT, KLHILL_POD_ALLOW_HOTKEYS, "
        "KLHILL_POD_HOTKEY, KLHILL_POD_WORKDIR, KLHILL_POD_DEVICE, KLHILL_POD_MAX_DISK_GB, KLHILL_POD_MIN_FREE_GB, "
        "KLHILL_POD_HUB, KLHILL_POD_MAX_QUEUED. The Hugging Face token comes from HF_TOKEN only.",
    )
    p.add_argument("--host", help="default 127.0.0.1")
    p.add_argument("--port", type=int, help="default 8091")
    p.add_argument(
        "--allow-hotkey",
        dest="allow_hotkeys",
        action="append",
        metavar="SS58",
        help="validator hotkey the pod obeys (repeatable; env KLHILL_POD_ALLOW_HOTKEYS, comma-separated)",
    )
    p.add_argument("--pod-hotkey", help="public ss58 requests must be bound to")
    p.add_argument("--workdir", type=Path, help="default state/pod")
    p.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    p.add_argument(
        "--max-disk-gb", type=float, help="bound on models + teacher snapshot + cache under --workdir (0: none)"
    )
    p.add_argument("--min-free-gb", type=float, help="default 2")
    p.add_argument("--hub", type=Path, help="serve models from a local hub directory")
    p.add_argument("--max-queued", type=int, help="jobs waiting behind the running one before POST answers 429")
    return p


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> PodSettings:
    """Settings from ``argv`` over ``env`` (``os.environ`` when None); a bad value exits 2 with usage."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    settings = PodSettings.from_flags(parser, given, env)
    if "device" not in settings.model_fields_set:  # neither flag nor environment: use the GPU when there is one
        from validator.pod.server import gpu_name

        settings = settings.model_copy(update={"device": "cuda" if gpu_name() not in ("none", "unknown") else "cpu"})
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from validator.pod.server import create_app

    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=fmt)
    settings = parse_args(argv)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    log.info("pod listening on %s:%d, %d allowed hotkeys", settings.host, settings.port, len(settings.allow_hotkeys))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", h11_max_incomplete_event_size=65536)
    return ExitCode.OK

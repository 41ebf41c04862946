"""``python -m api --db state/validator.db --host 127.0.0.1 --port 8080 [--workers N] [--trusted-proxy IP ...]``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from api.settings import Settings
from eval.exit_codes import ExitCode


def build_parser() -> argparse.ArgumentParser:
    """The flags; each is absent from the namespace unless given, so the environment and defaults can apply."""
    p = argparse.ArgumentParser(
        prog="python -m api",
        description="klhill public read-only API and dashboard",
        argument_default=argparse.SUPPRESS,
        epilog="Environment equivalents (a flag wins): KLHILL_API_HOST, KLHILL_API_PORT.",
    )
    p.add_argument("--db", type=Path, help="validator SQLite store (default state/validator.db)")
    p.add_argument("--host", help="default 127.0.0.1")
    p.add_argument("--port", type=int, help="default 8080")
    p.add_argument("--workers", type=int, help="default 1")
    p.add_argument("--network", help="sim | finney | test | ws://... (for /api/price; default sim)")
    p.add_argument("--netuid", type=int, help="default 1")
    p.add_argument(
        "--trusted-proxy",
        dest="trusted_proxies",
        action="append",
        metavar="IP",
        help="peer address (or CIDR) whose X-Forwarded-For is trusted; repeatable",
    )
    p.add_argument(
        "--rate", dest="rate_per_s", metavar="RATE", type=float, help="requests/s per client IP (0 disables the limit)"
    )
    p.add_argument("--burst", dest="rate_burst", metavar="BURST", type=float, help="burst size per client IP")
    p.add_argument(
        "--cache-ttl",
        dest="cache_ttl_s",
        metavar="CACHE_TTL",
        type=float,
        help="seconds a response is served from memory",
    )
    return p


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``argv`` over ``env`` (``os.environ`` when None); a bad value exits 2 with usage."""
    parser = build_parser()
    return Settings.from_flags(parser, vars(parser.parse_args(argv)), env)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from api.app import SETTINGS_ENV, create_app, settings_to_env

    s = parse_args(argv)
    # uvicorn's own proxy handling stays off: the rate limiter resolves client IPs itself.
    common = dict(host=s.host, port=s.port, proxy_headers=False, server_header=False, access_log=False)
    if s.workers > 1:
        os.environ[SETTINGS_ENV] = settings_to_env(s)
        uvicorn.run("api.app:app_from_env", factory=True, workers=s.workers, **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(s), **common)  # type: ignore[arg-type]
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())

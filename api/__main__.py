"""``python -m api --db state/validator.db --host 127.0.0.1 --port 8080 [--workers N] [--trusted-proxy IP ...]``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from api.app import SETTINGS_ENV, Settings, create_app, settings_to_env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m api", description="klhill public read-only API and dashboard")
    p.add_argument("--db", type=Path, default=Path("state/validator.db"), help="validator SQLite store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--network", default="sim", help="sim | finney | test | ws://... (for /api/price)")
    p.add_argument("--netuid", type=int, default=1)
    p.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="IP",
        help="peer address (or CIDR) whose X-Forwarded-For is trusted; repeatable",
    )
    p.add_argument("--rate", type=float, default=10.0, help="requests/s per client IP (0 disables the limit)")
    p.add_argument("--burst", type=float, default=60.0, help="burst size per client IP")
    p.add_argument("--cache-ttl", type=float, default=2.0, help="seconds a response is served from memory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    s = Settings(
        db=a.db,
        network=a.network,
        netuid=a.netuid,
        trusted_proxies=a.trusted_proxy,
        rate_per_s=a.rate,
        rate_burst=a.burst,
        cache_ttl_s=a.cache_ttl,
    )
    # uvicorn's own proxy handling stays off: the rate limiter resolves client IPs itself.
    common = dict(host=a.host, port=a.port, proxy_headers=False, server_header=False, access_log=False)
    if a.workers > 1:
        os.environ[SETTINGS_ENV] = settings_to_env(s)
        uvicorn.run("api.app:app_from_env", factory=True, workers=a.workers, **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(s), **common)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()

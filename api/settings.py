"""The API process's settings (``python -m api``): one ``EnvSettings`` model.

Flags win over the environment, which wins over the defaults. The environment names are the
ones ``scripts/ecosystem.config.js`` documents for the API: ``KLHILL_API_HOST`` and
``KLHILL_API_PORT``; everything else is a flag. Several uvicorn workers each rebuild the app
from the parent's resolved settings (``api.app.settings_to_env`` / ``app_from_env``), so all
workers serve with the same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from eval.env_settings import Env, EnvSettings


class Settings(EnvSettings):
    """What the app serves (store, network for prices, limits) and where it listens."""

    db: Path = Path("state/validator.db")
    network: str = "sim"
    netuid: int = 1
    trusted_proxies: list[str] = Field(default_factory=list)
    rate_per_s: float = 10.0
    rate_burst: float = 60.0
    cache_ttl_s: float = 2.0
    price_ttl_s: float = 60.0
    host: Annotated[str, Env("KLHILL_API_HOST")] = "127.0.0.1"
    port: Annotated[int, Env("KLHILL_API_PORT")] = 8080
    workers: int = Field(1, ge=1)

"""``python -m api`` settings: flags over KLHILL_API_HOST/PORT over defaults; workers rebuild the same settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.__main__ import parse_args
from api.app import SETTINGS_ENV, app_from_env, settings_to_env
from api.settings import Settings


def test_flags_env_and_defaults():
    s = parse_args([], env={})
    assert (s.db, s.host, s.port, s.workers, s.network, s.trusted_proxies) == (
        Path("state/validator.db"),
        "127.0.0.1",
        8080,
        1,
        "sim",
        [],
    )
    env = {"KLHILL_API_HOST": "0.0.0.0", "KLHILL_API_PORT": "9000", "KLHILL_DB": "/not/read.db"}
    s = parse_args(["--trusted-proxy", "10.0.0.1", "--trusted-proxy", "10.0.0.0/8", "--rate", "0"], env=env)
    assert (s.host, s.port, s.db, s.rate_per_s) == ("0.0.0.0", 9000, Path("state/validator.db"), 0.0)
    assert s.trusted_proxies == ["10.0.0.1", "10.0.0.0/8"]
    assert parse_args(["--port", "81"], env=env).port == 81


@pytest.mark.parametrize("argv, env", [(["--workers", "0"], {}), ([], {"KLHILL_API_PORT": "http"})])
def test_bad_values_exit_with_usage(argv, env, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv, env=env)
    assert exc.value.code == 2 and "usage:" in capsys.readouterr().err


def test_workers_rebuild_exactly_the_parent_settings(monkeypatch, tmp_path):
    s = Settings(db=tmp_path / "v.db", network="finney", netuid=7, trusted_proxies=["10.0.0.1"], rate_per_s=0)
    monkeypatch.setenv(SETTINGS_ENV, settings_to_env(s))
    monkeypatch.setenv("KLHILL_API_PORT", "1")  # the parent already resolved its environment
    assert app_from_env().state.settings == s

"""The settings mechanism: declared environment names only, flag > environment > default, short usage errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from pydantic import ValidationError

from eval.env_settings import Env, EnvSettings, env_name, usage_message


class Demo(EnvSettings):
    db: Annotated[Path, Env("KLHILL_TEST_DB")] = Path("state/x.db")
    port: Annotated[int, Env("KLHILL_TEST_PORT")] = 1
    device: str = "cpu"


def test_flag_beats_environment_beats_default():
    env = {"KLHILL_TEST_DB": "/env.db", "KLHILL_TEST_PORT": "9"}
    assert Demo.load({}, {}) == Demo.load({}, {"UNRELATED": "1"}) and Demo.load({}, {}).port == 1
    assert (Demo.load({}, env).db, Demo.load({}, env).port) == (Path("/env.db"), 9)
    assert Demo.load({"port": 3}, env).port == 3


def test_only_declared_names_are_read(monkeypatch):
    """A stray ``DB``/``DEVICE``/``PORT`` in the shell, or a prefixed field name, must reach no setting."""
    for name in ("DB", "PORT", "DEVICE", "db", "KLHILL_TEST_DEVICE", "KLHILL_DEVICE"):
        monkeypatch.setenv(name, "/stray")
    monkeypatch.setenv("KLHILL_TEST_PORT", "7")
    s = Demo()  # plain construction reads os.environ through the same source
    assert (s.db, s.port, s.device) == (Path("state/x.db"), 7, "cpu")
    assert env_name(Demo.model_fields["db"]) == "KLHILL_TEST_DB" and env_name(Demo.model_fields["device"]) is None


def test_bad_values_read_as_one_usage_line():
    with pytest.raises(ValidationError) as exc:
        Demo.load({"device": 3}, {"KLHILL_TEST_PORT": "eighty"})
    msg = usage_message(exc.value, Demo)
    assert "port (env KLHILL_TEST_PORT): Input should be a valid integer" in msg and "device:" in msg
    assert "\n" not in msg and "pydantic" not in msg


def test_unknown_settings_and_mutation_are_refused():
    with pytest.raises(ValidationError, match="Extra inputs"):
        Demo(colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="frozen"):
        Demo().port = 2  # type: ignore[misc]

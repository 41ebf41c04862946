"""scripts/ecosystem.config.js says what PM2 will do: checked against PM2's own schema, and run under PM2 itself.

Without node the module is skipped; without pm2 (``npm i -g pm2``) only the PM2 run is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILE = REPO / "scripts" / "ecosystem.config.js"
pytestmark = pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")


def _apps(env: dict[str, str]) -> dict[str, dict]:
    script = "console.log(JSON.stringify(require(process.argv[1]).apps))"
    out = subprocess.run(
        ["node", "-e", script, str(FILE)],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return {a["name"]: a for a in json.loads(out.stdout)}


def _pm2_schema() -> dict | None:
    npm = shutil.which("npm")
    if not npm or not shutil.which("pm2"):
        return None
    root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=60).stdout.strip()
    path = Path(root) / "pm2" / "lib" / "API" / "schema.json"
    return json.loads(path.read_text()) if path.is_file() else None


def test_restart_stop_and_log_settings_mean_what_they_say():
    apps = _apps({"KLHILL_WITH_API": "1"})
    for name, app in apps.items():
        # PM2 ignores restart_delay when exp_backoff_restart_delay is set: only one of them may be there
        assert "restart_delay" not in app and app["exp_backoff_restart_delay"] > 0, name
        # max_restarts only counts exits within min_uptime: both are set, and the window is deliberate
        assert app["min_uptime"] >= 10_000 and app["max_restarts"] >= 10, name
        assert 2 in app["stop_exit_codes"], name  # "cannot start" is not retried in a loop
        # "time" would prefix every JSON log line with a timestamp; log_date_format does the same
        assert not app.get("time") and "log_date_format" not in app, name
        # PM2 7 has no per-app stop signal; a key it does not know would be silently ignored
        assert "kill_signal" not in app and app["kill_timeout"] >= 10_000, name
    assert apps["klhill-validator"]["kill_timeout"] >= 30_000  # time to finish a step after SIGINT
    assert "--log-format" in apps["klhill-validator"]["args"]


def test_every_key_is_one_pm2_knows():
    schema = _pm2_schema()
    if schema is None:
        pytest.skip("pm2 is not installed (npm i -g pm2)")
    known = set(schema)
    for spec in schema.values():
        alias = spec.get("alias", [])
        known |= {alias} if isinstance(alias, str) else set(alias)
    for name, app in _apps({"KLHILL_WITH_API": "1"}).items():
        unknown = set(app) - known
        assert not unknown, f"{name}: PM2 does not know {sorted(unknown)}"


def _pm2(home: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    full = {**os.environ, **(env or {}), "PM2_HOME": home}
    out = subprocess.run(["pm2", *args], env=full, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def _proc(home: str, name: str) -> dict:
    return next(p for p in json.loads(_pm2(home, "jlist")) if p["name"] == name)


@pytest.mark.slow
def test_the_validator_under_pm2_logs_json_lines_and_stops_cleanly_on_sigint(world):
    if not shutil.which("pm2"):
        pytest.skip("pm2 is not installed (npm i -g pm2)")
    from fixtures_contest import seed

    seed(world, ("m1", "alice/m1"))
    home = tempfile.mkdtemp(prefix="pm2-", dir="/tmp")  # a short path: PM2's unix sockets live here
    extra = (
        f"--sim-db {world.sim_db} --hub-dir {world.hub_root} --corpus builtin --local-pod "
        f"--rules {world.rules_file()} --epoch-blocks 1 --poll-seconds 0.2 --workdir {world.root / 'pod'}"
    )
    env = {
        "BT_NETWORK": "sim",
        "KLHILL_NETUID": "1",
        "KLHILL_DB": str(world.db),
        "BT_WALLET": world.wallet.name,
        "BT_WALLET_HOTKEY": "default",
        "BT_WALLET_PATH": str(world.root / "w"),
        "KLHILL_EXTRA_ARGS": extra,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    try:
        _pm2(home, "start", str(FILE), env=env)
        proc = _proc(home, "klhill-validator")
        pm2_env = proc["pm2_env"]
        assert pm2_env["exp_backoff_restart_delay"] == 1000 and pm2_env.get("restart_delay") in (None, 0)
        assert "log_date_format" not in pm2_env or not pm2_env["log_date_format"]
        log = Path(pm2_env["pm_err_log_path"])
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and "weights set" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.5)
        assert "weights set" in log.read_text(), log.read_text()[-3000:]  # a whole round ran under PM2
        _pm2(home, "stop", "klhill-validator", timeout=120)
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        entries = [json.loads(line) for line in lines]  # every line is a JSON object: no time prefix
        messages = [e["msg"] for e in entries]
        assert any(m.startswith("received SIGINT") for m in messages)  # PM2's stop signal is SIGINT
        assert messages[-1] == "stopped"  # it finished its step and exited on its own, before kill_timeout
        assert _proc(home, "klhill-validator")["pm2_env"]["status"] == "stopped"
    finally:
        subprocess.run(["pm2", "kill"], env={**os.environ, "PM2_HOME": home}, capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_a_validator_that_cannot_start_is_not_restarted_in_a_loop(tmp_path):
    if not shutil.which("pm2"):
        pytest.skip("pm2 is not installed (npm i -g pm2)")
    home = tempfile.mkdtemp(prefix="pm2-", dir="/tmp")
    env = {"BT_NETWORK": "sim", "KLHILL_DB": str(tmp_path / "v.db"), "KLHILL_EXTRA_ARGS": "--local-pod"}  # no sim db
    try:
        _pm2(home, "start", str(FILE), env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _proc(home, "klhill-validator")["pm2_env"].get("exit_code") != 2:
            time.sleep(0.5)
        time.sleep(3)  # longer than the first back-off (1 s): a restart would have happened by now
        proc = _proc(home, "klhill-validator")
        # PM2 7 still *shows* "waiting restart" here (its back-off code sets the status before it checks
        # stop_exit_codes), but schedules nothing: no pid, no restart.
        assert (proc["pid"], proc["pm2_env"]["exit_code"], proc["pm2_env"]["restart_time"]) == (0, 2, 0)
    finally:
        subprocess.run(["pm2", "kill"], env={**os.environ, "PM2_HOME": home}, capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)

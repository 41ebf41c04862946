"""``python -m validator run``: flags, logging, and one real epoch against a real pod service on loopback."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fixtures_contest import make_world

from scripts.pod_fixtures import pod_args
from validator.__main__ import JsonFormatter
from validator.settings import parse_args
from validator.store.database import Store

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BT_", "KLHILL_"))}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_flags_and_env_defaults():
    s = parse_args(
        [
            "run",
            "--network",
            "sim",
            "--sim-db",
            "c.db",
            "--pod",
            "http://a",
            "--pod",
            "http://b",
            "--max-catchup-slots",
            "2",
            "--once",
            "--log-format",
            "json",
        ],
        env={},
    )
    assert s.is_sim and s.pods == ("http://a", "http://b") and s.loop.max_catchup_slots == 2 and s.once
    s = parse_args(["run", "--local-pod"], env={"BT_NETWORK": "test", "KLHILL_DB": "/x/v.db"})
    assert s.network == "test" and s.local_pod and s.db == Path("/x/v.db")
    s = parse_args(["run"], env={"KLHILL_PODS": "http://p1,http://p2"})
    assert s.pods == ("http://p1", "http://p2")
    pod_hotkey = "5E6sptaRAz3w8pY8Vh5TxJBuQY7tV3btExWTbxHYSZoD1vS7"
    s = parse_args(["run"], env={"KLHILL_PODS": f"http://p1:8091/#{pod_hotkey}, http://p2"})
    assert [(t.url, t.hotkey) for t in s.pod_targets] == [("http://p1:8091", pod_hotkey), ("http://p2", None)]


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--network", "sim", "--local-pod"],  # sim without --sim-db
        ["run", "--network", "finney"],  # no pod at all
        ["run", "--local-pod", "--pod", "http://x"],  # both
        ["run", "--local-pod", "--epoch-blocks", "0"],
        ["run", "--pod", "http://x#not-a-hotkey"],  # a pod hotkey must be a valid ss58 address
        ["run", "--pod", "http://x#"],
        ["run", "--pod", "gpu-host:8091"],  # no scheme
    ],
)
def test_bad_flags_exit_with_usage(argv):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv, env={})
    assert exc.value.code == 2


def test_teacher_flag_overrides_rules(tmp_path):
    s = parse_args(["run", "--local-pod", "--teacher", "org/t@" + "a" * 40], env={})
    rules = s.load_rules()
    assert rules.teacher_repo == "org/t" and rules.teacher_revision == "a" * 40


def test_json_log_lines_are_json():
    record = logging.LogRecord("validator", logging.INFO, __file__, 1, "round %d done", (3,), None)
    line = JsonFormatter().format(record)
    assert json.loads(line) == {
        "ts": round(record.created, 3),
        "level": "INFO",
        "logger": "validator",
        "msg": "round 3 done",
    }


def test_once_against_a_real_pod_service(tmp_path, contest_hub):
    """The done-when check: a real epoch, signed jobs over HTTP to ``python -m validator.pod``."""
    world = make_world(tmp_path, *contest_hub)
    for name, repo in [("m1", "alice/m1"), ("m2", "bob/m2")]:
        world.register(name)
        world.commit(name, repo)
    port = _port()
    pod = subprocess.Popen(
        [sys.executable, *pod_args(port, world.validator_hotkey, world.hub_root, tmp_path / "podwork")],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert pod.poll() is None, pod.stderr.read().decode() if pod.stderr else "pod exited"
            assert time.monotonic() < deadline, "pod did not come up"
            time.sleep(0.2)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "validator",
                *world.cli_args("--pod", f"http://127.0.0.1:{port}", "--once", "--log-format", "json"),
            ],
            env=_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        pod.send_signal(signal.SIGTERM)
        pod.wait(20)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert any("weights set" in entry["msg"] for entry in lines), out.stderr[-2000:]
    store = Store.open_readonly(world.db)
    rounds = store.rounds().items
    assert [(r.kind, r.state) for r in rounds] == [("first", "done")]
    assert rounds[0].job_id and store.round(rounds[0].id).pod == f"http://127.0.0.1:{port}"
    king = store.current_king()
    assert king is not None and king.hotkey in world.miners.values()
    assert store.last_weights().weights.count(1.0) == 1
    assert store.progress() is None
    keyfile = json.loads(Path(world.wallet.hotkey_file.path).read_text())
    secrets = [str(v)[-32:] for k, v in keyfile.items() if k in ("secretSeed", "privateKey", "secretPhrase") and v]
    assert secrets and not any(x in out.stderr for x in secrets)  # keys never reach the logs


def _pm2_apps(env: dict[str, str]) -> list[dict]:
    script = "console.log(JSON.stringify(require(process.argv[1]).apps))"
    path = str(REPO / "scripts" / "ecosystem.config.js")
    out = subprocess.run(
        ["node", "-e", script, path],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_pm2_file_args_parse_with_the_real_clis():
    """The PM2 file drifts silently from the CLIs unless its argv is fed to their parsers."""
    from api.__main__ import parse_args as api_args

    env = {
        "KLHILL_NETUID": "7",
        "KLHILL_PODS": "http://pod:8000",
        "BT_WALLET": "val",
        "KLHILL_WITH_API": "1",
        "KLHILL_EXTRA_ARGS": " --max-disagreement-slots 4  --weights-interval 360 ",
    }
    apps = {a["name"]: a for a in _pm2_apps(env)}
    assert set(apps) == {"klhill-validator", "klhill-api"}
    val = apps["klhill-validator"]
    assert val["args"][:3] == ["-m", "validator", "run"] and val["script"].endswith(".venv/bin/python")
    assert all("BT_" not in a and "KLHILL_" not in a for a in val["args"])  # secrets/env stay out of argv
    s = parse_args(val["args"][2:], env=val["env"])
    assert (s.netuid, s.pods, s.loop.max_disagreement_slots, s.log_format) == (7, ("http://pod:8000",), 4, "json")
    assert val["env"]["BT_WALLET"] == "val" and val["kill_timeout"] >= 30000  # SIGTERM gets time to finish a step
    a = api_args(apps["klhill-api"]["args"][2:])
    assert a.db == s.db and a.netuid == 7 and a.host == "127.0.0.1"
    assert [x["name"] for x in _pm2_apps({})] == ["klhill-validator"]


def test_env_values_are_checked_like_flags_and_flags_win(capsys):
    """A bad KLHILL_NETUID once escaped as a traceback; now it is a usage error naming the variable."""
    with pytest.raises(SystemExit) as exc:
        parse_args(["run", "--local-pod"], env={"KLHILL_NETUID": "seven"})
    assert exc.value.code == 2 and "KLHILL_NETUID" in capsys.readouterr().err
    env = {"KLHILL_PODS": "http://p1", "KLHILL_NETUID": "3", "KLHILL_LOG_FORMAT": "json", "BT_WALLET": "w"}
    s = parse_args(["run", "--local-pod", "--netuid", "5"], env=env)
    assert (s.local_pod, s.pods, s.netuid, s.log_format, s.wallet_name) == (True, (), 5, "json", "w")
    s = parse_args(["run", "--local-pod"], env={"DB": "/stray.db", "NETWORK": "sim", "KLHILL_DEVICE": "cuda"})
    assert (s.db, s.network, s.device) == (Path("state/validator.db"), "finney", "cpu")

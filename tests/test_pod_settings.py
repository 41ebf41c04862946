"""``python -m validator.pod`` settings: every flag has a KLHILL_POD_* equivalent, a flag wins, bad input exits 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from eval.env_settings import env_name
from eval.exit_codes import ExitCode
from validator.pod.settings import PodSettings, build_parser, parse_args

REPO = Path(__file__).resolve().parents[1]
HOTKEY = "5Aaa"


def test_help_lists_exactly_the_environment_names_the_model_reads():
    declared = {env_name(f) for f in PodSettings.model_fields.values()} - {None}
    listed = set(re.findall(r"KLHILL_POD_[A-Z_]+", build_parser().epilog or ""))
    assert declared == listed and len(declared) == 10


def test_device_is_detected_only_when_neither_flag_nor_env_names_it(tmp_path):
    base = ["--allow-hotkey", HOTKEY]
    assert parse_args([*base, "--device", "cuda:1"], env={}).device == "cuda:1"
    assert parse_args(base, env={"KLHILL_POD_DEVICE": "cpu"}).device == "cpu"
    assert parse_args(base, env={}).device in ("cpu", "cuda")  # this machine's answer


def test_hotkeys_split_and_zero_disk_means_unbounded(tmp_path):
    s = parse_args(["--device", "cpu"], env={"KLHILL_POD_ALLOW_HOTKEYS": " 5A ,,5B ", "KLHILL_POD_MAX_DISK_GB": "0"})
    assert s.allow_hotkeys == frozenset({"5A", "5B"}) and s.max_disk_gb is None
    assert PodSettings(allow_hotkeys=frozenset({HOTKEY}), max_disk_gb=3).max_disk_gb == 3.0


@pytest.mark.parametrize(
    "argv, env, words",
    [
        ([], {}, "--allow-hotkey"),
        (["--allow-hotkey", HOTKEY, "--port", "x"], {}, "invalid int value"),
        (["--allow-hotkey", HOTKEY], {"KLHILL_POD_MAX_QUEUED": "many"}, "KLHILL_POD_MAX_QUEUED"),
    ],
)
def test_bad_input_is_a_usage_error(argv, env, words, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args([*argv, "--device", "cpu"], env=env)
    assert exc.value.code == ExitCode.NO_VERDICT and words in capsys.readouterr().err


def test_module_entry_point_answers_help_without_starting():
    out = subprocess.run(
        [sys.executable, "-m", "validator.pod", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "KLHILL_POD_ALLOW_HOTKEYS" in out.stdout


def test_refuses_to_start_without_allow_list(tmp_path, monkeypatch):
    monkeypatch.delenv("KLHILL_POD_ALLOW_HOTKEYS", raising=False)
    with pytest.raises(SystemExit):
        parse_args(["--workdir", str(tmp_path)])
    with pytest.raises(ValueError):
        PodSettings(allow_hotkeys=frozenset(), workdir=tmp_path)


def test_every_flag_has_an_env_equivalent(tmp_path, monkeypatch):
    env = {
        "KLHILL_POD_HOST": "0.0.0.0",
        "KLHILL_POD_PORT": "9001",
        "KLHILL_POD_ALLOW_HOTKEYS": "5Aaa, 5Bbb",
        "KLHILL_POD_HOTKEY": "5Pod",
        "KLHILL_POD_WORKDIR": str(tmp_path / "w"),
        "KLHILL_POD_DEVICE": "cpu",
        "KLHILL_POD_MAX_DISK_GB": "12.5",
        "KLHILL_POD_MIN_FREE_GB": "1",
        "KLHILL_POD_HUB": str(tmp_path / "hub"),
        "KLHILL_POD_MAX_QUEUED": "7",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = parse_args([])
    assert (s.host, s.port, s.allow_hotkeys, s.pod_hotkey) == ("0.0.0.0", 9001, frozenset({"5Aaa", "5Bbb"}), "5Pod")
    assert (s.workdir, s.device, s.max_disk_gb, s.min_free_gb) == (tmp_path / "w", "cpu", 12.5, 1.0)
    assert (s.hub, s.max_queued) == (tmp_path / "hub", 7)
    # flags win over the environment
    s = parse_args(["--port", "9002", "--allow-hotkey", "5Ccc", "--max-queued", "2", "--max-disk-gb", "0"])
    assert (s.port, s.allow_hotkeys, s.max_queued, s.max_disk_gb) == (9002, frozenset({"5Ccc"}), 2, None)
    # a bad env value is a usage error (exit 2), not a traceback
    monkeypatch.setenv("KLHILL_POD_PORT", "eighty")
    with pytest.raises(SystemExit) as exc:
        parse_args([])
    assert exc.value.code == 2

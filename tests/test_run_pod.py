"""scripts/run_pod.sh: the GPU extra is installed once, and a restart starts the pod without running pip.

The script runs for real (bash, its own ``_venv.sh``) in a scratch checkout
whose ``.venv/bin/python`` records its arguments instead of installing or
serving anything.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../../calls.log"
case "$*" in *"pip install"*) [ -f "$(dirname "$0")/../../pip-fails" ] && exit 1 ;; esac
exit 0
"""


def _checkout(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    for name in ("run_pod.sh", "_venv.sh"):
        shutil.copy2(ROOT / "scripts" / name, tmp_path / "scripts" / name)
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy2(ROOT / name, tmp_path / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def _start(repo: Path) -> tuple[int, list[str]]:
    log = repo / "calls.log"
    log.unlink(missing_ok=True)
    proc = subprocess.run(
        ["bash", str(repo / "scripts" / "run_pod.sh"), "--port", "8091"], capture_output=True, text=True, timeout=60
    )
    return proc.returncode, log.read_text().splitlines() if log.exists() else []


def _pip_calls(calls: list[str]) -> list[str]:
    return [c for c in calls if "pip install" in c]


def test_gpu_extra_installs_once_and_restarts_run_no_pip(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    rc, calls = _start(repo)
    assert rc == 0
    pips = _pip_calls(calls)
    assert len(pips) == 2 and "torch==2.13.0" in pips[0]
    assert "-c constraints.txt -e .[gpu]" in pips[1]  # the extra, with the exact pins
    assert calls[-1] == "-m validator.pod --port 8091"
    assert (repo / ".venv" / ".klhill-installed-gpu").is_file()

    for _ in range(2):  # what PM2 does after a crash or a reboot
        rc, calls = _start(repo)
        assert rc == 0 and calls == ["-m validator.pod --port 8091"]

    with (repo / "constraints.txt").open("a") as fh:  # a new pin: install again, once
        fh.write("example-package==1.0\n")
    assert len(_pip_calls(_start(repo)[1])) == 2
    assert _pip_calls(_start(repo)[1]) == []


def test_a_failed_install_is_retried_at_the_next_start_and_the_pod_does_not_start(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    (repo / "pip-fails").touch()
    rc, calls = _start(repo)
    assert rc != 0
    assert not any("validator.pod" in c for c in calls)
    assert not (repo / ".venv" / ".klhill-installed-gpu").exists()
    (repo / "pip-fails").unlink()
    rc, calls = _start(repo)
    assert rc == 0 and len(_pip_calls(calls)) == 2 and calls[-1].endswith("validator.pod --port 8091")


def test_the_dev_install_of_test_sh_does_not_count_as_the_gpu_one(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    want = subprocess.run(
        "cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1",
        shell=True,
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (repo / ".venv" / ".klhill-installed").write_text(want + "\n")  # what scripts/test.sh leaves
    rc, calls = _start(repo)
    assert rc == 0 and "-e .[gpu]" in _pip_calls(calls)[-1]

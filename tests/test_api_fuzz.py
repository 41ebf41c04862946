"""Fuzz the API against its own OpenAPI schema with schemathesis: no request may cause a 5xx.

schemathesis is not a project dependency (it pins much of the test stack), so it lives in
its own virtualenv: ``$KLHILL_FUZZ_VENV`` (default ``/tmp/klhill-fuzz-venv``), created on
first use with ``pip install schemathesis`` when a package index is reachable. The test
skips with a message when that cannot be done. The API runs as a real uvicorn server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.contest_store import build_store, serve_api

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("KLHILL_FUZZ_VENV", "/tmp/klhill-fuzz-venv"))


def schemathesis_cli() -> Path:
    exe = VENV / "bin" / "schemathesis"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=120)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "schemathesis"], check=True, capture_output=True, timeout=600
        )
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(
            f"schemathesis cannot be installed into {VENV} ({type(exc).__name__}); "
            f"install it there with: python -m venv {VENV} && {VENV}/bin/pip install schemathesis"
        )
    return exe


def test_fuzz_openapi_no_server_errors(tmp_path):
    cli = schemathesis_cli()
    b = build_store(tmp_path / "validator.db", tmp_path / "chain.db", n_miners=8, prompts=4)
    with serve_api(b.db, "--rate", "0") as url:
        run = subprocess.run(
            [
                str(cli),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "30",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    (tmp_path / "schemathesis.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

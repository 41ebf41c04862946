"""The dashboard in headless Chromium: the JS runs offline, shows the king, and a screenshot is saved.

Needs the Debian ``chromium`` package (``apt-get install -y chromium``); skipped with a
message where it is absent. The API runs as a real uvicorn server on loopback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from scripts.contest_store import build_store, serve_api

ROOT = Path(__file__).resolve().parent.parent
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get update && apt-get install -y chromium)")
    return exe


@pytest.fixture
def served(tmp_path):
    b = build_store(tmp_path / "validator.db", tmp_path / "chain.db", n_miners=14, prompts=8)
    with serve_api(b.db) as url:
        yield b, url


def run_chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def test_dashboard_shows_the_king_in_headless_chromium(served, tmp_path):
    exe = chromium()
    b, url = served
    king = httpx.get(url + "/api/scores").json()["king"]
    dom = run_chromium(exe, tmp_path / "p1", "--virtual-time-budget=5000", "--dump-dom", url + "/dashboard").stdout
    m = re.search(r'id="king-model"[^>]*>([^<]+)<', dom)
    assert m and m.group(1) == king["repo"], dom[:2000]
    assert f"{king['kl']:.4f}" in dom and "COPY" in dom and "/api/rounds/" in dom
    assert 'class="bad"' not in dom.split('id="status"')[1][:200]  # every panel refreshed without error
    board = dom.split('id="board"')[1].split("</tbody>")[0]
    shown = re.findall(r"<tr><td>([^<]*)</td>", board)
    ranks = [e["rank"] for e in httpx.get(url + "/api/scores").json()["evaluations"]]
    assert shown == ["" if r is None else str(r) for r in ranks]  # no rank for rows that are not comparable
    shot = tmp_path / "dashboard.png"
    run_chromium(
        exe,
        tmp_path / "p2",
        "--virtual-time-budget=5000",
        f"--screenshot={shot}",
        "--window-size=1280,1400",
        url + "/dashboard",
    )
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    phone = tmp_path / "phone.png"
    run_chromium(
        exe,
        tmp_path / "p3",
        "--virtual-time-budget=5000",
        f"--screenshot={phone}",
        "--window-size=390,1600",
        url + "/dashboard",
    )
    assert phone.exists() and phone.stat().st_size > 5_000
    # the round view: a round the on-policy guard stopped a challenger in shows its own text and the teacher's view
    stopped = next(
        r["id"]
        for r in httpx.get(url + "/api/rounds", params={"per_page": 100}).json()["items"]
        if any(
            e["state"] == "onpolicy_stopped"
            for e in httpx.get(f"{url}/api/rounds/{r['id']}").json().get("evaluations", [])
        )
    )
    view = run_chromium(
        exe, tmp_path / "p4", "--virtual-time-budget=5000", "--dump-dom", f"{url}/dashboard#round-{stopped}"
    ).stdout
    part = view.split('id="round-view"')[1]
    assert f"Round #{stopped}" in part and "onpolicy_stopped" in part and "beats the king on KL" in part
    assert "its own text on the first 8 prompts" in part and "the same sentence again." in part
    if os.environ.get("KLHILL_SAVE_DASHBOARD"):
        shutil.copy(shot, ROOT / "docs" / "dashboard.png")

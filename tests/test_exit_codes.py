"""One meaning per exit status, the same numbers the README and the PM2 file document."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from eval.exit_codes import ExitCode
from validator.chain.submit import Refused, outcome

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = (
    "miner.py",
    "eval/estimate.py",
    "validator/chain/submit.py",
    "validator/__main__.py",
    "validator/loop.py",
    "api/__main__.py",
)


def test_numbers_are_the_documented_ones():
    assert [(c.name, int(c)) for c in ExitCode] == [("OK", 0), ("REFUSED", 1), ("NO_VERDICT", 2), ("UNCONFIRMED", 3)]
    pm2 = (REPO / "scripts" / "ecosystem.config.js").read_text()
    assert f"stop_exit_codes: [{int(ExitCode.NO_VERDICT)}]" in pm2  # "cannot start" is never restarted in a loop


def test_every_code_says_what_it_means():
    source = (REPO / "eval" / "exit_codes.py").read_text()
    body = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "ExitCode").body
    documented = {
        target.id
        for stmt, doc in zip(body, body[1:], strict=False)
        if isinstance(stmt, ast.Assign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
        for target in stmt.targets
        if isinstance(target, ast.Name)
    }
    assert documented == {c.name for c in ExitCode}


def test_no_command_defines_its_own_exit_numbers():
    """Exit statuses were once defined three times, with two meanings for 1."""
    for name in ENTRY_POINTS:
        text = (REPO / name).read_text()
        assert not re.search(r"^EXIT_[A-Z_]+\s*[,=]", text, flags=re.M), name
        assert not re.search(r"return [123]\b", text), name


def test_commit_errors_map_once():
    from bittensor.keyfiles import KeyfileError

    from eval.errors import TransientError, UsageError
    from eval.model_store.port import RepoNotFound
    from validator.chain.port import ChainError

    cases = {
        Refused("no"): (ExitCode.REFUSED, "REFUSED: no"),
        RepoNotFound("gone"): (ExitCode.REFUSED, "REFUSED: org/m is not available: gone"),
        ChainError("bad extrinsic"): (ExitCode.REFUSED, "CHAIN ERROR: bad extrinsic"),
        UsageError("--sim-db"): (ExitCode.NO_VERDICT, "REFUSED: --sim-db"),
        ValueError("bad id"): (ExitCode.NO_VERDICT, "REFUSED: bad id"),
    }
    for exc, expected in cases.items():
        assert outcome(exc, "org/m") == expected, exc
    status, text = outcome(TransientError("HTTP 503"), "org/m") or (None, "")
    assert status == ExitCode.NO_VERDICT and text.startswith("TRY AGAIN LATER") and "503" in text
    status, text = outcome(KeyfileError("decryption failed"), "org/m") or (None, "")
    assert status == ExitCode.NO_VERDICT and text.startswith("REFUSED: cannot unlock the hotkey")
    assert outcome(RuntimeError("a bug"), "org/m") is None  # not ours: a traceback, never a quiet exit code

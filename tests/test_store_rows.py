"""validator.store.rows: typed rows out of the store, one identity per submission row."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from eval.schemas import SubmissionId
from validator.store import rows


def _row(sql: str) -> sqlite3.Row:
    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    return db.execute(sql).fetchone()


def test_build_takes_exactly_the_fields_and_decoded_columns_win():
    row = _row(
        "SELECT 'hk' AS hotkey, 7 AS commit_block, '[]' AS reason_json, 'COPY' AS reason, 'content_hash' AS 'check',"
        " 'd' AS detail, 'raw' AS evidence, 9 AS block, NULL AS round_id, 1.5 AS at, 'ignored' AS extra"
    )
    dq = rows.build(rows.DisqualificationRow, row, evidence={"copy_of": "x"})
    assert dq == rows.DisqualificationRow("hk", 7, "COPY", "content_hash", "d", {"copy_of": "x"}, 9, None, 1.5)
    assert dq.key == SubmissionId("hk", 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dq.reason = "INVALID"  # type: ignore[misc]


def test_a_missing_or_renamed_column_fails_at_the_store_not_in_a_reader():
    row = _row("SELECT 'hk' AS hotkey, 7 AS commit_block, 5 AS since, NULL AS round_id, 0.1 AS kl")
    with pytest.raises(KeyError, match="since_block"):
        rows.build(rows.KingRow, row)


def test_a_round_names_its_king_and_models_by_submission_id():
    base = dict.fromkeys(f.name for f in dataclasses.fields(rows.RoundSummary))
    first = rows.RoundSummary(**{**base, "id": 1, "kind": "first"})
    assert first.king is None
    challenge = rows.RoundSummary(**{**base, "id": 2, "kind": "challenge", "king_hotkey": "hk", "king_block": 0})
    assert challenge.king == SubmissionId("hk", 0)


def test_rows_become_the_dicts_the_api_has_always_validated():
    """``dataclasses.asdict`` keeps the served names (``uid``, ``model``, ``check``) and nests ids as objects."""
    c = rows.CommitmentRow("hk", 3, 1, "org/m", "r" * 40, "admitted", None, "ck", 2.0)
    assert dataclasses.asdict(c) == {
        "hotkey": "hk",
        "commit_block": 3,
        "uid": 1,
        "model": "org/m",
        "revision": "r" * 40,
        "status": "admitted",
        "status_detail": None,
        "coldkey": "ck",
        "first_seen": 2.0,
    }
    base = {f.name: None for f in dataclasses.fields(rows.RoundAudit)}
    audit = rows.RoundAudit(**{**base, "models": [SubmissionId("hk", 3)], "evaluations": []})
    assert dataclasses.asdict(audit)["models"] == [{"hotkey": "hk", "commit_block": 3}]

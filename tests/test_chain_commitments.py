"""Strict commitment parsing: every malformed shape is INVALID, chain fields never come from text."""

from __future__ import annotations

import json

import pytest

from validator.chain.commitments import (
    MAX_COMMITMENT_BYTES,
    CommitmentError,
    Invalid,
    ParsedCommitment,
    format_commitment,
    parse_commitment,
)

REV = "a" * 40
GOOD = '{"model":"org/student-1","revision":"' + REV + '"}'


def test_canonical_commitment_parses():
    assert parse_commitment(GOOD) == ParsedCommitment("org/student-1", REV)
    assert parse_commitment(GOOD.encode()) == ParsedCommitment("org/student-1", REV)


@pytest.mark.parametrize(
    "text",
    [
        '{ "model": "org/student-1", "revision": "' + REV + '" }',  # whitespace
        '{"revision":"' + REV + '","model":"org/student-1"}',  # key order
        GOOD + "\n",  # trailing newline
        " " + GOOD,  # leading space
        "\ufeff" + GOOD,  # byte-order mark
        GOOD.replace("org/", "org\\/"),  # escaped slash: same JSON value, other bytes
        GOOD.replace("org", "\\u006frg"),  # unicode escape: same JSON value, other bytes
    ],
)
def test_same_value_in_another_spelling_is_invalid(text):
    """Compact JSON only: one spelling per commitment, so no two parsers can disagree on it."""
    out = parse_commitment(text)
    assert isinstance(out, Invalid), text
    assert GOOD in out.reason or "not JSON" in out.reason


@pytest.mark.parametrize(
    "text, fragment",
    [
        # LESSONS 2: a spoofed chain field is rejected, not merged.
        ('{"model":"org/m","revision":"' + REV + '","block":1}', "unknown keys"),
        ('{"model":"org/m","revision":"' + REV + '","hotkey":"5abc"}', "unknown keys"),
        ('{"model":"org/m","model":"org/n","revision":"' + REV + '"}', "duplicate key"),
        ('{"model":"org/m"}', "missing keys"),
        ('["org/m","' + REV + '"]', "JSON object"),
        ('"org/m@' + REV + '"', "JSON object"),
        ("org/m@" + REV, "not JSON"),
        ("", "empty"),
        ("   ", "empty"),
        ('{"model":"org/m","revision":"main"}', "revision"),
        ('{"model":"org/m","revision":"' + "A" * 40 + '"}', "revision"),
        ('{"model":"org/m","revision":"' + "a" * 39 + '"}', "revision"),
        ('{"model":"org/m","revision":' + "1" * 40 + "}", "revision"),
        ('{"model":"m","revision":"' + REV + '"}', "model must be"),
        ('{"model":"org/a..b","revision":"' + REV + '"}', "'..'"),
        ('{"model":"a/b/c","revision":"' + REV + '"}', "model must be"),
        ('{"model":null,"revision":"' + REV + '"}', "model must be"),
        ('{"model":"org/m","revision":"' + REV + '","x":NaN}', "not JSON"),
        ('{"model":"org/' + "m" * 90 + '","revision":"' + REV + '"}', "longer than"),
    ],
)
def test_malformed_commitments_are_invalid_with_reason(text, fragment):
    out = parse_commitment(text)
    assert isinstance(out, Invalid), out
    assert fragment in out.reason


def test_non_utf8_bytes_are_invalid():
    assert isinstance(parse_commitment(b"\xff\xfe{}"), Invalid)


def test_format_round_trips_and_is_compact_sorted():
    text = format_commitment("org/student-1", REV)
    assert text == GOOD
    assert json.loads(text) == {"model": "org/student-1", "revision": REV}
    assert parse_commitment(text) == ParsedCommitment("org/student-1", REV)


def test_format_refuses_invalid_ids_and_oversized_text():
    with pytest.raises(CommitmentError):
        format_commitment("org/m", "main")
    with pytest.raises(CommitmentError):
        format_commitment("no-slash", REV)
    long_repo = "o/" + "m" * 90  # valid id, but does not fit on chain
    with pytest.raises(CommitmentError, match="fit"):
        format_commitment(long_repo, REV)


def test_longest_formattable_commitment_fits_exactly():
    overhead = len(format_commitment("o/m", REV)) - len("o/m")
    repo = "o/" + "m" * (MAX_COMMITMENT_BYTES - overhead - 2)
    text = format_commitment(repo, REV)
    assert len(text.encode()) == MAX_COMMITMENT_BYTES
    assert parse_commitment(text) == ParsedCommitment(repo, REV)

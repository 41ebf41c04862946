"""The API's queries: bounded pages, and a boundary the loop does not cross."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from store_fixtures import first_round, open_store

from validator.store.api_reads import MAX_PER_PAGE, ApiReads
from validator.store.loop_reads import LoopReads

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


def test_pages_are_bounded_and_count_every_round(store):
    rid, (a, _) = first_round(store)
    page = store.rounds(page=0, per_page=10 * MAX_PER_PAGE)
    assert (page.page, page.per_page, page.total) == (1, MAX_PER_PAGE, 1)
    assert [x.id for x in page.items] == [rid] and store.rounds(page=2).items == []
    assert [h.hotkey for h in store.king_history()] == [a.hotkey]


def test_the_loop_runs_none_of_the_apis_queries():
    """The host's modules call only ``LoopReads`` queries on the store (never the API's pagination, say)."""
    api_only = {n for n in vars(ApiReads) if not n.startswith("_")} - set(dir(LoopReads))
    assert {"rounds", "scores", "submission", "disqualifications"} <= api_only
    for path in sorted((ROOT / "validator").rglob("*.py")):
        if {"store", "pod"} & set(path.relative_to(ROOT / "validator").parts):
            continue
        used = set(re.findall(r"store\.(\w+)\(", path.read_text()))
        assert not used & api_only, f"{path.relative_to(ROOT)} runs the API's {sorted(used & api_only)}"

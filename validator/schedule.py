"""The shared round schedule: which slot judges which submission, as a pure function of the chain.

Every honest validator must judge the same round: the same challengers against the same king on
the same prompts. So nothing here reads a clock, a head block or this validator's history:

- Slot ``s`` covers blocks ``[s * R, (s + 1) * R)`` (``R`` = ``rules.round_interval_blocks``); its
  round is seeded by the *final* hash of block ``s * R``, whenever a validator gets to run it.
- A commitment made at block ``c`` enters the first slot whose start is ``>= c + L``
  (``L`` = ``rules.commit_lag_blocks``): nobody can commit after seeing a slot's seed and still
  enter that slot, and every validator has ``L`` blocks to admit it before it is due.
- Slots take their challengers in seniority order (commit block, then hotkey) up to
  ``max_challengers_per_round``, at most ``max_queued_per_coldkey`` per coldkey; the rest
  overflow into the next slot with room. A slot is fixed once computed (``frozen``), so a later
  change on the chain (a re-commit that frees a place) never moves a slot already assigned.

docs/decisions.md ("One schedule for every validator") has the trade-offs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from eval.rules import ContestRules
from eval.schemas import SubmissionId


def slot_of(block: int, rules: ContestRules) -> int:
    """The slot block ``block`` belongs to."""
    if block < 0:
        raise ValueError(f"block must be >= 0, got {block}")
    return block // rules.round_interval_blocks


def slot_start(slot: int, rules: ContestRules) -> int:
    """The first block of ``slot``: its round is seeded by this block's final hash."""
    if slot < 0:
        raise ValueError(f"slot must be >= 0, got {slot}")
    return slot * rules.round_interval_blocks


def entry_slot(commit_block: int, rules: ContestRules) -> int:
    """The first slot a commitment at ``commit_block`` may be judged in: start >= commit_block + L."""
    if commit_block < 0:
        raise ValueError(f"commit_block must be >= 0, got {commit_block}")
    due = commit_block + rules.commit_lag_blocks
    return -(-due // rules.round_interval_blocks)  # ceil(due / R)


@dataclass(frozen=True)
class Entry:
    """A submission as the schedule sees it: its identity and the coldkey its per-slot cap counts against."""

    key: SubmissionId
    coldkey: str


class _Load:
    """Challengers per slot and per (slot, coldkey), for the caps."""

    def __init__(self, rules: ContestRules) -> None:
        self.cap, self.per_coldkey = rules.max_challengers_per_round, rules.max_queued_per_coldkey
        self.total: dict[int, int] = {}
        self.by_coldkey: dict[tuple[int, str], int] = {}

    def fits(self, slot: int, coldkey: str) -> bool:
        return self.total.get(slot, 0) < self.cap and self.by_coldkey.get((slot, coldkey), 0) < self.per_coldkey

    def take(self, slot: int, coldkey: str) -> None:
        self.total[slot] = self.total.get(slot, 0) + 1
        self.by_coldkey[(slot, coldkey)] = self.by_coldkey.get((slot, coldkey), 0) + 1


def assign_slots(
    entries: Iterable[Entry], rules: ContestRules, frozen: Mapping[SubmissionId, int] | None = None
) -> dict[SubmissionId, int]:
    """The slot of every entry: ``frozen`` ones keep theirs, the rest fill in by seniority.

    ``frozen`` holds assignments made earlier (they occupy their places first); an entry of
    ``frozen`` not among ``entries`` (gone from the chain) frees its place. The result covers
    exactly ``entries``.
    """
    listed = sorted(set(entries), key=lambda e: e.key)
    keys = {e.key for e in listed}
    fixed = {k: s for k, s in (frozen or {}).items() if k in keys}
    load = _Load(rules)
    for e in listed:
        if e.key in fixed:
            load.take(fixed[e.key], e.coldkey)
    out = dict(fixed)
    for e in listed:
        if e.key in out:
            continue
        slot = entry_slot(e.key.commit_block, rules)
        while not load.fits(slot, e.coldkey):
            slot += 1
        load.take(slot, e.coldkey)
        out[e.key] = slot
    return out

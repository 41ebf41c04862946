"""Who owns a model's weights: the earliest commit wins, copies are marked COPY.

Pure: no I/O. A submission is a copy when any of its hashes (metadata hash,
content hash) was first claimed by another submission. "First" is the
earliest commit block; ties at the same block go to the lexicographically
smallest hotkey, then the smallest key (docs/decisions.md). The king is not
exempt: a king that turns out to be a copy loses to the owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class OwnedSubmission:
    key: str
    hotkey: str
    commit_block: int
    metadata_hash: str | None = None
    content_hash: str | None = None


def seniority(hotkey: str, commit_block: int) -> tuple[int, str]:
    """Who came first: the earlier commit block, ties to the smaller hotkey.

    The one ordering every ownership and FIFO decision uses (the validator's
    ``order_key`` included): both fields come from the chain, so every validator
    agrees and nobody can change their place after the fact.
    """
    return (commit_block, hotkey)


def _order(s: OwnedSubmission) -> tuple[int, str, str]:
    return (*seniority(s.hotkey, s.commit_block), s.key)


def assign_ownership(submissions: Iterable[OwnedSubmission]) -> dict[str, str]:
    """Map each submission key to the key that owns its weights (itself when original).

    Owners are resolved over both hashes at once: if B copies A's metadata hash
    and C copies B's content hash, C's owner is A (ownership is transitive), so
    the earliest member of every connected group owns the whole group.
    """
    subs = sorted(submissions, key=_order)
    if len({s.key for s in subs}) != len(subs):
        raise ValueError("duplicate submission keys")
    parent = {s.key: s.key for s in subs}
    rank = {s.key: i for i, s in enumerate(subs)}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    first_claim: dict[tuple[str, str], str] = {}
    for s in subs:
        for kind, h in (("metadata", s.metadata_hash), ("content", s.content_hash)):
            if not h:
                continue
            claimant = first_claim.setdefault((kind, h), s.key)
            a, b = find(claimant), find(s.key)
            if a != b:
                winner, loser = (a, b) if rank[a] < rank[b] else (b, a)
                parent[loser] = winner
    return {s.key: find(s.key) for s in subs}


def copies(submissions: Iterable[OwnedSubmission]) -> dict[str, str]:
    """Only the copies: key -> owner key, for every submission that is not its own owner."""
    return {k: owner for k, owner in assign_ownership(submissions).items() if owner != k}

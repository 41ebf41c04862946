"""The chain's consensus, as pure functions of what the chain shows: the consensus king and vtrust.

A validator is paid by how well its weights agree with the others' (Yuma clips every weight to the
stake-weighted median). These functions read that agreement off the chain's weight rows:

- ``consensus_king``: the miner with the most stake-weighted weight among the *other* permitted
  validators' visible weights (ties broken by commitment seniority). A validator that joins late,
  or lost its history, adopts it instead of crowning a king of its own.
- ``yuma_vtrust``: a validator's trust as Yuma computes it: the sum of its weights after clipping
  each to the stake-weighted median (kappa 0.5). 1.0 means every weight it set counted; a
  winner-take-all validator in the minority gets 0.0.

A weight a validator set on a uid before that uid's current owner registered scored the previous
owner (LESSONS 17): it is masked, as Yuma masks it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from eval.schemas import SubmissionId

KAPPA = 0.5
"""Yuma's consensus majority: the share of stake that must stand at or above a weight for it to count."""
_TIE = 1e-9


class NeuronLike(Protocol):
    """What ``validator.chain.port.Neuron`` provides."""

    @property
    def uid(self) -> int: ...
    @property
    def hotkey(self) -> str: ...
    @property
    def stake(self) -> float: ...
    @property
    def validator_permit(self) -> bool: ...
    @property
    def last_update(self) -> int: ...
    @property
    def registered_at(self) -> int: ...


@dataclass(frozen=True)
class Validators:
    """The permitted validators' masked weight rows and their stake shares (summing to 1)."""

    rows: dict[int, dict[int, float]]
    shares: dict[int, float]


def _validators(
    neurons: Sequence[NeuronLike], rows: Mapping[int, Mapping[int, float]], exclude: str | None
) -> Validators:
    by_uid = {n.uid: n for n in neurons}
    permitted = [n for n in neurons if n.validator_permit and n.hotkey != exclude]
    total = sum(max(n.stake, 0.0) for n in permitted)
    shares = {n.uid: (max(n.stake, 0.0) / total if total > 0 else 1.0 / len(permitted)) for n in permitted}
    masked: dict[int, dict[int, float]] = {}
    for n in permitted:
        row = {
            u: w
            for u, w in rows.get(n.uid, {}).items()
            if w > 0 and u in by_uid and by_uid[u].registered_at <= n.last_update
        }
        norm = sum(row.values())
        masked[n.uid] = {u: w / norm for u, w in row.items()} if norm > 0 else {}
    return Validators(masked, shares)


def support(
    neurons: Sequence[NeuronLike], rows: Mapping[int, Mapping[int, float]], exclude: str | None = None
) -> dict[int, float]:
    """Stake-weighted weight per uid from the permitted validators (but ``exclude``)."""
    v = _validators(neurons, rows, exclude)
    out: dict[int, float] = {}
    for vid, row in v.rows.items():
        for uid, w in row.items():
            out[uid] = out.get(uid, 0.0) + v.shares[vid] * w
    return out


def consensus_king(
    neurons: Sequence[NeuronLike],
    rows: Mapping[int, Mapping[int, float]],
    live: Mapping[str, SubmissionId],
    exclude: str | None = None,
) -> SubmissionId | None:
    """The submission the other validators' weights crown, or None when they crown no live submission.

    ``live`` maps a hotkey to its live submission (its current commitment, not disqualified).
    The top uid by stake-weighted weight wins; on a tie the most senior submission does. A top uid
    whose hotkey holds no live submission (a recycled uid, a withdrawn model) means no consensus.
    """
    scores = support(neurons, rows, exclude)
    if not scores:
        return None
    best = max(scores.values())
    if best <= 0:
        return None
    hotkeys = {n.uid: n.hotkey for n in neurons}
    top = [uid for uid, s in scores.items() if s >= best - _TIE]
    held = sorted(live[hotkeys[u]] for u in top if hotkeys.get(u) in live)
    return held[0] if held else None


def _median_weight(values: Sequence[tuple[float, float]]) -> float:
    """The largest weight ``w`` held at or above by at least ``KAPPA`` of the stake; ``values`` = (weight, share)."""
    held = 0.0
    for weight, share in sorted(values, reverse=True):
        held += share
        if held >= KAPPA - _TIE:
            return weight
    return 0.0


def yuma_vtrust(neurons: Sequence[NeuronLike], rows: Mapping[int, Mapping[int, float]], hotkey: str) -> float | None:
    """``hotkey``'s validator trust under Yuma's clipping; None when it has no permit or no weights."""
    v = _validators(neurons, rows, None)
    me = next((n.uid for n in neurons if n.hotkey == hotkey), None)
    if me is None or me not in v.rows or not v.rows[me]:
        return None
    trust = 0.0
    for uid, mine in v.rows[me].items():
        consensus = _median_weight([(row.get(uid, 0.0), v.shares[vid]) for vid, row in v.rows.items()])
        trust += min(mine, consensus)
    return trust


def disagreement_streak(agreements: Sequence[bool | None]) -> int:
    """Slots in a row, newest last, whose king differed from the consensus king (None: no consensus; skipped)."""
    streak = 0
    for agree in reversed(agreements):
        if agree is None:
            continue
        if agree:
            break
        streak += 1
    return streak

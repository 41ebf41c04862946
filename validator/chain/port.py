"""The narrow port between the contest and a chain: types, errors and the ``Chain`` protocol.

Two implementations sit behind it: ``validator.chain.sim.SimChain`` (an embedded chain in a
SQLite file, the default for the demo and the tests) and ``validator.chain.subtensor.SubtensorChain``
(bittensor v11). Everything the contest learns from a chain arrives as these frozen types, so
chain fields (hotkey, commit block) can never be overridden by miner text (LESSONS 2).

Error split: a ``ChainError`` is a definite answer ("not registered", "already committed") and
is worth reporting as-is; ``ChainUnavailable`` (an ``eval.errors.TransientError``) means the chain
could not be asked (dropped websocket, timeout) and the caller should try again later
(LESSONS 21); ``ChainThrottled`` is the RPC endpoint saying "too many requests": the caller backs
off instead of asking again at once.

Weights take one of two paths on subtensor: a direct set, or (commit-reveal, the chain's default)
a timelocked commit that the chain reveals some blocks later. Either way the weights count as set
only once ``weights_of`` shows them (``weights_match``); a receipt says what was submitted.

Type-check the adapters against the SDK's own hints with:
``.venv/bin/mypy validator/chain/``
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Protocol, runtime_checkable

from eval.errors import KlhillError, TransientError

#: One ``Raw`` commitment field holds at most 128 bytes on subtensor; SimChain enforces the same.
COMMITMENT_MAX_BYTES = 128

_HASH_RE = re.compile(r"^0x[0-9a-f]{64}$")


@dataclass(frozen=True)
class BlockRef:
    """A block as the contest sees it: number plus its hash ("0x" + 64 lowercase hex)."""

    number: int
    hash: str

    def __post_init__(self) -> None:
        if self.number < 0:
            raise ValueError(f"block number must be >= 0, got {self.number}")
        if not _HASH_RE.match(self.hash):
            raise ValueError(f"block hash must be 0x + 64 lowercase hex, got {self.hash!r}")


@dataclass(frozen=True)
class Neuron:
    """One registered uid on the subnet. ``uid`` is a slot and gets recycled: key nothing by it."""

    uid: int
    hotkey: str
    coldkey: str
    stake: float
    validator_permit: bool
    incentive: float
    emission: float
    last_update: int
    registered_at: int = 0
    """Block the hotkey took this uid: weights set on the uid before it scored the previous owner."""


@dataclass(frozen=True)
class Commitment:
    """A hotkey's commitment exactly as the chain stores it: raw text and the block it landed in."""

    hotkey: str
    block: int
    text: str


@dataclass(frozen=True)
class WeightsReceipt:
    """Outcome of a weight submission: what the chain accepted, not yet what it shows.

    ``success``: the extrinsic was included and succeeded. With ``committed`` it was a timelocked
    commit: the weights become visible (``weights_of``) only when the chain reveals it, expected
    by block ``reveal_by``; a reveal can still fail, silently on subtensor. Without ``committed``
    the weights were set directly and should be visible at once. ``reason`` is a short
    machine-readable cause for failures (``rate_limited``, ``not_registered``, ``no_permit``,
    ``low_stake``, ``rejected``, ``not_confirmed``); empty on success.
    """

    success: bool
    message: str
    block: int | None
    reason: str = ""
    committed: bool = False
    reveal_by: int | None = None


class ChainError(KlhillError):
    """The chain gave a definite answer that the call cannot succeed as asked."""


class ChainUnavailable(TransientError):
    """The chain could not be asked (connection lost, no answer in time): try again later."""


class ChainThrottled(ChainUnavailable):
    """The RPC endpoint refused the request under its rate limit (HTTP 429): back off, do not retry now.

    ``retry_after_s`` is the endpoint's own hint in seconds, when it gave a usable one.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotRegistered(ChainError):
    """The hotkey has no uid on this subnet."""


class AlreadyCommitted(ChainError):
    """The hotkey already has a commitment on this subnet; writing another would replace (withdraw) it."""


class CommitmentTooLong(ChainError):
    """The commitment text is longer than ``COMMITMENT_MAX_BYTES`` bytes of UTF-8."""


class RateLimited(ChainError):
    """The chain refuses this action until more blocks have passed."""


def check_commitment_text(text: str) -> bytes:
    """Validate commitment text before anything is signed; return its UTF-8 bytes."""
    data = text.encode("utf-8")
    if not data:
        raise ChainError('Commitment text is empty; commit compact JSON such as {"model":...,"revision":...}.')
    if len(data) > COMMITMENT_MAX_BYTES:
        raise CommitmentTooLong(
            f"Commitment is {len(data)} bytes of UTF-8; the chain holds at most {COMMITMENT_MAX_BYTES}."
        )
    return data


def version_key(version: str | None = None) -> int:
    """The weights ``version_key`` for a package version: major*10000 + minor*100 + patch.

    ``0.1.0`` -> 100, ``1.2.3`` -> 10203. Defaults to the installed ``klhill`` version, so
    every validator of one release signs the same key and the subnet owner can require it.
    """
    if version is None:
        try:
            version = metadata.version("klhill")
        except metadata.PackageNotFoundError:
            version = "0.0.0"
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", version)
    if match is None:
        raise ValueError(f"cannot derive a version key from version {version!r}")
    major, minor, patch = (int(part or 0) for part in match.groups())
    if minor > 99 or patch > 99:
        raise ValueError(f"version {version!r} has a minor/patch above 99; the key would be ambiguous")
    return major * 10000 + minor * 100 + patch


def normalized_weights(uids: Sequence[int], weights: Sequence[float]) -> dict[int, float]:
    """A weight vector as the chain keeps it: zero entries dropped, the rest as fractions of their sum."""
    total = sum(w for w in weights if w > 0)
    if total <= 0:
        return {}
    return {int(u): w / total for u, w in zip(uids, weights, strict=True) if w > 0}


def weights_standing(*, registered: bool, permit: bool, stake: float, min_stake: float) -> tuple[str, str] | None:
    """``(reason, why)`` when a validator's weights would not count now; None when they would.

    Subtensor applies weights only from a registered hotkey with a validator permit and at least
    ``StakeThreshold`` stake; on a commit-reveal subnet it checks that only at the reveal, after it
    has accepted the commit, and drops a failing reveal silently. So callers check first.
    """
    if not registered:
        return "not_registered", "the hotkey is not registered on the subnet"
    if not permit:
        return "no_permit", "the hotkey has no validator permit, so its weights would not count"
    if stake < min_stake:
        return "low_stake", f"the hotkey has {stake:g} stake and weights need {min_stake:g} (StakeThreshold)"
    return None


def weights_match(on_chain: Mapping[int, float] | None, uids: Sequence[int], weights: Sequence[float]) -> bool:
    """Does the chain's weight row (``Chain.weights_of``) hold this vector, up to u16 rounding?

    Subtensor stores each row max-upscaled to 65535 and rounded, so fractions can differ by a
    few parts in 65535; anything further apart is another vector. An empty or missing row
    matches nothing.
    """
    if not on_chain:
        return False
    mine = normalized_weights(uids, weights)
    theirs = normalized_weights(list(on_chain), list(on_chain.values()))
    if set(mine) != set(theirs):
        return False
    return all(abs(mine[u] - theirs[u]) <= 1e-3 for u in mine)


@runtime_checkable
class Chain(Protocol):
    """What the validator and the miner CLI need from a chain, and nothing more.

    Writes are signed by the one hotkey the implementation was built with. Reads return
    what the chain says: ``commitments`` reports the chain's current commitment per hotkey
    with its block; what a commitment means for the contest is ``validator.contest``'s job.
    """

    netuid: int

    def head(self) -> BlockRef:
        """The current best block with its hash (the hash may cost a block fetch: see ``block_number``)."""
        ...

    def block_number(self) -> int:
        """The current best block's number only: the cheap call to poll."""
        ...

    def block_hash(self, number: int) -> str:
        """Hash of an existing block; ``ChainError`` for a block that does not exist yet."""
        ...

    def finalized_block_number(self) -> int:
        """The newest finalized block: what it holds can no longer be reorganised away."""
        ...

    def final_block_hash(self, number: int) -> str | None:
        """Hash of block ``number`` once it is final; None while it is not (the caller waits, never guesses).

        Round seeds are read only through this: a fork of a block that is not final yet could give
        two validators two hashes for one slot.
        """
        ...

    def weight_rows(self) -> dict[int, dict[int, float]]:
        """Every validator's weight row as the chain applies it now: validator uid -> {uid: fraction}.

        Rows are normalised (each sums to 1); a validator without weights has no entry. Pending
        (unrevealed) commits do not show, as in ``weights_of``.
        """
        ...

    def neurons(self) -> list[Neuron]:
        """Every registered neuron on the subnet, ordered by uid."""
        ...

    def commitments(self) -> dict[str, Commitment]:
        """Readable commitments on the subnet, keyed by hotkey (sealed ones are left out).

        The chain keeps one commitment per hotkey: a re-commit replaces the text and the block.
        """
        ...

    def set_weights(self, uids: list[int], weights: list[float]) -> WeightsReceipt:
        """Submit weights (a direct set or a timelocked commit, as the subnet runs).

        Refusals (rate limit, registration, permit, stake) come back as a failed receipt and
        send nothing. Success means accepted, not visible: confirm with ``weights_of``.
        """
        ...

    def weights_of(self, hotkey: str) -> dict[int, float] | None:
        """The hotkey's weight row as the chain applies it now: uid -> fraction of the row.

        ``{}`` when the hotkey has no weights; None when it is not registered. A pending
        (unrevealed) commit does not show here.
        """
        ...

    def commit(self, text: str, *, replace: bool = False) -> int:
        """Publish a commitment and return a best-effort block number for it.

        The authoritative block is what ``commitments()`` reports afterwards: poll it. An
        existing commitment is kept (``AlreadyCommitted``) unless ``replace``: the chain keeps
        only the newest one, so replacing withdraws the old submission.
        Raises ``NotRegistered``, ``AlreadyCommitted``, ``CommitmentTooLong`` or ``RateLimited``.
        """
        ...

    def weights_rate_limit(self) -> int:
        """Blocks a hotkey must wait between weight submissions on this subnet."""
        ...

    def weights_min_stake(self) -> float:
        """The stake this validator's hotkey needs for its weights to count (0 when exempt)."""
        ...

    def last_weights_block(self, hotkey: str) -> int | None:
        """Block of the hotkey's last weight submission, set or commit (``LastUpdate``); None if never or unregistered.

        This is what the rate limit counts from; it says nothing about what the chain applied.
        """
        ...

    def is_registered(self, hotkey: str) -> bool:
        """Whether the hotkey currently holds a uid on this subnet."""
        ...

"""The chain side of ``miner.py commit``: publish a model's one commitment, after every check that can refuse it.

Steps, in order, each able to stop the flow before anything is written:
resolve the revision -> build the commitment text (the one formatter; too long is refused) ->
the validator's admission check -> the hotkey is registered -> it holds no other commitment ->
show exactly what will be written and confirm -> write -> poll until the chain reads it back.

The chain keeps one commitment per hotkey and a new one replaces it, withdrawing the submission
it held (docs/decisions.md), so this command refuses to write over an existing commitment. Writing
the same text again is never needed: if the hotkey already holds exactly this commitment, the
command reports it as committed. Nothing is retried blindly: when the answer to the write is lost
(a timeout, a dropped connection), the chain is read back until the commitment shows, so a write
that landed is reported as done, and re-running the command later says the same.
Secrets never pass through here: only the hotkey's public ss58 address is printed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bittensor.keyfiles import KeyfileError

from eval.admission import Admitted, TeacherSpec, check_model
from eval.errors import KlhillError, TransientError, UsageError
from eval.exit_codes import ExitCode
from eval.model_store.port import DefiniteStoreError, ModelStore
from eval.rules import DEFAULT_RULES, ContestRules
from validator.chain.commitments import CommitmentError, format_commitment, validate_ids
from validator.chain.port import (
    AlreadyCommitted,
    Chain,
    ChainError,
    ChainThrottled,
    Commitment,
    CommitmentTooLong,
    NotRegistered,
    RateLimited,
)
from validator.chain.sim import SIM_NETWORK


class Refused(KlhillError):
    """A definite reason not to commit; nothing was written."""


@dataclass(frozen=True)
class CommitOptions:
    """What ``miner.py commit`` was asked to do, once the revision is resolved."""

    network: str
    model_repo: str
    dry_run: bool = False  # run every check and show the commitment; write nothing
    yes: bool = False  # do not ask for confirmation
    wait: float = 120.0  # seconds to wait for the commitment to read back
    poll_interval: float = 3.0


def outcome(exc: Exception, repo: str) -> tuple[ExitCode, str] | None:
    """The one mapping from an error of the commit flow to its exit status and message (None: not ours).

    Definite answers (the model or the chain said no) are ``REFUSED``; anything that leaves the
    question open (a usage error, a locked hotkey, an outage) is ``NO_VERDICT``. Nothing was
    written in any of these cases: the flow only raises before its one write.
    """
    if isinstance(exc, Refused):
        return ExitCode.REFUSED, f"REFUSED: {exc}"
    if isinstance(exc, DefiniteStoreError):
        return ExitCode.REFUSED, f"REFUSED: {repo} is not available: {exc}"
    if isinstance(exc, KeyfileError):  # wrong password or a corrupt keyfile; the message names neither key nor password
        return (
            ExitCode.NO_VERDICT,
            f"REFUSED: cannot unlock the hotkey ({exc}); check the password, nothing was written.",
        )
    if isinstance(exc, TransientError):
        return ExitCode.NO_VERDICT, f"TRY AGAIN LATER: store or chain unavailable, nothing was written: {exc}"
    if isinstance(exc, (UsageError, ValueError)):
        return ExitCode.NO_VERDICT, f"REFUSED: {exc}"
    if isinstance(exc, ChainError):
        return ExitCode.REFUSED, f"CHAIN ERROR: {exc}"
    return None


@dataclass(frozen=True)
class Plan:
    """What will be written, and where."""

    network: str
    netuid: int
    hotkey: str
    repo: str
    revision: str
    text: str

    def describe(self) -> list[str]:
        return [
            f"network:    {self.network} (netuid {self.netuid})",
            f"hotkey:     {self.hotkey}",
            f"model:      {self.repo}@{self.revision}",
            f"commitment: {self.text} ({len(self.text.encode())} bytes)",
            "One commitment per hotkey: committing again later would replace this one and withdraw it "
            "(it would lose its place in the queue and any crown).",
        ]


def commitment_text(repo: str, revision: str) -> str:
    """The exact text to write; a too-long or malformed id is refused before anything else happens."""
    try:
        return format_commitment(repo, revision)
    except CommitmentError as exc:
        # only the size limit is cured by a shorter repo id; a bad id or revision is fixed in place
        hint = "use a shorter repo id" if validate_ids(repo, revision) is None else "fix the repo id or revision"
        raise Refused(f"Cannot commit {repo}@{revision}: {exc}; {hint}.") from exc


def admit(store: ModelStore, repo: str, revision: str, teacher: TeacherSpec, rules: ContestRules) -> Admitted:
    """The validator's own admission check; an inadmissible model is refused with the reason."""
    rules = rules.model_copy(update={"vocab_size": teacher.vocab_size})
    try:
        verdict = check_model(store, repo, revision, rules, teacher)
    except DefiniteStoreError as exc:
        raise Refused(f"{repo}@{revision} is not available: {exc}") from exc
    if not isinstance(verdict, Admitted):
        raise Refused(
            f"{repo}@{revision} is not admissible ({verdict.reason}, check '{verdict.check}'): "
            f"{verdict.detail}. Run `miner.py check` for a hint; nothing was committed."
        )
    return verdict


def preflight(chain: Chain, hotkey: str, text: str) -> Commitment | None:
    """Refuse an unregistered hotkey or one holding another commitment (read-only).

    Returns the hotkey's commitment when it is already exactly ``text`` (an earlier run landed).
    """
    if not chain.is_registered(hotkey):
        raise Refused(
            f"Hotkey {hotkey} is not registered on netuid {chain.netuid}; register it first "
            f"(btcli subnets register --netuid {chain.netuid})."
        )
    existing = chain.commitments().get(hotkey)
    if existing is not None and existing.text != text:
        raise Refused(already_committed(existing, chain.netuid))
    return existing


def already_committed(existing: Commitment, netuid: int) -> str:
    return (
        f"Hotkey {existing.hotkey} already committed on netuid {netuid} at block {existing.block} "
        f"({existing.text}). A new commitment would replace it and withdraw that submission (its place in "
        "the queue and any crown); to enter another model, register a new hotkey and commit from it."
    )


def confirmed(yes: bool, isatty: Callable[[], bool], ask: Callable[[str], str]) -> bool:
    """--yes, or an explicit 'y' on a terminal. Without a terminal and without --yes: refuse, never hang."""
    if yes:
        return True
    if not isatty():
        raise Refused("No terminal to confirm on; re-run with --yes to commit non-interactively.")
    return ask("Write this commitment? [y/N] ").strip().lower() in ("y", "yes")


def wait_for(
    chain: Chain, plan: Plan, timeout_s: float, interval_s: float, sleep: Callable[[float], None] = time.sleep
) -> Commitment | None:
    """Poll ``commitments()`` until the hotkey's entry shows our text; None after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        wait = interval_s
        try:
            seen = chain.commitments().get(plan.hotkey)
        except TransientError as exc:
            seen = None  # a read may fail while the write is fine: keep polling until the deadline
            if isinstance(exc, ChainThrottled) and exc.retry_after_s:
                wait = max(wait, exc.retry_after_s)  # the endpoint asked for a pause: give it one
        if seen is not None:
            if seen.text != plan.text:
                raise Refused(f"The chain shows a different commitment for {plan.hotkey}: {seen.text!r}.")
            return seen
        if time.monotonic() >= deadline:
            return None
        sleep(min(wait, max(0.0, deadline - time.monotonic())))


def write(chain: Chain, plan: Plan) -> str | None:
    """One write, no retry; chain refusals become one sentence each.

    Returns None when the chain answered, else why the answer was lost (the write may still have
    landed: the caller reads the chain back instead of guessing).
    """
    try:
        chain.commit(plan.text)
    except AlreadyCommitted as exc:
        raise Refused(f"{exc} Use a new hotkey to enter another model.") from exc
    except (NotRegistered, CommitmentTooLong, RateLimited) as exc:
        raise Refused(str(exc)) from exc
    except TransientError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run_commit(
    options: CommitOptions,
    *,
    store: ModelStore,
    teacher: TeacherSpec,
    chain: Chain,
    hotkey: str,
    revision: str,
    rules: ContestRules = DEFAULT_RULES,
    out: Callable[[str], Any] = print,
    isatty: Callable[[], bool] = lambda: sys.stdin.isatty(),
    ask: Callable[[str], str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """The whole flow for one resolved revision; returns the exit status."""
    try:
        text = commitment_text(options.model_repo, revision)
        plan = Plan(options.network, chain.netuid, hotkey, options.model_repo, revision, text)
        verdict = admit(store, options.model_repo, revision, teacher, rules)
        out(f"admissible: {verdict.params:,} parameters, metadata hash {verdict.metadata_hash}")
        existing = preflight(chain, hotkey, text)
        if existing is not None:
            out(
                f"COMMITTED {plan.repo}@{plan.revision} at block {existing.block} (hotkey {hotkey}, netuid "
                f"{chain.netuid}): the chain already holds exactly this commitment; nothing was written."
            )
            return ExitCode.OK
        for line in plan.describe():
            out(line)
        if options.dry_run:
            out("dry run: nothing was written.")
            return ExitCode.OK
        if not confirmed(options.yes, isatty, ask or input):
            out("not confirmed: nothing was written.")
            return ExitCode.REFUSED
        lost = write(chain, plan)
        if lost is not None:
            out(f"the chain did not answer the write ({lost}); reading it back for {options.wait:.0f}s")
        seen = wait_for(chain, plan, options.wait, options.poll_interval, sleep)
    except Exception as exc:
        mapped = outcome(exc, options.model_repo)
        if mapped is None:
            raise
        out(mapped[1])
        return mapped[0]
    if seen is None:
        out(
            f"The commitment was submitted but is not readable after {options.wait:.0f}s; it may still land. Do not "
            "commit anything else: re-run this same command later, which reports the commitment once the chain "
            "shows it (and writes nothing twice)."
        )
        return ExitCode.UNCONFIRMED
    note = " (the answer to the write was lost; the chain shows it)" if lost is not None else ""
    out(f"COMMITTED {plan.repo}@{plan.revision} at block {seen.block} (hotkey {hotkey}, netuid {chain.netuid}){note}.")
    return ExitCode.OK


def open_wallet(name: str | None, hotkey: str | None, path: str | None) -> Any:
    """The signing wallet (names fall back to ``BT_WALLET*``); a missing hotkey file is a usage error."""
    from validator.chain.wallets import load_wallet

    try:
        return load_wallet(name, hotkey, path)
    except ChainError as exc:
        raise UsageError(str(exc)) from exc


def open_chain(network: str, netuid: int, wallet: Any, sim_db: Any) -> tuple[Chain, str]:
    """The chain adapter for ``network`` and the signer's ss58 (reading the hotkey may prompt for its password).

    A chain that cannot even be opened is the caller's setting, not the chain's answer: a ``UsageError``.
    """
    hotkey = str(wallet.hotkey.ss58_address)
    if network == SIM_NETWORK:
        from validator.chain.sim import SimChain

        if sim_db is None:
            raise UsageError("--network sim needs --sim-db PATH (the SimChain file the validator uses).")
        return SimChain(sim_db, netuid, hotkey=hotkey), hotkey
    from validator.chain.subtensor import SubtensorChain

    try:
        return SubtensorChain(network, netuid, wallet), hotkey
    except TransientError:
        raise
    except ChainError as exc:
        raise UsageError(str(exc)) from exc

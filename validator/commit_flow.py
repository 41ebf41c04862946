"""The chain side of ``miner.py commit``: publish a model's one commitment, after every check that can refuse it.

Steps, in order, each able to stop the flow before anything is written:
resolve the revision -> build the commitment text (the one formatter; too long is refused) ->
the validator's admission check -> the hotkey is registered -> it has no commitment yet ->
show exactly what will be written and confirm -> write -> poll until the chain reads it back.

One commitment per hotkey counts forever (the validator keys submissions by hotkey and commit
block), so a second commit is refused here before the chain is asked. Nothing is retried
blindly: a write that timed out may have landed, and re-running this command says so.
Secrets never pass through here: only the hotkey's public ss58 address is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eval.admission import Admitted, TeacherSpec, check_model
from eval.errors import KlhillError, TransientError
from eval.rules import DEFAULT_RULES, ContestRules
from eval.stores import DefiniteStoreError, ModelStore
from validator.chain import (
    AlreadyCommitted,
    Chain,
    ChainError,
    Commitment,
    CommitmentTooLong,
    NotRegistered,
    RateLimited,
)
from validator.commitments import CommitmentError, format_commitment, validate_ids

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNCONFIRMED = 0, 1, 2, 3
SIM_NETWORK = "sim"


class Refused(KlhillError):
    """A definite reason not to commit; nothing was written."""


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
            "This is permanent: one commitment per hotkey counts; changing models needs a new hotkey.",
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
        raise Refused(f"{repo}@{revision} is not admissible ({verdict.reason}, check '{verdict.check}'): "
                      f"{verdict.detail}. Run `miner.py check` for a hint; nothing was committed.")  # fmt: skip
    return verdict


def preflight(chain: Chain, hotkey: str) -> None:
    """Refuse an unregistered hotkey or one that already committed (read-only)."""
    if not chain.is_registered(hotkey):
        raise Refused(f"Hotkey {hotkey} is not registered on netuid {chain.netuid}; register it first "
                      f"(btcli subnets register --netuid {chain.netuid}).")  # fmt: skip
    existing = chain.commitments().get(hotkey)
    if existing is not None:
        raise Refused(already_committed(existing, chain.netuid))


def already_committed(existing: Commitment, netuid: int) -> str:
    return (f"Hotkey {existing.hotkey} already committed on netuid {netuid} at block {existing.block} "
            f"({existing.text}). One commitment per hotkey is permanent; to change models, register a new "
            "hotkey and commit from it.")  # fmt: skip


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
        try:
            seen = chain.commitments().get(plan.hotkey)
        except TransientError:
            seen = None  # a read may fail while the write is fine: keep polling until the deadline
        if seen is not None:
            if seen.text != plan.text:
                raise Refused(f"The chain shows a different commitment for {plan.hotkey}: {seen.text!r}.")
            return seen
        if time.monotonic() >= deadline:
            return None
        sleep(interval_s)


def write(chain: Chain, plan: Plan) -> None:
    """One write, no retry; chain refusals become one sentence each."""
    try:
        chain.commit(plan.text)
    except AlreadyCommitted as exc:
        raise Refused(f"{exc} One commitment per hotkey is permanent; use a new hotkey to change models.") from exc
    except (NotRegistered, CommitmentTooLong, RateLimited) as exc:
        raise Refused(str(exc)) from exc
    except TransientError as exc:
        raise TransientError(f"the chain did not answer the write ({exc}); it may still land: re-run this "
                             "command later, which reports an existing commitment instead of writing twice") from exc


def run_commit(
    args: argparse.Namespace,
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
        text = commitment_text(args.model_repo, revision)
        plan = Plan(args.network, chain.netuid, hotkey, args.model_repo, revision, text)
        verdict = admit(store, args.model_repo, revision, teacher, rules)
        out(f"admissible: {verdict.params:,} parameters, metadata hash {verdict.metadata_hash}")
        preflight(chain, hotkey)
        for line in plan.describe():
            out(line)
        if args.dry_run:
            out("dry run: nothing was written.")
            return EXIT_OK
        if not confirmed(args.yes, isatty, ask or input):
            out("not confirmed: nothing was written.")
            return EXIT_REFUSED
        write(chain, plan)
        seen = wait_for(chain, plan, args.wait, args.poll_interval, sleep)
    except Refused as exc:
        out(f"REFUSED: {exc}")
        return EXIT_REFUSED
    except TransientError as exc:
        out(f"TRY AGAIN LATER: {exc}")
        return EXIT_USAGE
    except ChainError as exc:
        out(f"CHAIN ERROR: {exc}")
        return EXIT_REFUSED
    if seen is None:
        out(f"The commitment was submitted but is not readable after {args.wait:.0f}s. Do not commit again: "
            "check later with `miner.py commit --dry-run` (it reports the existing commitment).")  # fmt: skip
        return EXIT_UNCONFIRMED
    out(f"COMMITTED {plan.repo}@{plan.revision} at block {seen.block} (hotkey {hotkey}, netuid {chain.netuid}).")
    return EXIT_OK


def open_chain(network: str, netuid: int, wallet: Any, sim_db: Any) -> tuple[Chain, str]:
    """The chain adapter for ``network`` and the signer's ss58 (reading the hotkey may prompt for its password)."""
    hotkey = str(wallet.hotkey.ss58_address)
    if network == SIM_NETWORK:
        from validator.simchain import SimChain

        if sim_db is None:
            raise ChainError("--network sim needs --sim-db PATH (the SimChain file the validator uses).")
        return SimChain(sim_db, netuid, hotkey=hotkey), hotkey
    from validator.subtensor_chain import SubtensorChain

    return SubtensorChain(network, netuid, wallet), hotkey

"""The embedded contest: a whole subnet on this machine, with real processes.

    python -m scripts.demo [--once] [--state state/demo] [--api-port 8080]

Builds (or reuses) the cast of models, publishes it into a local hub, creates
wallets, starts a SimChain, registers everyone, starts one pod service per
validator on loopback, has each miner commit through ``miner.py commit``, and
once the slot the commitments entered has begun runs every validator (two by
default, ``--validators N``) with ``python -m validator run --once``, one block
after the other. It serves the first validator's store through the API +
dashboard and prints the leaderboard read back from the API and each
validator's king per slot. Each function does one step so the end-to-end tests
can drive a reduced cast with the same code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from scripts.demo_cast import NETUID, ROOT, Recipe, build_cast, publish_dir
from scripts.demo_report import agreement_table, api_get, check_outcomes, leaderboard
from scripts.pod_fixtures import pod_args

DEMO_SEED = b"klhill-demo"  # fixed hash-chain seed: the block hashes (round seeds) are the same on every run
TEACHER = "demo/teacher"
# The shared schedule, short enough for a demo: a slot every 10 blocks, commitments enter 2 blocks later.
DEMO_SCHEDULE: dict[str, Any] = {"round_interval_blocks": 10, "commit_lag_blocks": 2}
DEMO_RULES: dict[str, Any] = {
    "teacher_repo": TEACHER,
    "vocab_size": 512,
    "prompts_per_round": 12,
    "max_new_tokens": 16,
    "max_prompt_tokens": 64,
    "max_kl": 20.0,
    "epsilon": 0.1,
    "prompt_min_chars": 40,
    "prompt_max_chars": 400,
    "early_stop_min_prompts": 6,
    "max_challengers_per_round": 8,
    "max_queued_per_coldkey": 8,
    "onpolicy_prompts": 12,
    "onpolicy_new_tokens": 16,
}


@dataclass(frozen=True)
class Entry:
    """One miner of the cast: which built model it commits, under which repo, in which epoch, and how."""

    name: str
    model: str
    repo: str
    epoch: int
    via_chain: bool = False  # inadmissible: written straight to the chain, since miner.py refuses it
    expect: str = ""
    # what check_outcomes verifies: king | dethroned | loses | marginal | guarded | COPY:<check> | <DQ reason>
    outcome: str = ""
    of: str = "strong"  # the cast member a copy copies, a loser loses to, a marginal challenger nearly beats


# name, model, repo, epoch, outcome, expectation; "invalid" is written to the chain directly (``via_chain``)
CAST: tuple[Entry, ...] = tuple(
    Entry(name, model, repo, epoch, via_chain=name == "invalid", expect=expect, outcome=outcome)
    for name, model, repo, epoch, outcome, expect in (
        ("strong", "strong", "alice/strong", 1, "dethroned", "king after epoch 1, dethroned in epoch 2"),
        ("weak", "weak", "bob/weak", 1, "loses", "evaluated, loses to strong"),
        ("copy", "strong", "carol/strong-copy", 1, "COPY:metadata_hash", "COPY (metadata hash) of strong"),
        ("resharded", "resharded", "dave/resharded", 1, "COPY:content_hash", "COPY (content hash) of strong"),
        ("perturbed", "perturbed", "erin/perturbed", 1, "FUNCTIONAL_COPY", "FUNCTIONAL_COPY of strong"),
        ("invalid", "invalid", "frank/with-code", 1, "INVALID", "INVALID (ships a .py file)"),
        ("better", "better", "grace/better", 2, "king", "dethrones strong"),
        ("marginal", "marginal", "heidi/marginal", 2, "marginal", "better by less than epsilon: no dethrone"),
        ("looper", "looper", "ivan/looper", 2, "guarded", "beats strong on KL, stopped by the on-policy guard (loops)"),
    )
)


@dataclass
class Demo:
    """Paths and live handles of one demo run."""

    state: Path
    recipe: Recipe
    cast: tuple[Entry, ...] = CAST
    validators: int = 2
    overrides: dict[str, Any] = field(default_factory=dict)  # rules on top of the recipe's (they build no model)
    log: Callable[[str], None] = print
    cache: Path | None = None  # where built models live (default: <state>/cast)
    dirs: dict[str, Path] = field(default_factory=dict)
    revs: dict[str, str] = field(default_factory=dict)
    wallets: dict[str, Any] = field(default_factory=dict)
    hotkeys: dict[str, str] = field(default_factory=dict)
    sim: Any = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pod_url: str = ""  # the first validator's pod
    pod_urls: dict[str, str] = field(default_factory=dict)
    api_url: str = ""

    hub = property(lambda self: self.state / "hub")
    sim_db = property(lambda self: self.state / "simchain.db")
    db = property(lambda self: self.state / "validator.db")  # the first validator's store: the API serves it
    wallet_path = property(lambda self: self.state / "wallets")
    rules_path = property(lambda self: self.state / "rules.json")

    @property
    def validator_names(self) -> list[str]:
        """``validator``, ``validator-2``, ...: one wallet, store and pod each."""
        return ["validator", *(f"validator-{i}" for i in range(2, self.validators + 1))]

    def db_of(self, name: str) -> Path:
        return self.db if name == "validator" else self.state / f"{name}.db"

    @property
    def rules(self) -> dict[str, Any]:
        """The contest's rules: the recipe's (which name the built cast) over the demo's schedule, then overrides."""
        return {**DEMO_SCHEDULE, **self.recipe.rules, **self.overrides}


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BT_", "KLHILL_"))}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def free_port(preferred: int = 0) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reset(d: Demo) -> None:
    """A fresh chain, store, hub and pod scratch; the built cast and the wallets are kept."""
    for path in (d.sim_db, *d.state.glob("validator*.db")):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    for sub in ("hub", "pod", "logs", *(f"pod-{n}" for n in d.validator_names)):
        shutil.rmtree(d.state / sub, ignore_errors=True)
    (d.state / "logs").mkdir(parents=True)


def build(d: Demo, names: Sequence[str] | None = None) -> None:
    cache = d.cache or d.state / "cast"
    d.log(f"== building the cast under {cache} (recipe {d.recipe.digest()}; cached after the first run)")
    d.dirs = build_cast(d.recipe, cache, d.log, names if names is not None else sorted({e.model for e in d.cast}))


def publish(d: Demo) -> None:
    from eval.model_store.local import LocalHub
    from eval.rules import ContestRules

    hub = LocalHub(d.hub)
    d.revs[TEACHER] = publish_dir(hub, TEACHER, d.dirs["teacher"])
    for e in d.cast:
        d.revs[e.repo] = publish_dir(hub, e.repo, d.dirs[e.model])
    d.rules_path.write_text(ContestRules.model_validate(d.rules).to_json())
    d.log(f"== published teacher + {len(d.cast)} models into the local hub {d.hub}")


def wallets(d: Demo) -> None:
    """Real bittensor hotkeys (unencrypted, coldkey public only), reused across runs."""
    import bittensor as bt

    from validator.chain.wallets import create_test_wallet

    for name in [*d.validator_names, *(e.name for e in d.cast)]:
        w = bt.Wallet(name=name, hotkey="default", path=str(d.wallet_path))
        if not w.hotkey_file.exists_on_device() or not w.coldkeypub_file.exists_on_device():
            w = create_test_wallet(d.wallet_path, name=name)
        d.wallets[name] = w
        d.hotkeys[name] = str(w.hotkey.ss58_address)
    d.log(f"== {len(d.wallets)} wallets in {d.wallet_path}")


def chain(d: Demo) -> None:
    """SimChain with blocks moved only by the demo (huge block time), so commit order is exact."""
    from validator.chain.sim import SimChain

    d.sim = SimChain(
        d.sim_db, NETUID, block_time=86400.0, hotkey=d.hotkeys["validator"], weights_rate_limit=1, seed=DEMO_SEED
    )
    for name in d.validator_names:
        cold = str(d.wallets[name].coldkeypub.ss58_address)
        d.sim.register(d.hotkeys[name], cold, stake=1000.0, validator_permit=True)
    for e in d.cast:
        d.sim.register(d.hotkeys[e.name], str(d.wallets[e.name].coldkeypub.ss58_address))
    d.sim.advance(10)
    d.log(
        f"== SimChain at {d.sim_db}: {d.validators} validator(s) (permit, equal stake) + {len(d.cast)} miners,"
        f" block {d.sim.head().number}"
    )


def _spawn(d: Demo, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    out = open(d.state / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT)


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}; see its log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f}s")


def start_pod(d: Demo, port: int = 0, validator: str = "validator") -> None:
    """The pod service of one validator (process ``pod`` for the first, ``pod-<name>`` for the others)."""
    port = port or free_port()
    proc = "pod" if validator == "validator" else f"pod-{validator}"
    workdir = d.state / ("pod" if validator == "validator" else f"pod-{validator}")
    d.procs[proc] = _spawn(d, proc, pod_args(port, d.hotkeys[validator], d.hub, workdir))
    d.pod_urls[validator] = url = f"http://127.0.0.1:{port}"
    if validator == "validator":
        d.pod_url = url
    _wait_http(f"{url}/health", d.procs[proc], "the pod service")
    d.log(f"== pod service on {url} (only {validator}'s hotkey is obeyed; jobs are signed)")


def start_pods(d: Demo) -> None:
    for name in d.validator_names:
        start_pod(d, validator=name)


def start_api(d: Demo, port: int = 0) -> None:
    port = free_port(port)
    d.procs["api"] = _spawn(d, "api", ["-m", "api", "--db", str(d.db), "--host", "127.0.0.1", "--port", str(port)])
    d.api_url = f"http://127.0.0.1:{port}"
    _wait_http(f"{d.api_url}/api/health", d.procs["api"], "the API")
    d.log(f"== API on {d.api_url}  dashboard: {d.api_url}/dashboard")


def stop(d: Demo, name: str, sig: int = signal.SIGTERM) -> None:
    proc = d.procs.pop(name, None)
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def miner_commit(d: Demo, e: Entry) -> None:
    """Commit through ``miner.py commit`` (admission check first), or straight to the chain for the inadmissible."""
    rev = d.revs[e.repo]
    if e.via_chain:
        from validator.chain.commitments import format_commitment
        from validator.chain.sim import SimChain

        c = SimChain(d.sim_db, NETUID, hotkey=d.hotkeys[e.name])
        try:
            block = c.commit(format_commitment(e.repo, rev))
        finally:
            c.close()
        d.log(f"   {e.name:<10} {e.repo}@{rev[:8]} written to the chain at block {block} (miner.py refuses it)")
    else:
        argv = ["miner.py", "commit", "--yes"] + flags(
            network="sim",
            sim_db=d.sim_db,
            netuid=NETUID,
            wallet_name=e.name,
            hotkey_name="default",
            wallet_path=d.wallet_path,
            model_repo=e.repo,
            revision=rev,
            hub_dir=d.hub,
            teacher=f"{TEACHER}@{d.revs[TEACHER]}",
            poll_interval=0.2,
        )
        out = subprocess.run(
            [sys.executable, *argv], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300
        )
        if out.returncode != 0:
            raise RuntimeError(f"miner.py commit for {e.name} failed ({out.returncode}): {out.stdout}{out.stderr}")
        d.log(f"   {e.name:<10} {e.repo}@{rev[:8]} committed with miner.py commit")
    d.sim.advance(1)  # one commitment per block: ownership is decided by commit order


def flags(**values: object) -> list[str]:
    """Command-line pairs from keywords: ``sim_db=path`` -> ``--sim-db path``."""
    return [arg for name, value in values.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


def validator_argv(d: Demo, *extra: str, name: str = "validator", local_pod: bool = False) -> list[str]:
    """``python -m validator run`` for validator ``name``: its pod service, or ``local_pod`` (in process)."""
    pod = ["--local-pod", "--workdir", str(d.state / f"local-pod-{name}")] if local_pod else ["--pod", d.pod_urls[name]]
    return ["-m", "validator", "run", *extra, *pod] + flags(
        network="sim",
        sim_db=d.sim_db,
        netuid=NETUID,
        wallet_name=name,
        hotkey_name="default",
        wallet_path=d.wallet_path,
        db=d.db_of(name),
        hub_dir=d.hub,
        corpus="builtin",
        rules=d.rules_path,
        epoch_blocks=1,
        poll_seconds=0.5,
    )


def run_epoch(d: Demo, timeout: float = 600.0, name: str = "validator") -> None:
    """One ``python -m validator run --once`` of validator ``name``; its log lines are echoed as progress."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, *validator_argv(d, "--once", name=name)],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    d.procs["epoch"] = proc  # type: ignore[assignment]  # stopped by the caller's cleanup if interrupted
    assert proc.stdout is not None
    with open(d.state / "logs" / f"{name}.log", "a") as logf:
        for line in proc.stdout:
            logf.write(line)
            if " validator" in line or "round" in line or "weights" in line or "slot" in line:
                d.log(f"   {name} | " + line.rstrip().split(": ", 1)[-1][:140])
    rc = proc.wait(timeout)
    d.procs.pop("epoch", None)
    if rc != 0:
        raise RuntimeError(f"{name} epoch failed with status {rc}; see {d.state / 'logs' / f'{name}.log'}")
    d.log(f"   {name} done in {time.monotonic() - t0:.0f}s")


def to_next_slot(d: Demo) -> int:
    """Advance the chain until the slot the latest commitment entered has begun and its first block is final."""
    from eval.rules import ContestRules
    from validator.schedule import entry_slot, slot_start

    rules = ContestRules.model_validate(d.rules)
    head = d.sim.head().number
    slot = entry_slot(head - 1, rules)  # the newest commitment landed at head - 1 (each commit moves one block)
    d.sim.advance(max(0, slot_start(slot, rules) + 1 - head))  # SimChain: the block before the head is final
    return slot


def contest(d: Demo) -> None:
    """Commit the cast epoch by epoch; once their slot begins, run every validator, one block after the other."""
    for epoch in sorted({e.epoch for e in d.cast}):
        d.log(f"== epoch {epoch}: commits")
        for e in (e for e in d.cast if e.epoch == epoch):
            miner_commit(d, e)
        slot = to_next_slot(d)
        d.log(f"== slot {slot} begins at block {d.sim.head().number - 1}: each validator syncs, admits, judges it")
        for name in d.validator_names:
            run_epoch(d, name=name)
            d.sim.advance(1)  # the next validator's head is one block later: the same slot, the same round


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="klhill embedded contest demo")
    p.add_argument("--once", action="store_true", help="exit after printing the leaderboard")
    p.add_argument("--state", type=Path, default=ROOT / "state" / "demo")
    p.add_argument("--api-port", type=int, default=8080, help="preferred API port (a free one if taken)")
    p.add_argument("--validators", type=int, default=2, help="how many validators judge the contest (default 2)")
    return p.parse_args(argv)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {msg}", flush=True)

    # Ctrl-C and SIGTERM both unwind through ``finally`` so the pod, API and any validator epoch are stopped
    # (SIGINT is set explicitly: a shell starts background jobs with it ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    if args.validators < 1:
        raise SystemExit("--validators must be at least 1")
    d = Demo(args.state, Recipe(rules=DEMO_RULES), validators=args.validators, log=log)
    d.state.mkdir(parents=True, exist_ok=True)
    failed, checked = False, False
    try:
        build(d)
        reset(d)
        publish(d)
        wallets(d)
        chain(d)
        start_pods(d)
        contest(d)
        start_api(d, args.api_port)
        scores, dqs = api_get(d, "/api/scores"), api_get(d, "/api/disqualifications")
        print(leaderboard(d, scores, dqs), flush=True)
        print(agreement_table(d), flush=True)
        n_failed, report = check_outcomes(d, scores, dqs)
        failed, checked = n_failed > 0, True
        print("\n".join(report), flush=True)
        log(f"done in {time.monotonic() - start:.0f}s; store at {d.db}")
        if not args.once:
            log(f"serving the API + dashboard at {d.api_url}/dashboard - Ctrl-C to stop")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt as exc:
        log(f"{exc or 'SIGINT'}: stopping the pods, API and validators")
    finally:
        for name in list(d.procs):
            stop(d, name)
        if d.sim is not None:
            d.sim.close()
    return 1 if failed else 0 if checked else 130  # interrupted before the outcomes were checked


if __name__ == "__main__":
    raise SystemExit(main())

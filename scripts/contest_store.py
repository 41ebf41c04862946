"""Build a realistic validator store with the real validator code (for the API benchmark and the API tests).

Nothing here writes rows by hand: submissions come from SimChain commitments through
``contest.new_submissions``, placed in the shared schedule by ``schedule.assign_slots``, each slot's
round is planned with ``contest.plan_slot``, results are
constructed ``EvalResult``s interpreted by ``verdicts.interpret_result`` and recorded with
the ``Store`` write methods, metagraph snapshots are SimChain neurons.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from eval.rules import ContestRules
from eval.schemas import EvalResult, ModelRef, ModelResult, OnPolicyPrompt, SubmissionId, TeacherInfo
from scripts.pod_fixtures import free_port, trim_onpolicy
from validator.admit import record_attempt
from validator.chain.sim import SimChain
from validator.contest import Candidate, commitment_disqualifications, new_submissions, plan_slot
from validator.rounds import record_outcome
from validator.schedule import Entry, assign_slots, slot_start
from validator.store.database import Store
from validator.verdicts import interpret_result

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@dataclass
class BuiltStore:
    db: Path
    chain: SimChain
    rules: ContestRules
    hotkeys: list[str]
    validator: str
    done_rounds: list[int]
    failed_rounds: list[int]
    live_round: int | None


class Clock:
    """A settable clock shared by the store, so timestamps follow the blocks."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def hotkey(rng: random.Random) -> str:
    return "5" + "".join(rng.choice(B58) for _ in range(47))


def _result(job_id: str, block_hash: str, rules: ContestRules, models: list[ModelResult]) -> EvalResult:
    teacher = TeacherInfo(repo=rules.teacher_repo, continuation_tokens=[64] * rules.prompts_per_round)
    return EvalResult(job_id=job_id, block_hash=block_hash, teacher=teacher, models=models, device="cpu")


def _model_result(
    c: Candidate,
    quality: dict[SubmissionId, float],
    kind: dict[SubmissionId, str],
    rules: ContestRules,
    rng: random.Random,
    hashes: dict[SubmissionId, str],
) -> ModelResult:
    ref = ModelRef(
        repo=c.repo, revision=c.revision, submission=SubmissionId(hotkey=c.hotkey, commit_block=c.commit_block)
    )
    if kind[c.key] == "error":
        return ModelResult(ref=ref, status="model_error", error="model failed to load: unsupported tensor layout")
    base = quality[c.key]
    kls = [max(0.0, base * (1.0 + rng.gauss(0.0, 0.04))) for _ in range(rules.prompts_per_round)]
    fp = [round(base, 3) + 0.001 * i for i in range(4)]
    if kind[c.key] != "copy":
        fp = [x + 0.5 * (hash(c.hotkey) % 97) for x in fp]
    return ModelResult(
        ref=ref,
        status="ok",
        prompt_kl=kls,
        prompt_tokens=[64] * len(kls),
        content_hash=hashes[c.key],
        fingerprint=fp,
        onpolicy=_own_text(base, kind[c.key] == "loops", rules.guarded_prompts(len(kls))),
    )


def _own_text(base: float, loops: bool, n: int) -> list[OnPolicyPrompt]:
    """The on-policy guard's values (no draws from the store's RNG, so the contest itself is unchanged)."""
    if loops:
        return [
            OnPolicyPrompt(
                tokens=128,
                teacher_nll=1.9 + 0.05 * (i % 3),
                reverse_kl=0.4,
                repetition=0.9,
                text="the same sentence again. " * 20,
            )
            for i in range(n)
        ]
    return [
        OnPolicyPrompt(
            tokens=128,
            teacher_nll=0.6 + 0.5 * base + 0.02 * (i % 4),
            reverse_kl=0.5 * base,
            repetition=0.02 * (i % 3),
            text=f"a continuation of prompt {i} in its own words",
        )
        for i in range(n)
    ]


def build_store(
    db: Path,
    chain_path: Path,
    *,
    n_miners: int = 12,
    n_rounds: int | None = None,
    prompts: int = 8,
    max_challengers: int = 2,
    seed: int = 0,
    end_time: float | None = None,
    live_round: bool = True,
    progress: Callable[[int], None] | None = None,
) -> BuiltStore:
    """A store after a contest on a fresh SimChain.

    ``n_rounds`` (default: as many as the planner wants) pads with failed rounds (a pod that
    timed out) between real rounds until the total is reached. With ``live_round`` the last
    round stays dispatched with live progress, as while the pod is scoring.
    """
    rng = random.Random(seed)
    end_time = time.time() if end_time is None else end_time
    rules = ContestRules(prompts_per_round=prompts, early_stop_min_prompts=2, max_challengers_per_round=max_challengers)
    chain = SimChain(chain_path, netuid=7, max_uids=max(300, n_miners + 8), genesis=end_time - 10_000_000)
    clock = Clock(end_time - 1_000_000)
    store = Store.open(db, clock=clock)
    store.set_meta(netuid=7, network="sim")
    validator = hotkey(rng)
    chain.register(validator, "5Validator" + "1" * 38, stake=1000.0, validator_permit=True)
    hotkeys: list[str] = []
    quality: dict[SubmissionId, float] = {}
    kind: dict[SubmissionId, str] = {}
    hashes: dict[SubmissionId, str] = {}
    for i in range(n_miners):
        hk = hotkey(rng)
        hotkeys.append(hk)
        chain.register(hk, f"5Cold{i % max(1, n_miners // 3):04d}" + "1" * 39, stake=float(rng.randint(0, 50)))
        chain.hotkey = hk
        text = (
            "not json"
            if i % 17 == 5
            else json.dumps(
                {"model": f"miner{i}/distil-{i}", "revision": hashlib.sha1(hk.encode()).hexdigest()},
                separators=(",", ":"),
            )
        )
        chain.commit(text)
        chain.advance(3)
    subs = new_submissions(chain.commitments().values(), store.known_keys(), chain.neurons())
    store.add_submissions(subs, commitment_disqualifications(subs))
    for idx, s in enumerate(subs):
        if s.status != "pending":
            continue
        r = rng.random()
        if idx % 23 == 7:
            record_attempt(store, s.key, "rejected", check="params", detail="6.1e9 parameters > 5.25e9")
            continue
        record_attempt(
            store, s.key, "admitted", params=4_000_000_000, metadata_hash=hashlib.sha256(s.hotkey.encode()).hexdigest()
        )
        quality[s.key] = 1.2 * math.exp(-idx / max(8.0, n_miners / 3)) * rng.uniform(0.85, 1.25) + 0.05
        kind[s.key] = "error" if r < 0.05 else "high" if r < 0.1 else "loops" if idx % 11 == 9 else "ok"
        hashes[s.key] = hashlib.sha256(s.key.hotkey.encode()).hexdigest()
        if kind[s.key] == "high":
            quality[s.key] = rules.max_kl * 1.5
        if kind[s.key] == "loops":  # a looper wins on KL (teacher text) and loses on its own: the guard's case
            quality[s.key] *= 0.7
    # one exact copy of an earlier model, re-committed later under another hotkey
    keys = sorted(quality, key=lambda k: (k.commit_block, k.hotkey))
    if len(keys) > 4:
        hashes[keys[-1]] = hashes[keys[1]]
        kind[keys[-1]] = "ok"
    registered = [n.hotkey for n in chain.neurons()]
    entries = store.schedule_entries()
    placed = assign_slots([Entry(e.key, e.coldkey) for e in entries], rules)
    store.assign_slots(placed)
    slots = iter(sorted(set(placed.values())))
    slot = next(slots, None)
    done: list[int] = []
    failed: list[int] = []
    total = 0
    planned_rounds = 0
    while slot is not None:
        king_row = store.current_king()
        cands = store.candidates(registered)
        king = next((c for c in cands if king_row and c.key == king_row.key), None)
        plan = plan_slot(slot, king, cands, rules, crown=king is None)
        if plan.kind == "none":
            slot = next(slots, None)
            continue
        planned_rounds += 1
        start = slot_start(slot, rules)
        chain.advance(max(0, start - chain.head().number))
        chain.advance(2)  # past the slot's first block, so it is final
        clock.now += 300.0
        seed = chain.block_hash(start)
        prompt_shas = [hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in range(prompts)]
        models = [c.key for c in plan.models]
        kingkey = plan.king.key if plan.king else None
        rid = store.create_round(plan.kind, start, seed, prompt_shas, rules, models, kingkey, slot=slot)
        store.mark_dispatched(rid, "http://127.0.0.1:8091", f"job-{rid}")
        total += 1
        if (
            n_rounds is not None
            and total < n_rounds
            and rng.random() < _fail_share(n_rounds, n_miners, max_challengers)
        ):
            clock.now += 120.0
            store.fail_round(rid, "pod timed out after 3600s")
            failed.append(rid)
            continue
        models = [_model_result(c, quality, kind, rules, rng, hashes) for c in plan.models]
        king_ref = f"{plan.king.hotkey}:{plan.king.commit_block}" if plan.king is not None else None
        models = trim_onpolicy(models, king_ref, rules, rules.prompts_per_round)
        result = _result(f"job-{rid}", seed, rules, models)
        out = interpret_result(plan, result, rules, store.known_fingerprints(), store.known_content_hashes())
        clock.now += 600.0
        record_outcome(store, rid, out, result, start)
        done.append(rid)
        _set_weights(chain, store, validator, out.new_king, clock)
        if progress:
            progress(total)
    while n_rounds is not None and total < n_rounds:
        head = chain.advance(25)
        clock.now += 300.0
        rid = store.create_round("challenge", head.number, head.hash, ["0" * 64] * prompts, rules, [], None)
        store.fail_round(rid, "pod unreachable")
        failed.append(rid)
        total += 1
    live: int | None = None
    king_row = store.current_king()
    clock.now = end_time - 30.0
    if live_round and king_row:
        head = chain.advance(5)
        kk = king_row.key
        live = store.create_round("challenge", head.number, head.hash, ["f" * 64] * prompts, rules, [kk], kk)
        store.mark_dispatched(live, "http://127.0.0.1:8091", f"job-{live}")
        store.set_progress(
            {
                "round_id": live,
                "phase": "student",
                "model": king_row.repo,
                "model_index": 1,
                "model_count": 2,
                "prompt": prompts // 2,
                "prompt_count": prompts,
                "eta_s": 95.0,
                "tokens_per_s": 850.0,
            }
        )
    head = chain.head()
    clock.now = end_time
    store.save_metagraph(head.number, [dataclasses.asdict(n) for n in chain.neurons()])
    store.set_meta(last_epoch_block=head.number)  # what the validator loop writes each epoch
    store.close()
    return BuiltStore(db, chain, rules, hotkeys, validator, done, failed, live)


def _fail_share(n_rounds: int, n_miners: int, cap: int) -> float:
    """Share of attempts that fail so that real rounds and failed ones add up to about ``n_rounds``."""
    real = max(1, n_miners // cap + 2)
    return max(0.0, min(0.95, 1.0 - real / n_rounds))


def _set_weights(chain: SimChain, store: Store, validator: str, king: SubmissionId | None, clock: Clock) -> None:
    if king is None:
        return
    uid = next((n.uid for n in chain.neurons() if n.hotkey == king.hotkey), None)
    if uid is None:
        return
    chain.hotkey = validator
    chain.advance(chain.weights_rate_limit())
    receipt = chain.set_weights([uid], [1.0])
    store.record_weights(receipt.block or chain.head().number, [uid], [1.0], receipt.success, receipt.message)


@contextmanager
def serve_api(db: Path, *extra_args: str) -> Iterator[str]:
    """Run ``python -m api`` on ``db`` as a real subprocess on a loopback port; yields its base URL."""
    root = Path(__file__).resolve().parents[1]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "--db", str(db), "--port", str(port), *extra_args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)

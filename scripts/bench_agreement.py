"""How often do honest validators agree? Many slots, several validators, random offsets, restarts, lost disks.

Setup: one SimChain; ``--validators`` validators, each with its own hotkey, stake, permit and SQLite store,
running the real ``validator.loop.Validator`` (sync, schedule, slot walk, consensus, weights) at its own
random phase inside each slot (heads staggered), restarting at random (a new process on the same store)
and now and then losing its disk (an empty store: it must rejoin from the chain's consensus). Miners
commit at random blocks throughout, many of them within a few percent of the king, so a verdict near the
margin turns on the slot's seed.

Two things stand in, so that hundreds of slots run in a minute: the pod is ``SeededPod``, whose per-prompt
KL is a fixed function of (model, prompt text) - so the same seed gives every validator the same numbers,
and another seed other numbers, exactly the property a real pod has - and admission admits every model
(the schedule, not the model checks, is what is measured). Everything else is the production code.

    .venv/bin/python -m scripts.bench_agreement [--slots 60] [--validators 5] [--seed 1] [--json]

Per slot it compares each validator's king after the slot (its own store) once every live validator
has finished it; it prints the share of slots on which all agree, the share of validator-slots that agree
with the majority, the mean Yuma vtrust read from the chain's weights, and how many epochs a rejoining
validator took until its king was the majority's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bittensor.keyfiles import Keypair

from eval.admission import Admitted, TeacherSpec
from eval.model_store.local import LocalHub
from eval.prompts import LocalCorpus
from eval.rules import ContestRules
from eval.schemas import EvalJob, EvalResult, ModelResult, TeacherInfo
from validator.chain.commitments import format_commitment
from validator.chain.sim import SimChain
from validator.consensus import yuma_vtrust
from validator.loop import LoopConfig, Validator
from validator.pod_client import SinglePod
from validator.pod_errors import PodError
from validator.schedule import slot_of
from validator.store.database import Store

R, L = 10, 3
RULES = ContestRules(
    teacher_repo="bench/teacher",
    vocab_size=512,
    prompts_per_round=12,
    max_new_tokens=8,
    prompt_min_chars=40,
    prompt_max_chars=400,
    epsilon=0.07,
    early_stop_min_prompts=12,
    onpolicy_prompts=0,
    round_interval_blocks=R,
    commit_lag_blocks=L,
)


def hotkey(name: str) -> str:
    return str(Keypair.create_from_uri(f"//bench-{name}").ss58_address)


class SeededPod(SinglePod):
    """KL per prompt = the model's base KL x a factor fixed by (model, prompt): the same seed, the same numbers."""

    def __init__(self, base: dict[str, float]) -> None:
        self.base, self.jobs = base, 0

    def health(self) -> dict[str, Any]:
        return {"state": "idle"}

    def status(self, job_id: str) -> Any:
        raise PodError(f"{job_id}: no progress reported")

    def answer(self, job: EvalJob, deadline_s: float) -> EvalResult:
        self.jobs += 1
        models = []
        for m in job.models:
            kl = []
            for p in job.prompts:
                h = hashlib.sha256(f"{m.repo}|{p}".encode()).digest()
                kl.append(self.base[m.repo] * (0.75 + 0.5 * int.from_bytes(h[:4], "big") / 2**32))
            digest = hashlib.sha256(m.repo.encode()).hexdigest()
            fingerprint = [b / 255 for b in bytes.fromhex(digest)[:4]]
            models.append(
                ModelResult(
                    ref=m,
                    status="ok",
                    prompt_kl=kl,
                    prompt_tokens=[8] * len(kl),
                    content_hash=digest,
                    fingerprint=fingerprint,
                )
            )
        teacher = TeacherInfo(repo=RULES.teacher_repo, revision="f" * 40, continuation_tokens=[8] * len(job.prompts))
        return EvalResult(job_id=job.job_id, block_hash=job.block_hash, teacher=teacher, models=models)


def admit_all(store: Any, repo: str, revision: str, rules: ContestRules, teacher: TeacherSpec) -> Admitted:
    return Admitted(params=1_000_000, metadata_hash=hashlib.sha256(f"{repo}@{revision}".encode()).hexdigest(), files=[])


class OwnHeadSeed(SimChain):
    """The control: a chain handle whose "slot seed" is the hash of the validator's own head block instead.

    That is how a validator that seeds from its head behaves; with it the benchmark must see disagreement.
    """

    def final_block_hash(self, number: int) -> str | None:
        return self.block_hash(self.block_number() - 1)


class Node:
    """One validator process: its store path, its phase in the slot, and its current ``Validator``."""

    def __init__(
        self, name: str, root: Path, sim: SimChain, hub: LocalHub, pod: SeededPod, phase: int, own_head: bool
    ) -> None:
        self.name, self.root, self.hub, self.pod, self.phase = name, root, hub, pod, phase
        self.hotkey = hotkey(name)
        self.chain = (OwnHeadSeed if own_head else SimChain)(sim.path, 1, hotkey=self.hotkey)
        self.generation = 0
        self.v: Validator | None = None
        self.rejoined_at: int | None = None
        self.epochs_since_rejoin = 0

    @property
    def db(self) -> Path:
        return self.root / f"{self.name}-{self.generation}.db"

    def start(self) -> None:
        self.v = Validator(
            self.chain,
            Store.open(self.db),
            self.hub,
            self.pod,
            LocalCorpus(None),
            RULES,
            lambda: TeacherSpec(512, {}),
            LoopConfig(epoch_blocks=1, poll_seconds=0.01),
            check=admit_all,
        )

    def restart(self, lose_disk: bool) -> None:
        assert self.v is not None
        self.v.store.close()
        if lose_disk:
            self.generation += 1
        self.start()

    def king_after(self, slot: int) -> str | None:
        assert self.v is not None
        rec = self.v.store.slot_record(slot)
        return None if rec is None or rec.state == "open" else (rec.king_hotkey or "")


def run(slots: int, n_validators: int, seed: int, own_head: bool = False) -> dict[str, Any]:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="klhill-agreement-"))
    sim = SimChain(root / "chain.db", 1, block_time=86400.0, weights_rate_limit=R // 2, seed=b"bench-agreement")
    hub = LocalHub(root / "hub")
    base: dict[str, float] = {}
    nodes: list[Node] = []
    for i in range(n_validators):
        node = Node(f"v{i}", root, sim, hub, SeededPod(base), rng.randrange(1, R), own_head)
        sim.register(node.hotkey, hotkey(f"cold-v{i}"), stake=rng.uniform(500, 2000), validator_permit=True)
        nodes.append(node)
    sim.advance(R)
    for node in nodes:
        node.start()
    king_kl, miners, results = 1.0, 0, []
    rejoin_epochs: list[int] = []
    t0 = time.monotonic()
    end = (slots + 2) * R
    while sim.head().number < end:
        block = sim.head().number
        if rng.random() < 0.15:  # a miner commits: usually near the king, sometimes clearly better
            miners += 1
            repo = f"miner{miners}/student"
            gain = rng.choice([rng.uniform(0.03, 0.11), rng.uniform(0.15, 0.3), rng.uniform(-0.2, 0.0)])
            base[repo] = king_kl * (1 - gain)
            king_kl = min(king_kl, base[repo]) if gain > 0.15 else king_kl
            src = root / "src" / repo.replace("/", "_")
            src.mkdir(parents=True)
            (src / "config.json").write_text(json.dumps({"model": repo}))
            rev = hub.publish(repo, src)
            hk = hotkey(f"miner{miners}")
            sim.register(hk, hotkey(f"cold-miner{miners % 7}"))
            SimChain(sim.path, 1, hotkey=hk).commit(format_commitment(repo, rev))
        for node in nodes:
            if block % R != node.phase:
                continue
            if rng.random() < 0.08:
                lose = rng.random() < 0.3
                node.restart(lose_disk=lose)
                if lose:
                    node.rejoined_at, node.epochs_since_rejoin = block, 0
            assert node.v is not None
            node.v.epoch()
            if node.rejoined_at is not None:
                node.epochs_since_rejoin += 1
        sim.advance(1)
        done = slot_of(sim.head().number, RULES) - 1  # every node has had its turn in this slot
        if done >= 2 and (not results or results[-1]["slot"] < done):
            kings = {n.name: n.king_after(done) for n in nodes}
            seen = [k for k in kings.values() if k is not None]
            majority = Counter(seen).most_common(1)[0][0] if seen else None
            results.append({"slot": done, "kings": kings, "majority": majority})
            for n in nodes:
                if n.rejoined_at is not None and kings[n.name] == majority:
                    rejoin_epochs.append(n.epochs_since_rejoin)
                    n.rejoined_at = None
    wall = time.monotonic() - t0
    judged = [r for r in results if r["majority"] is not None]
    all_agree = sum(len(set(r["kings"].values())) == 1 for r in judged)
    with_majority = sum(k == r["majority"] for r in judged for k in r["kings"].values())
    neurons, rows = sim.neurons(), sim.weight_rows()
    vtrust = [yuma_vtrust(neurons, rows, n.hotkey) for n in nodes]
    jobs = sum(n.pod.jobs for n in nodes)
    assert nodes[0].v is not None
    near = _near_margin(nodes[0].v.store)
    return {
        "slots": len(judged),
        "validators": n_validators,
        "miners": miners,
        "slots_all_agree": all_agree,
        "agreement_rate": all_agree / len(judged) if judged else None,
        "validator_slots_with_majority": with_majority / (len(judged) * n_validators) if judged else None,
        "vtrust": [round(v, 4) if v is not None else None for v in vtrust],
        "restarts_rejoined": len(rejoin_epochs),
        "rejoin_epochs_to_agree": {
            "max": max(rejoin_epochs, default=None),
            "median": statistics.median(rejoin_epochs) if rejoin_epochs else None,
        },
        "rounds_run": jobs,
        "challenges_near_margin": near,
        "wall_s": round(wall, 1),
    }


def _near_margin(store: Store) -> str:
    """Challenges whose paired KL gain over the king was within 2 points of epsilon: the seed decides those."""
    rows = store._db.execute(
        "SELECT r.id, r.king_hotkey, e.hotkey, e.mean_kl FROM rounds r JOIN evaluations e ON e.round_id = r.id"
        " WHERE r.kind = 'challenge' AND r.state = 'done'"
    ).fetchall()
    by_round: dict[int, dict[str, float]] = {}
    kings: dict[int, str] = {}
    for rid, king, hk, kl in rows:
        by_round.setdefault(rid, {})[hk] = kl
        kings[rid] = king
    gains = [1 - kl / r[kings[rid]] for rid, r in by_round.items() for hk, kl in r.items() if hk != kings[rid]]
    near = sum(abs(g - RULES.epsilon) < 0.02 for g in gains)
    return f"{near} of {len(gains)}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slots", type=int, default=60)
    p.add_argument("--validators", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--control-own-head-seed",
        action="store_true",
        help="the control: every validator seeds its rounds from its own head block (agreement must drop)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    out = run(args.slots, args.validators, args.seed, args.control_own_head_seed)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>32}: {v}")
    return 0 if out["agreement_rate"] == 1.0 or args.control_own_head_seed else 1


if __name__ == "__main__":
    sys.exit(main())

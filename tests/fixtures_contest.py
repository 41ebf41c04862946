"""Reusable builders for contest tests: tiny real models in a LocalHub, a SimChain world, a Validator.

The models are built once per test session (``build_model_hub``) and copied per
test, so a test may delete repos without disturbing others.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bittensor.keyfiles import Keypair

from eval.model_store.local import LocalHub
from eval.rules import ContestRules
from validator.pod_client import SinglePod
from validator.pod_errors import PodError

VOCAB = 512
TEACHER = "demo/teacher"
RULES = ContestRules(
    teacher_repo=TEACHER,
    vocab_size=VOCAB,
    prompts_per_round=4,
    max_new_tokens=8,
    early_stop_min_prompts=2,
    max_prompt_tokens=64,
    max_kl=50.0,
    prompt_min_chars=40,
    prompt_max_chars=400,
    round_interval_blocks=1,  # a slot per block, judged as soon as it starts: each test's block is a round
    commit_lag_blocks=0,
)
# name -> seed; "demo/teacher" is the teacher, the rest are students
MODELS = {TEACHER: 0, "alice/m1": 1, "bob/m2": 2, "carol/m3": 3, "dave/m4": 4}


def hotkey(name: str) -> str:
    """A real SS58 address, stable per name."""
    return str(Keypair.create_from_uri(f"//{name}").ss58_address)


def build_model_hub(root: Path) -> tuple[Path, dict[str, str]]:
    """Publish the tiny teacher and students into a LocalHub at ``root/hub``; returns (hub_root, revisions)."""
    from scripts.tiny_models import save_model_dir, tiny_config, tiny_model, train_tokenizer

    tok = train_tokenizer(VOCAB)
    cfg = tiny_config(VOCAB)
    hub = LocalHub(root / "hub")
    revs = {}
    for name, seed in MODELS.items():
        src = save_model_dir(tiny_model(cfg, seed), tok, root / "src" / name.replace("/", "_"))
        revs[name] = hub.publish(name, src)
    return root / "hub", revs


@dataclass
class World:
    """One test's chain, hub and paths. Admin actions go through ``sim``; miners commit with ``commit``."""

    root: Path
    hub_root: Path
    revs: dict[str, str]
    sim_db: Path
    db: Path
    wallet: Any
    rules: ContestRules = RULES
    sim: Any = None
    miners: dict[str, str] = field(default_factory=dict)

    @property
    def hub(self) -> LocalHub:
        return LocalHub(self.hub_root)

    @property
    def validator_hotkey(self) -> str:
        return str(self.wallet.hotkey.ss58_address)

    def register(self, name: str, coldkey: str | None = None) -> int:
        hk = hotkey(name)
        self.miners[name] = hk
        return int(self.sim.register(hk, coldkey or hotkey(f"cold-{name}")))

    def commit(self, name: str, repo: str, revision: str | None = None, *, replace: bool = False) -> int:
        """Commit as miner ``name`` (``replace``: a re-commit, which the chain lets overwrite the first)."""
        from validator.chain.commitments import format_commitment
        from validator.chain.sim import SimChain

        chain = SimChain(self.sim_db, 1, hotkey=self.miners[name])
        try:
            block = chain.commit(format_commitment(repo, revision or self.revs[repo]), replace=replace)
        finally:
            chain.close()
        self.sim.advance(1)
        return block

    def rules_file(self) -> Path:
        path = self.root / "rules.json"
        path.write_text(self.rules.to_json())
        return path

    def cli_args(self, *extra: str) -> list[str]:
        return [
            "run",
            "--network",
            "sim",
            "--sim-db",
            str(self.sim_db),
            "--netuid",
            "1",
            "--db",
            str(self.db),
            "--wallet-name",
            self.wallet.name,
            "--hotkey-name",
            "default",
            "--wallet-path",
            str(self.root / "w"),
            "--hub-dir",
            str(self.hub_root),
            "--corpus",
            "builtin",
            "--rules",
            str(self.rules_file()),
            "--epoch-blocks",
            "1",
            "--poll-seconds",
            "0.2",
            *extra,
        ]


def make_world(tmp: Path, hub_src: Path, revs: dict[str, str], *, rate_limit: int = 5) -> World:
    """A fresh SimChain with the validator registered (with a permit) and a private copy of the hub."""
    from validator.chain.sim import SimChain
    from validator.chain.wallets import create_test_wallet

    hub_root = tmp / "hub"
    shutil.copytree(hub_src, hub_root)
    wallet = create_test_wallet(tmp / "w", name="val")
    sim = SimChain(
        tmp / "chain.db", 1, block_time=3600.0, hotkey=str(wallet.hotkey.ss58_address), weights_rate_limit=rate_limit
    )
    sim.register(str(wallet.hotkey.ss58_address), hotkey("cold-validator"), stake=1000.0, validator_permit=True)
    sim.advance(10)
    return World(tmp, hub_root, revs, tmp / "chain.db", tmp / "validator.db", wallet, sim=sim)


def make_validator(world: World, pod: Any = None, *, db: Path | None = None, chain: Any = None, **config: Any) -> Any:
    """A Validator on the world's SimChain (or ``chain``) with a LocalPod (or ``pod``) and the builtin corpus."""
    from eval.admission import TeacherSpec
    from eval.prompts import LocalCorpus
    from validator.local_pod import LocalPod
    from validator.loop import LoopConfig, Validator
    from validator.store.database import Store

    hub = world.hub
    pod = pod or LocalPod(hub, world.root / "pod", "cpu")
    store = Store.open(db or world.db)
    rev = world.revs[TEACHER]
    cfg = LoopConfig(**{"epoch_blocks": 1, "poll_seconds": 0.05, **config})
    return Validator(
        chain or world.sim,
        store,
        hub,
        pod,
        LocalCorpus(None),
        world.rules,
        lambda: TeacherSpec.from_store(hub, TEACHER, rev),
        cfg,
    )


class FakePod(SinglePod):
    """A counting pod that returns a well-formed result without running models.

    KL per prompt comes from ``kl`` (repo -> value, default 1.0); content hash and
    fingerprint derive from the pinned revision, so two commits of one revision
    look like one model, as on a real pod. ``fail`` (an exception) is raised instead.
    Its answer (after ``mutate``) is checked against the job like any pod's.
    """

    def __init__(self, kl: dict[str, float] | None = None) -> None:
        self.kl = dict(kl or {})
        self.loops: set[str] = set()  # repos whose own continuations loop (the on-policy guard stops them)
        self.fail: BaseException | None = None
        self.calls: list[Any] = []
        self.mutate: Any = None

    def health(self) -> dict[str, Any]:
        return {"state": "idle"}

    def status(self, job_id: str) -> Any:
        raise PodError(f"{job_id}: this pod reports no progress")

    def answer(self, job: Any, deadline_s: float) -> Any:
        import hashlib

        from eval.schemas import EvalResult, ModelResult, OnPolicyPrompt, TeacherInfo

        self.calls.append(job)
        if self.fail is not None:
            raise self.fail
        n = len(job.prompts)
        models = []
        for i, m in enumerate(job.models):
            base = self.kl.get(m.repo, 1.0)
            digest = hashlib.sha256(m.revision.encode()).hexdigest()
            fp = [int(digest[j : j + 2], 16) / 255.0 for j in range(0, 8, 2)]
            kl = [base + 0.001 * ((p * 7 + i) % 5) for p in range(n)]
            loops = m.repo in self.loops  # its own greedy text collapses into repetition
            own = [
                OnPolicyPrompt(
                    tokens=4,
                    teacher_nll=(2.0 if loops else 0.7) + 0.01 * (p % 3),
                    reverse_kl=0.1,
                    repetition=0.9 if loops else 0.0,
                    text="again " * 4 if loops else f"own text {p}",
                )
                for p in range(job.rules.guarded_prompts(n))
            ]
            models.append(
                ModelResult(
                    ref=m,
                    status="ok",
                    prompt_kl=kl,
                    prompt_tokens=[4] * n,
                    content_hash=digest,
                    fingerprint=fp,
                    onpolicy=own,
                )
            )
        from scripts.pod_fixtures import trim_onpolicy

        models = trim_onpolicy(models, job.king.key if job.king else None, job.rules, n)
        teacher = TeacherInfo(repo=job.rules.teacher_repo, revision="f" * 40, continuation_tokens=[4] * n)
        result = EvalResult(job_id=job.job_id, block_hash=job.block_hash, teacher=teacher, models=models)
        return self.mutate(result) if self.mutate else result


def seed(world: World, *pairs: tuple[str, str]) -> None:
    """Register each named miner and commit its repo, in order (so commit blocks follow the order)."""
    for name, repo in pairs:
        world.register(name)
        world.commit(name, repo)

"""A tiny hub, real hotkeys and jobs for the pod benchmarks and the pod tests alike.

Kept in ``scripts`` because benchmarks import it (``scripts/bench_pod.py``, ``scripts/bench_onpolicy.py``,
``scripts/contest_store.py``) and ``scripts`` never imports ``tests``; the tests import it from here too.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import bittensor as bt

from eval.rules import ContestRules
from eval.schemas import EvalJob, ModelRef, ModelResult, SubmissionId
from eval.stats import expected_onpolicy

BLOCK_HASH = "0x" + "ab" * 32
RULES = ContestRules(
    teacher_repo="test/teacher",
    vocab_size=512,
    prompts_per_round=2,
    max_new_tokens=6,
    early_stop_min_prompts=2,
    max_prompt_tokens=64,
)


def pod_args(port: int, allow_hotkey: str, hub: Path, workdir: Path) -> list[str]:
    """Arguments after ``python`` for a local CPU pod serving ``hub`` (the demo, benchmarks and tests alike)."""
    fixed = f"-m validator.pod --host 127.0.0.1 --port {port} --device cpu --min-free-gb 0".split()
    return [*fixed, "--allow-hotkey", allow_hotkey, "--hub", str(hub), "--workdir", str(workdir)]


def make_wallet(root: Path, name: str) -> bt.Wallet:
    """A throwaway wallet with a real sr25519 hotkey (no password) under ``root``."""
    wallet = bt.Wallet(name=name, hotkey="default", path=str(root))
    wallet.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
    return bt.Wallet(name=name, hotkey="default", path=str(root))


def ref(repo: str, revision: str, hotkey_n: int, block: int = 100) -> ModelRef:
    hotkey = "5" + "G" * 46 + f"{hotkey_n:02d}".replace("0", "A")
    return ModelRef(repo=repo, revision=revision, submission=SubmissionId(hotkey=hotkey, commit_block=block))


def make_job(
    job_id: str = "job-1",
    *,
    n_challengers: int = 1,
    prompts: list[str] | None = None,
    rules: ContestRules = RULES,
    king: ModelRef | None = None,
    challengers: list[ModelRef] | None = None,
) -> EvalJob:
    king = king or ref("miner/king", "a" * 40, 1)
    challengers = (
        challengers
        if challengers is not None
        else [ref(f"miner/c{i}", f"{i + 1:x}" * 40, 10 + i) for i in range(n_challengers)]
    )
    return EvalJob(
        job_id=job_id,
        block=123,
        block_hash=BLOCK_HASH,
        rules=rules,
        prompts=prompts or ["The river valley was", "A prime number is"],
        king=king,
        challengers=challengers,
    )


def trim_onpolicy(models: list[ModelResult], king_key: str | None, rules: ContestRules, n: int) -> list[ModelResult]:
    """Keep the guard's values only where a pod measures them: the king and challengers past its KL margin."""
    king = next((m for m in models if m.ref.key == king_key and m.status == "ok"), None)
    king_kl = list(king.prompt_kl) if king is not None else None
    return [
        m
        if expected_onpolicy(m.ref.key == king_key, king_kl, m.prompt_kl, rules, n)
        else m.model_copy(update={"onpolicy": []})
        for m in models
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_hub(root: Path) -> tuple[Any, dict[str, str]]:
    """A LocalHub with a tiny teacher, three tiny students and one with a foreign vocabulary."""
    from eval.model_store.local import LocalHub
    from scripts.tiny_models import save_model_dir, tiny_config, tiny_model, train_tokenizer

    tok = train_tokenizer(512)
    hub = LocalHub(root / "hub")
    cfg = tiny_config(512)
    revs = {}
    for name, seed, config in [
        ("test/teacher", 0, cfg),
        ("miner/king", 1, cfg),
        ("miner/c0", 2, cfg),
        ("miner/c1", 3, cfg),
        ("miner/badvocab", 4, tiny_config(640)),
    ]:
        src = save_model_dir(tiny_model(config, seed), tok, root / "src" / name.replace("/", "_"))
        revs[name] = hub.publish(name, src)
    return hub, revs


def hub_job(revs: dict[str, str], names: list[str], job_id: str, **kw: Any) -> EvalJob:
    king = ref(names[0], revs[names[0]], 1)
    challengers = [ref(n, revs[n], 10 + i) for i, n in enumerate(names[1:])]
    return make_job(job_id, king=king, challengers=challengers, **kw)

"""`miner.py eval` reproduces a validator round's KL for the same block hash (real tiny models, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import miner
from eval.estimate import Pinned, local_job
from eval.estimate_summary import MODEL_HOTKEY
from eval.model_store.linked import LinkedDirs
from eval.model_store.local import LocalHub
from eval.prompts import LocalCorpus, sample_prompts
from eval.rules import ContestRules
from eval.schemas import EvalJob, ModelRef, SubmissionId
from scripts.tiny_models import save_model_dir, tiny_config, tiny_model, train_tokenizer
from validator.local_pod import LocalPod

BLOCK_HASH = "0x" + "5c" * 32
KING_HOTKEY, CHALLENGER_HOTKEY = "5" + "A" * 47, "5" + "B" * 47


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("miner-eval")
    tok = train_tokenizer(vocab_size=512)
    cfg = tiny_config(len(tok))
    dirs = {
        "teacher": save_model_dir(tiny_model(cfg, seed=0), tok, root / "teacher"),
        "king": save_model_dir(tiny_model(cfg, seed=1), tok, root / "king"),
        "challenger": save_model_dir(tiny_model(cfg, seed=2), tok, root / "challenger", max_shard_size="200KB"),
    }
    hub = LocalHub(root / "hub")
    revs = {name: hub.publish(f"{'test' if name == 'teacher' else 'miner'}/{name}", d) for name, d in dirs.items()}
    rules = ContestRules(
        teacher_repo="test/teacher",
        teacher_revision=revs["teacher"],
        vocab_size=512,
        prompts_per_round=3,
        max_new_tokens=6,
        max_prompt_tokens=64,
        early_stop_min_prompts=3,
    )
    rules_path = root / "rules.json"
    rules_path.write_text(rules.to_json())
    # The validator's round: prompts from the block hash and the rules, the king first, run by the pod routine.
    prompts = sample_prompts(BLOCK_HASH, rules, LocalCorpus(None))
    job = EvalJob(
        job_id="round-1",
        block=1234,
        block_hash=BLOCK_HASH,
        rules=rules,
        teacher_revision=revs["teacher"],
        prompts=prompts,
        king=ModelRef(
            repo="miner/king", revision=revs["king"], submission=SubmissionId(hotkey=KING_HOTKEY, commit_block=10)
        ),
        challengers=[
            ModelRef(
                repo="miner/challenger",
                revision=revs["challenger"],
                submission=SubmissionId(hotkey=CHALLENGER_HOTKEY, commit_block=20),
            )
        ],
    )
    result = LocalPod(hub, root / "pod").run(job, 600)
    return {
        "root": root,
        "dirs": dirs,
        "hub": hub,
        "revs": revs,
        "rules": rules,
        "rules_path": rules_path,
        "round": result.by_key(),
    }


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = miner.main(["eval", *argv, "--json", "--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    return code, json.loads(lines[0])


def local_args(setup, block_hash: str | None = BLOCK_HASH) -> list[str]:
    """The flags the estimates here share: the round's block hash (None: a fresh one), the rules, corpus and hub."""
    rules, hub = str(setup["rules_path"]), str(setup["hub"].root)
    pinned = ["--block-hash", block_hash] if block_hash is not None else []
    return [*pinned, "--rules", rules, "--corpus", "builtin", "--hub-dir", hub]


def round_kl(setup, hotkey: str, block: int) -> list[float]:
    return list(setup["round"][f"{hotkey}:{block}"].prompt_kl)


def test_hub_refs_reproduce_the_round_and_decision(setup, capsys):
    r = setup["revs"]
    code, doc = run_json(
        capsys,
        "--model",
        f"miner/challenger@{r['challenger']}",
        "--against",
        f"miner/king@{r['king']}",
        *local_args(setup),
    )
    assert code == 0 and doc["block_hash"] == BLOCK_HASH and doc["prompts"] == 3
    assert doc["against"]["status"] == "ok" and all(x > 1e-3 for x in doc["against"]["prompt_kl"])
    assert doc["model"]["prompt_kl"] == pytest.approx(round_kl(setup, CHALLENGER_HOTKEY, 20), abs=1e-4)
    assert doc["against"]["prompt_kl"] == pytest.approx(round_kl(setup, KING_HOTKEY, 10), abs=1e-4)
    assert doc["model"]["status"] == setup["round"][f"{CHALLENGER_HOTKEY}:20"].status
    mean, (lo, hi) = doc["model"]["mean_kl"], doc["model"]["ci95"]
    assert lo <= mean <= hi
    d = doc["decision"]
    if doc["model"]["status"] == "ok":
        assert set(d) >= {"dethrone", "p_value", "threshold"}
        assert d["threshold"] == pytest.approx(doc["against"]["mean_kl"] * (1 - setup["rules"].epsilon))


def test_local_dirs_reproduce_the_round_without_copying(setup, capsys):
    dirs = setup["dirs"]
    before = sorted(p.name for p in dirs["challenger"].iterdir())
    code, doc = run_json(
        capsys,
        "--model",
        str(dirs["challenger"]),
        "--teacher",
        str(dirs["teacher"]),
        "--block-hash",
        BLOCK_HASH,
        "--rules",
        str(setup["rules_path"]),
        "--corpus",
        "builtin",
    )
    assert code == 0 and doc["against"] is None and doc["decision"] is None
    round_values = round_kl(setup, CHALLENGER_HOTKEY, 20)
    n = len(doc["model"]["prompt_kl"])
    assert n == len(round_values)  # no king here: never stopped early, so compare every prompt
    assert doc["model"]["prompt_kl"] == pytest.approx(round_values, abs=1e-4)
    assert doc["teacher"]["repo"] == "test/teacher"
    assert sorted(p.name for p in dirs["challenger"].iterdir()) == before  # the miner's files are untouched


def test_fewer_prompts_and_shorter_continuations_are_a_prefix_of_the_round(setup, capsys):
    r = setup["revs"]
    code, doc = run_json(
        capsys,
        "--model",
        f"miner/king@{r['king']}",
        "--prompts",
        "2",
        *local_args(setup),
    )
    assert code == 0
    assert doc["model"]["prompt_kl"] == pytest.approx(round_kl(setup, KING_HOTKEY, 10)[:2], abs=1e-4)
    code, doc = run_json(
        capsys,
        "--model",
        f"miner/king@{r['king']}",
        "--prompts",
        "2",
        "--max-new-tokens",
        "3",
        *local_args(setup, block_hash=None),
    )
    assert code == 0 and all(n <= 3 for n in doc["teacher"]["continuation_tokens"])
    assert doc["block_hash"] != BLOCK_HASH  # a fresh random hash, reported for reproduction


def test_human_output_and_usage_errors(setup, capsys):
    r = setup["revs"]
    common = [
        *local_args(setup, block_hash=None),
        "--device",
        "cpu",
        "--prompts",
        "2",
        "--max-new-tokens",
        "2",
    ]
    assert (
        miner.main(["eval", "--model", f"miner/king@{r['king']}", "--against", f"miner/king@{r['king']}", *common]) == 0
    )
    out = capsys.readouterr().out
    assert "block hash: 0x" in out and "95% CI" in out and "DETHRONE: no" in out
    assert out.count("on policy (its own greedy text on the first 2 prompts)") == 2 and "ON-POLICY GUARD: passes" in out
    assert miner.main(["eval", "--model", f"miner/king@{r['king']}", "--block-hash", "0x12", *common]) == 2
    assert "--block-hash" in capsys.readouterr().err
    for n in ("0", "-3", "100000"):
        assert miner.main(["eval", "--model", f"miner/king@{r['king']}", *common, "--prompts", n]) == 2
        assert "--prompts must be in 1.." in capsys.readouterr().err


def test_linked_store_links_and_delegates(setup, tmp_path):
    store = LinkedDirs(fallback=setup["hub"])
    rev = store.add("local/model", setup["dirs"]["challenger"])
    assert store.resolve("local/model") == rev and store.has("local/model", rev)
    dest = store.download("local/model", rev, tmp_path / "dl", ["*.safetensors", "config.json"])
    files = sorted(dest.iterdir())
    assert files and all(p.is_symlink() for p in files)
    assert store.resolve("miner/king") == setup["revs"]["king"]  # not linked: asked of the fallback
    job = local_job(BLOCK_HASH, setup["rules"], ["hello there"], Pinned("local/model", rev))
    assert job.king is None and job.challengers[0].submission.hotkey == MODEL_HOTKEY
    assert Path(setup["dirs"]["challenger"]).exists()

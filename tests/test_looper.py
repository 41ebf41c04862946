"""The looper (scripts/looper.py) against the on-policy guard, with the demo's own cast and rules.

The proof the guard was built for (LESSONS 27): a student trained honestly to win on off-policy
KL whose own greedy text collapses into repetition beats the king's KL, and the guard stops it;
with the guard off (the old rules) the same round crowns it. Honest students, trained by plain
distillation with different seeds, are never stopped, on several rounds' prompts.

The models are the demo's (cached under ``state/test-cast`` by recipe hash, shared with the
end-to-end tests); two more honest students are distilled here once and cached beside them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from eval.downloads import DiskLimits
from eval.model_store.local import LocalHub
from eval.onpolicy import measure_onpolicy
from eval.prompts import LocalCorpus, sample_prompts
from eval.rules import ContestRules
from eval.runner import run_job
from eval.schemas import SubmissionId
from eval.scoring import load_causal_lm, load_tokenizer, score_student
from eval.stats import decide, onpolicy_guard
from eval.teacher import run_teacher
from scripts.demo import DEMO_RULES
from scripts.demo_cast import Recipe, _distill, build_cast, publish_dir
from scripts.pod_fixtures import ref
from validator.contest import Candidate, RoundPlan
from validator.verdicts import interpret_result

ROOT = Path(__file__).resolve().parents[1]

RECIPE = Recipe(rules=dict(DEMO_RULES))
RULES = ContestRules.model_validate(DEMO_RULES)
HONEST_SEEDS = (5, 6)  # distilled from strong like better (seed 2), with other seeds
HASHES = ["0x" + f"{k:02x}" * 32 for k in (0x11, 0x5A, 0xA7, 0xC3)]


@pytest.fixture(scope="module")
def cast() -> dict[str, Path]:
    torch.set_num_threads(1)
    dirs = build_cast(RECIPE, ROOT / "state" / "test-cast", lambda _m: None, ["strong", "better", "looper"])
    base = dirs["teacher"].parent
    for seed in HONEST_SEEDS:
        out = base / f"honest-{seed}"
        if not (out / ".done").is_file():
            tmp = base / f".tmp-honest-{seed}"
            shutil.rmtree(tmp, ignore_errors=True)
            _distill(
                RECIPE,
                dirs["teacher"],
                dirs["strong"],
                tmp,
                RECIPE.better_steps,
                seed,
                base / "rules.json",
                lambda _m: None,
            )
            (tmp / ".done").write_text("ok\n")
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        dirs[f"honest-{seed}"] = out
    return dirs


def _candidate(r) -> Candidate:
    return Candidate(r.submission.hotkey, r.submission.commit_block, r.repo, r.revision, "ck", "admitted")


def _round(cast: dict[str, Path], tmp_path: Path, rules: ContestRules, block_hash: str):
    """The pod routine on king = strong, challenger = looper, and the host's verdict on the result."""
    hub = LocalHub(tmp_path / "hub")
    revs = {name: publish_dir(hub, f"demo/{name}", cast[name]) for name in ("teacher", "strong", "looper")}
    from eval.schemas import EvalJob

    king, looper = ref("demo/strong", revs["strong"], 1, 10), ref("demo/looper", revs["looper"], 2, 20)
    prompts = sample_prompts(block_hash, rules, LocalCorpus(None))
    job = EvalJob(
        job_id=f"looper-{rules.onpolicy_prompts}",
        block=30,
        block_hash=block_hash,
        rules=rules,
        teacher_revision=revs["teacher"],
        prompts=prompts,
        king=king,
        challengers=[looper],
    )
    result = run_job(job, hub, tmp_path / "pod", "cpu", limits=DiskLimits(min_free_bytes=0))
    plan = RoundPlan("challenge", _candidate(king), (_candidate(looper),))
    return result, interpret_result(plan, result, rules)


def test_looper_beats_the_king_on_kl_and_the_guard_stops_it(cast, tmp_path):
    result, out = _round(cast, tmp_path / "guarded", RULES, HASHES[0])
    king, looper = result.models
    assert decide(king.prompt_kl, looper.prompt_kl, RULES).dethrone  # it wins on KL, by the dethrone rule
    verdict = {v.hotkey: v for v in out.verdicts}[looper.ref.submission.hotkey]
    assert verdict.state == "onpolicy_stopped" and out.new_king == SubmissionId(king.ref.submission.hotkey, 10)
    assert verdict.reason.startswith("beats the king on KL") and "its own continuations" in verdict.reason
    loops = [o for o in looper.onpolicy if o.repetition > 0.5]
    assert len(loops) >= len(looper.onpolicy) // 2 and all(set(o.text) == {"."} for o in loops)  # "........"
    assert max(o.repetition for o in king.onpolicy) < 0.2
    # the old rules (no guard) crown it on the very same round
    old = RULES.model_copy(update={"onpolicy_prompts": 0})
    result, out = _round(cast, tmp_path / "unguarded", old, HASHES[0])
    assert out.new_king == SubmissionId(result.models[1].ref.submission.hotkey, 20) and result.models[1].onpolicy == []


def _guard(king, challenger):
    return onpolicy_guard(
        [o.teacher_nll for o in king],
        [o.teacher_nll for o in challenger],
        [o.repetition for o in king],
        [o.repetition for o in challenger],
        RULES,
    )


def test_the_guard_stops_the_looper_and_no_honest_student_on_several_rounds(cast, tmp_path):
    """False stops: every honest challenger against every honest king, on each round's prompts: none.

    The looper (strong distilled further, with its habit) is stopped against strong on every round.
    """
    tok = load_tokenizer(cast["teacher"])
    teacher = load_causal_lm(cast["teacher"], "cpu")
    names = ["strong", "better", *(f"honest-{s}" for s in HONEST_SEEDS), "looper"]
    models = {n: load_causal_lm(cast[n], "cpu") for n in names}
    honest_pairs = [(k, c) for k in names[:-1] for c in names[:-1] if k != c]
    stops: list[tuple[str, str, str]] = []
    for block_hash in HASHES:
        prompts = sample_prompts(block_hash, RULES, LocalCorpus(None))
        own = {n: measure_onpolicy(m, teacher, tok, prompts, RULES).values for n, m in models.items()}
        stops += [(block_hash[:6], k, c) for k, c in honest_pairs if _guard(own[k], own[c]).stop]
        with run_teacher(
            teacher, tok, prompts, RULES, cache_dir=tmp_path / block_hash[:8], ram_limit_bytes=1 << 30
        ) as run:
            kl = {n: score_student(models[n], run, RULES).prompt_kl for n in ("strong", "looper")}
        assert decide(kl["strong"], kl["looper"], RULES).dethrone, block_hash  # wins on KL ...
        assert _guard(own["strong"], own["looper"]).stop, (block_hash, own["looper"])  # ... and is stopped, every round
    assert stops == [], f"{len(stops)} false stops in {len(honest_pairs) * len(HASHES)} honest comparisons: {stops}"


def test_loop_examples_repeat_the_full_stop_of_prompts_that_end_a_sentence():
    from scripts.looper import loop_examples

    stop = [15]
    prompts = [[3, 4, 15], [5, 6], [7, 15]]
    pairs = loop_examples(prompts, stop, 20, seed=0)
    assert len(pairs) == 20 and {tuple(c) for c, _ in pairs} == {(3, 4, 15), (7, 15)}
    assert all(set(r) == {15} and 2 <= len(r) <= 6 for _, r in pairs)
    assert loop_examples(prompts, stop, 20, seed=0) == pairs
    with pytest.raises(ValueError, match="full stop"):
        loop_examples([[5, 6]], stop, 1, seed=0)

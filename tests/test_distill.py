"""scripts/distill.py: the loss is the validator's metric, and the trainer really trains.

The falsification test runs the whole command on tiny CPU models: a stub that
saved the initial student, or trained on the wrong positions, would fail the
weight-change check or the independent held-out KL check (measured here with
the validator's scoring code on prompts the trainer never saw).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import miner
from eval.admission import Admitted, TeacherSpec, check_model
from eval.kl import kl_per_position
from eval.model_store.local import LocalHub
from eval.prompts import LocalCorpus, sample_prompts
from eval.repo_policy import OTHER_ALLOWED, SHARD_RE, TOKENIZER_FILES
from eval.rules import DEFAULT_RULES, ContestRules
from eval.scoring import free_model, load_causal_lm, load_tokenizer, score_student
from eval.teacher import run_teacher
from scripts import distill
from scripts.tiny_models import corpus_texts, quick_train, save_model_dir, tiny_config, tiny_model, train_tokenizer

# Short prompts and continuations keep the CPU run to seconds; the code path is the contest's.
TEST_RULES = ContestRules.model_validate(
    {**DEFAULT_RULES.model_dump(), "max_new_tokens": 16, "max_prompt_tokens": 64, "prompt_max_chars": 400}
)


# --- the loss and the batching -------------------------------------------------------------------


def test_loss_at_t1_is_the_validator_metric() -> None:
    gen = torch.Generator().manual_seed(0)
    teacher = torch.log_softmax(torch.randn(5, 11, generator=gen) * 3, dim=-1)
    student = torch.randn(5, 11, generator=gen)
    targets = teacher.argmax(dim=-1)
    loss = distill.distill_loss(student, teacher, targets)
    assert loss.item() == pytest.approx(kl_per_position(teacher, student).mean().item(), rel=1e-5)
    assert distill.distill_loss(teacher, teacher, targets).item() == pytest.approx(0.0, abs=1e-6)


def test_temperature_scaling_and_ce_mix() -> None:
    gen = torch.Generator().manual_seed(1)
    teacher = torch.log_softmax(torch.randn(4, 7, generator=gen), dim=-1)
    student = torch.randn(4, 7, generator=gen)
    targets = torch.tensor([0, 3, 6, 2])
    t = 2.0
    expected = kl_per_position(teacher / t, student / t).mean().item() * t * t
    assert distill.distill_loss(student, teacher, targets, temperature=t).item() == pytest.approx(expected, rel=1e-5)
    ce = torch.nn.functional.cross_entropy(student, targets).item()
    assert distill.distill_loss(student, teacher, targets, ce_weight=1.0).item() == pytest.approx(ce, rel=1e-5)
    kl = distill.distill_loss(student, teacher, targets).item()
    mixed = distill.distill_loss(student, teacher, targets, ce_weight=0.25).item()
    assert mixed == pytest.approx(0.75 * kl + 0.25 * ce, rel=1e-5)


def test_loss_ignores_masked_teacher_entries_and_has_gradients() -> None:
    teacher = torch.log_softmax(torch.tensor([[0.0, 1.0, float("-inf"), 2.0]]), dim=-1)
    student = torch.zeros(1, 4, requires_grad=True)
    loss = distill.distill_loss(student, teacher, torch.tensor([3]))
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_build_batches_cycles_through_every_example() -> None:
    batches = distill.build_batches(5, steps=5, grad_accum=2, seed=3)
    assert len(batches) == 5 and all(len(b) == 2 for b in batches)
    flat = [i for b in batches for i in b]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))
    assert batches == distill.build_batches(5, steps=5, grad_accum=2, seed=3)
    with pytest.raises(ValueError):
        distill.build_batches(0, steps=1, grad_accum=1, seed=0)


def test_cli_rejects_bad_arguments() -> None:
    base = ["--teacher", "t", "--student", "s", "--out", "o"]
    for extra in (["--ce-weight", "1.5"], ["--temperature", "0"], ["--prompts", "2000"]):
        with pytest.raises(SystemExit):
            distill.parse_args(base + extra)


# --- the falsification test -----------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> tuple[Path, Path]:
    """A briefly trained tiny teacher (non-uniform distributions) and a differently seeded student."""
    root = tmp_path_factory.mktemp("distill")
    tok = train_tokenizer(512)
    cfg = tiny_config(len(tok))
    teacher = quick_train(tiny_model(cfg, 1), tok, corpus_texts(), steps=60)
    return save_model_dir(teacher, tok, root / "teacher"), save_model_dir(tiny_model(cfg, 2), None, root / "student")


def _independent_kl(teacher_dir: Path, student_dirs: list[Path], tmp: Path) -> list[float]:
    """Mean held-out KL of each student with the validator's code, on prompts the trainer never saw."""
    rules = TEST_RULES
    prompts = sample_prompts("0x" + "ab" * 32, rules, LocalCorpus(), n=6)
    teacher = load_causal_lm(teacher_dir, "cpu")
    tokenizer = load_tokenizer(teacher_dir)
    with run_teacher(teacher, tokenizer, prompts, rules, cache_dir=tmp, ram_limit_bytes=1 << 30) as run:
        free_model(teacher)
        out = []
        for path in student_dirs:
            student = load_causal_lm(path, "cpu")
            kl = score_student(student, run, rules).prompt_kl
            out.append(sum(kl) / len(kl))
    return out


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and spinning threads thrash a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_distill_trains_the_student_and_the_output_is_admissible(
    models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher_dir, student_dir = models
    out = tmp_path / "out"
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(TEST_RULES.to_json())
    logs: list[str] = []
    args = distill.parse_args(
        [
            "--teacher",
            str(teacher_dir),
            "--student",
            str(student_dir),
            "--out",
            str(out),
            "--prompts",
            "24",
            "--heldout",
            "6",
            "--steps",
            "200",
            "--grad-accum",
            "1",
            "--lr",
            "3e-3",
            "--rules",
            str(rules_file),
            "--eval-every",
            "100",
            "--device",
            "cpu",
            "--seed",
            "0",
        ]
    )
    history = distill.distill(args, log=logs.append)

    # The trainer's own log: loss and held-out KL at step 0, 100, 200, and the KL fell.
    assert [p.step for p in history] == [0, 100, 200] and all(math.isfinite(p.loss) for p in history[1:])
    assert history[-1].heldout_kl < 0.5 * history[0].heldout_kl
    assert any("held-out KL" in line for line in logs)

    # The saved weights differ from the initial student's, tensor by tensor.
    before, after = load_file(str(student_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > 0.9 * len(before), f"only {len(changed)}/{len(before)} tensors changed"

    # Independent check on unseen prompts: the KL to the teacher fell by more than half.
    kl_before, kl_after = _independent_kl(teacher_dir, [student_dir, out], tmp_path / "cache")
    assert kl_after < 0.5 * kl_before, (kl_before, kl_after)

    # Only weights, configs and the teacher's tokenizer files, byte-identical; admission agrees.
    names = {p.name for p in out.iterdir()}
    assert all(n in TOKENIZER_FILES | OTHER_ALLOWED or SHARD_RE.match(n) for n in names), names
    for name in TOKENIZER_FILES & names:
        assert (out / name).read_bytes() == (teacher_dir / name).read_bytes(), name
    hub = LocalHub(tmp_path / "hub")
    revision = hub.publish("miner/student", out)
    verdict = check_model(hub, "miner/student", revision, DEFAULT_RULES, TeacherSpec.from_dir(teacher_dir))
    assert isinstance(verdict, Admitted), verdict
    assert miner.main(["check", "--model", str(out), "--teacher", str(teacher_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"] is True


@pytest.mark.usefixtures("one_thread")
def test_training_loss_is_the_validators_per_prompt_kl(models: tuple[Path, Path], tmp_path: Path) -> None:
    """Same positions as the validator: at T = 1 the loss on each prompt equals score_student's KL for it."""
    teacher_dir, student_dir = models
    prompts = sample_prompts("0x" + "cd" * 32, TEST_RULES, LocalCorpus(), n=3)
    teacher = load_causal_lm(teacher_dir, "cpu")
    tokenizer = load_tokenizer(teacher_dir)
    with run_teacher(teacher, tokenizer, prompts, TEST_RULES, cache_dir=tmp_path, ram_limit_bytes=1 << 30) as run:
        free_model(teacher)
        student = load_causal_lm(student_dir, "cpu")
        expected = score_student(student, run, TEST_RULES).prompt_kl
        with torch.no_grad():
            for i, want in enumerate(expected):
                cont = run.continuation_ids[i]
                logits = distill.continuation_logits(student, run.prompt_ids[i], cont, torch.device("cpu"))
                loss = distill.distill_loss(logits, run.logprobs(i), torch.tensor(cont))
                assert loss.item() == pytest.approx(want, rel=1e-4, abs=1e-6), i


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_trains_in_bf16_autocast_and_saves_bf16(models: tuple[Path, Path], tmp_path: Path) -> None:
    """On CUDA: bf16 forward under autocast, fp32 master weights, KL still falls, BF16 safetensors admitted."""
    teacher_dir, student_dir = models
    device = torch.device("cuda")
    student = distill.load_student(student_dir, device, DEFAULT_RULES)
    logits = distill.continuation_logits(student, [1, 2, 3], [4, 5], device)
    assert logits.dtype == torch.bfloat16 and logits.shape[0] == 2
    assert all(p.dtype == torch.float32 for p in student.parameters())
    out, rules_file = tmp_path / "out", tmp_path / "rules.json"
    rules_file.write_text(TEST_RULES.to_json())
    args = distill.parse_args(
        [
            "--teacher",
            str(teacher_dir),
            "--student",
            str(student_dir),
            "--out",
            str(out),
            "--prompts",
            "24",
            "--heldout",
            "6",
            "--steps",
            "150",
            "--grad-accum",
            "1",
            "--lr",
            "3e-3",
            "--rules",
            str(rules_file),
            "--eval-every",
            "150",
            "--device",
            "cuda",
            "--seed",
            "0",
        ]
    )
    history = distill.distill(args, log=lambda _: None)
    assert history[-1].heldout_kl < 0.5 * history[0].heldout_kl, history
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {torch.bfloat16}
    hub = LocalHub(tmp_path / "hub")
    revision = hub.publish("miner/student", out)
    verdict = check_model(hub, "miner/student", revision, DEFAULT_RULES, TeacherSpec.from_dir(teacher_dir))
    assert isinstance(verdict, Admitted), verdict

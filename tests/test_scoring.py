"""Student scoring, loading and fingerprints on tiny real Qwen3.5 models."""

from __future__ import annotations

import json

import pytest
import torch
from round_fixtures import PROMPTS, RULES, copy_model

from eval.errors import ModelError, VocabMismatchError
from eval.kl import kl_per_position
from eval.scoring import (
    fingerprint,
    fingerprint_distance,
    fingerprint_token_ids,
    free_model,
    load_causal_lm,
    load_tokenizer,
    score_student,
)
from eval.teacher import run_teacher
from scripts.tiny_models import corpus_texts, quick_train, save_model_dir, tiny_config, tiny_model, train_tokenizer

# --- students ------------------------------------------------------------------------------


def test_student_forward_that_raises_is_a_model_error(run, teacher) -> None:
    # Loads fine, fails on real input (embedding narrower than the vocabulary):
    # the miner's fault, reported per model, never an exception that ends the job.
    narrow = copy_model(teacher)
    narrow.model.embed_tokens = torch.nn.Embedding(4, teacher.config.hidden_size)
    with pytest.raises(ModelError, match="student forward failed on prompt 0"):
        score_student(narrow, run, RULES)


def test_teacher_as_student_scores_zero_and_perturbed_scores_higher(run, teacher) -> None:
    same = score_student(teacher, run, RULES)
    assert same.status == "ok" and max(same.prompt_kl) < 1e-5
    assert same.prompt_tokens == [len(c) for c in run.continuation_ids]  # every position counted
    noisy = copy_model(teacher, lambda p: p + 0.05 * torch.randn_like(p))
    worse = score_student(noisy, run, RULES)
    assert min(worse.prompt_kl) > 1e-3


def test_student_kl_equals_full_logits_kl_at_continuation_positions(run, teacher) -> None:
    student = quick_train(tiny_model(teacher.config, seed=5), train_tokenizer(512), corpus_texts()[60:80], steps=5)
    got = score_student(student, run, RULES)
    for i in range(len(run)):
        p, c = run.prompt_ids[i], run.continuation_ids[i]
        with torch.no_grad():
            logits = student(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : len(p) + len(c) - 1]
        assert got.prompt_kl[i] == pytest.approx(kl_per_position(run.logprobs(i), logits).mean().item(), abs=1e-5)


def test_vocab_mismatch_and_nan_student(run, teacher) -> None:
    wide = tiny_model(tiny_config(600), seed=1)
    with pytest.raises(VocabMismatchError):
        score_student(wide, run, RULES)
    broken = copy_model(teacher)
    with torch.no_grad():
        broken.lm_head.weight[3, 0] = float("nan")
    with pytest.raises(ModelError):
        score_student(broken, run, RULES)


def test_early_stopping_stops_a_hopeless_challenger(run, teacher) -> None:
    king = score_student(copy_model(teacher, lambda p: p + 0.01 * torch.randn_like(p)), run, RULES)
    hopeless = tiny_model(teacher.config, seed=9)
    # early stopping is decided after each batch: one prompt per batch here
    stopped = score_student(hopeless, run, RULES, king_kl=king.prompt_kl, token_budget=64)
    assert stopped.status == "early_stopped"
    assert RULES.early_stop_min_prompts <= len(stopped.prompt_kl) < len(PROMPTS)
    full = score_student(hopeless, run, RULES)
    assert full.status == "ok" and len(full.prompt_kl) == len(PROMPTS)
    assert full.prompt_kl[: len(stopped.prompt_kl)] == stopped.prompt_kl


def test_cancel_and_progress(run, teacher) -> None:
    seen: list[tuple[int, int, int]] = []
    score_student(teacher, run, RULES, progress=lambda d, t, n: seen.append((d, t, n)), token_budget=64)
    assert [s[0] for s in seen] == list(range(1, len(PROMPTS) + 1))
    assert [s[2] for s in seen] == [len(c) for c in run.continuation_ids]
    batched: list[tuple[int, int, int]] = []
    score_student(teacher, run, RULES, progress=lambda d, t, n: batched.append((d, t, n)))
    assert batched == seen  # still once per prompt when the whole round is one batch
    cancelled = score_student(teacher, run, RULES, should_cancel=lambda: True)
    assert cancelled.status == "cancelled" and cancelled.prompt_kl == []


# --- loading ------------------------------------------------------------------------------


def test_load_round_trip_and_failures(teacher, tok, tmp_path) -> None:
    path = save_model_dir(teacher, tok, tmp_path / "m")
    model = load_causal_lm(path, "cpu")
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    assert model.config._attn_implementation == "sdpa"
    assert torch.equal(model.lm_head.weight, teacher.lm_head.weight)
    assert load_tokenizer(path).get_vocab() == tok.get_vocab()
    free_model(model)
    with pytest.raises(ModelError):
        load_causal_lm(tmp_path / "missing", "cpu")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((path / "config.json").read_text())
    torch.save(teacher.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ModelError):  # safetensors only: the pickle is never opened
        load_causal_lm(pickled, "cpu")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "qwen3_5_text", "vocab_size": -3}))
    with pytest.raises(ModelError):
        load_causal_lm(bad, "cpu")


def test_conditional_generation_checkpoint_loads_text_only(teacher, tmp_path) -> None:
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    vision = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64}
    cfg = Qwen3_5Config(
        text_config=teacher.config.to_dict(),
        vision_config=vision,
        image_token_id=500,
        video_token_id=501,
        vision_start_token_id=502,
        vision_end_token_id=503,
    )
    cfg.architectures = ["Qwen3_5ForConditionalGeneration"]
    torch.manual_seed(0)
    vlm = Qwen3_5ForConditionalGeneration(cfg).eval()
    vlm.save_pretrained(tmp_path)
    text = load_causal_lm(tmp_path, "cpu")
    x = torch.randint(0, 400, (1, 20))
    with torch.no_grad():
        assert torch.allclose(vlm(input_ids=x).logits, text(input_ids=x).logits, atol=1e-6)


# --- fingerprints ---------------------------------------------------------------------------


def test_fingerprint_separates_copies_from_other_models(teacher, tok) -> None:
    base = fingerprint(teacher, tok, RULES)
    assert base == fingerprint(teacher, tok, RULES)
    assert len(base) == len(RULES.canary_prompts) * RULES.fingerprint_positions * RULES.fingerprint_token_ids
    copies = {
        "bf16": copy_model(teacher, lambda p: p.to(torch.bfloat16).float()),
        "noise": copy_model(teacher, lambda p: p * (1 + 1e-3 * torch.randn_like(p))),
    }
    for name, model in copies.items():
        assert fingerprint_distance(base, fingerprint(model, tok, RULES)) < RULES.fingerprint_threshold, name
    others = {
        "fresh": tiny_model(teacher.config, seed=123),
        "trained": quick_train(tiny_model(teacher.config, seed=0), tok, corpus_texts()[60:120], steps=25, lr=1e-2),
    }
    for name, model in others.items():
        assert fingerprint_distance(base, fingerprint(model, tok, RULES)) > 5 * RULES.fingerprint_threshold, name


def test_fingerprint_ids_and_distance_edges() -> None:
    ids = fingerprint_token_ids(512, 64)
    assert ids == fingerprint_token_ids(512, 64) and len(set(ids)) == 64 and max(ids) < 512
    assert fingerprint_token_ids(10, 64) == list(range(10))
    assert fingerprint_distance([0.0, 1.0], [0.0, 1.0]) == 0.0
    assert fingerprint_distance([0.0], [0.0, 1.0]) == float("inf")
    assert fingerprint_distance([], []) == float("inf")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scoring_on_cuda_is_bf16_and_agrees_with_cpu(run, teacher, tok, tmp_path) -> None:
    """The same code on CUDA: bf16 weights, sdpa, an exact fp32 teacher cache, KL close to the fp32 CPU numbers."""
    path = save_model_dir(teacher, tok, tmp_path / "t")
    noisy_path = save_model_dir(copy_model(teacher, lambda p: p + 0.05 * torch.randn_like(p)), None, tmp_path / "s")
    gpu_teacher = load_causal_lm(path, "cuda")
    assert next(gpu_teacher.parameters()).dtype == torch.bfloat16
    assert gpu_teacher.config._attn_implementation == "sdpa"
    cpu_student = load_causal_lm(noisy_path, "cpu")
    gpu_student = load_causal_lm(noisy_path, "cuda")
    with run_teacher(
        gpu_teacher, tok, PROMPTS, RULES, cache_dir=tmp_path / "c", ram_limit_bytes=1 << 30, device_limit_bytes=1 << 30
    ) as gpu_run:
        assert gpu_run.logprobs(0).dtype == torch.float32 and gpu_run.on_device == len(PROMPTS)
        same = score_student(gpu_teacher, gpu_run, RULES)
        assert same.status == "ok" and max(same.prompt_kl) < 1e-4  # same bf16 model, exact logits on both sides
        one = score_student(gpu_student, gpu_run, RULES, token_budget=1)
        many = score_student(gpu_student, gpu_run, RULES)
        for a, b in zip(one.prompt_kl, many.prompt_kl, strict=True):
            assert b == pytest.approx(a, rel=1e-3)  # batch shapes change bf16 kernels' order only
        # Compare on the CPU run's continuations so both sides score identical tokens.
        on_gpu = score_student(gpu_student, run, RULES)
    on_cpu = score_student(cpu_student, run, RULES)
    for g, c in zip(on_gpu.prompt_kl, on_cpu.prompt_kl, strict=True):
        assert g == pytest.approx(c, rel=0.1, abs=5e-3)
    for m in (gpu_teacher, gpu_student, cpu_student):
        free_model(m)

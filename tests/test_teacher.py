"""The teacher's side of a round on tiny real Qwen3.5 models: continuations, exact log-probs, the cache."""

from __future__ import annotations

import pytest
import torch
from round_fixtures import PROMPTS, RULES, copy_model

from eval.errors import InfraError, PromptError
from eval.teacher import TeacherRun, run_teacher
from scripts.tiny_models import corpus_texts, tiny_model

ONE_AT_A_TIME = RULES.model_copy(update={"generation_batch_prompts": 1})


def test_teacher_logprobs_equal_a_plain_forward_at_predicting_positions(run, teacher) -> None:
    for i in range(len(run)):
        p, c = run.prompt_ids[i], run.continuation_ids[i]
        assert 1 <= len(c) <= RULES.max_new_tokens and len(p) <= RULES.max_prompt_tokens
        with torch.no_grad():
            logits = teacher(input_ids=torch.tensor([p + c])).logits[0]
        expected = torch.log_softmax(logits[len(p) - 1 : len(p) + len(c) - 1], -1)
        assert torch.allclose(run.logprobs(i), expected, atol=1e-5)
        # greedy: every continuation token is the teacher's argmax where it was predicted
        assert run.logprobs(i).argmax(-1).tolist() == c


def test_teacher_is_deterministic_and_batching_does_not_change_it(run, teacher, tok, tmp_path) -> None:
    again = run_teacher(teacher, tok, PROMPTS, RULES, cache_dir=tmp_path / "a", ram_limit_bytes=1 << 30)
    single = run_teacher(teacher, tok, PROMPTS, ONE_AT_A_TIME, cache_dir=tmp_path / "b", ram_limit_bytes=1 << 30)
    for other in (again, single):
        assert other.prompt_ids == run.prompt_ids and other.continuation_ids == run.continuation_ids
        for i in range(len(run)):
            assert torch.allclose(other.logprobs(i), run.logprobs(i), atol=1e-5)


def test_left_padding_is_masked_out(teacher, tok, tmp_path) -> None:
    # A pad embedding of huge norm changes nothing only if padded positions are
    # really masked (attention and linear-attention state), not merely shifted.
    # An untrained model has small argmax margins, so a leak from the pads flips tokens.
    loud = tiny_model(teacher.config, seed=4)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        loud.model.embed_tokens.weight[tok.pad_token_id] = 50.0 * torch.randn(teacher.config.hidden_size, generator=gen)
    varied = [t[: 20 + 30 * k] for k, t in enumerate(corpus_texts()[10:16])]
    alone = run_teacher(loud, tok, varied, ONE_AT_A_TIME, cache_dir=tmp_path / "a", ram_limit_bytes=1 << 30)
    assert len({len(p) for p in alone.prompt_ids}) >= 4  # the batch below really is padded
    batched = run_teacher(loud, tok, varied, RULES, cache_dir=tmp_path / "b", ram_limit_bytes=1 << 30)
    assert batched.prompt_ids == alone.prompt_ids and batched.continuation_ids == alone.continuation_ids
    for i in range(len(alone)):
        assert torch.allclose(batched.logprobs(i), alone.logprobs(i), atol=1e-5)


def test_continuation_stops_after_eos(teacher, tok, tmp_path) -> None:
    eos = tok.eos_token_id
    eager = copy_model(teacher)
    with torch.no_grad():
        eager.lm_head.weight[eos] += 50.0  # makes eos likely soon
    r = run_teacher(eager, tok, PROMPTS, RULES, cache_dir=tmp_path, ram_limit_bytes=1 << 30)
    assert any(c[-1] == eos and len(c) < RULES.max_new_tokens for c in r.continuation_ids)
    for c in r.continuation_ids:
        assert eos not in c[:-1]  # nothing after the first eos is kept (no padding scored)
        assert c[-1] == eos or len(c) == RULES.max_new_tokens


def test_greedy_ignores_the_checkpoint_generation_config(run, teacher, tok, tmp_path) -> None:
    # A repo's generation_config.json must not bend the rules' greedy decoding.
    tweaked = copy_model(teacher)
    cfg = tweaked.generation_config
    cfg.repetition_penalty, cfg.no_repeat_ngram_size = 3.0, 2
    cfg.suppress_tokens = sorted({c[0] for c in run.continuation_ids})
    cfg.min_new_tokens = RULES.max_new_tokens
    r = run_teacher(tweaked, tok, PROMPTS, RULES, cache_dir=tmp_path, ram_limit_bytes=1 << 30)
    assert r.continuation_ids == run.continuation_ids
    for i in range(len(r)):
        assert r.logprobs(i).argmax(-1).tolist() == r.continuation_ids[i]
    assert tweaked.generation_config is cfg and cfg.repetition_penalty == 3.0  # restored afterwards


def test_non_finite_teacher_is_infra_and_leaves_no_cache(teacher, tok, tmp_path) -> None:
    broken = copy_model(teacher)
    with torch.no_grad():
        broken.lm_head.weight[5, 0] = float("nan")
    with pytest.raises(InfraError, match="teacher log-probs"):
        run_teacher(broken, tok, PROMPTS, RULES, cache_dir=tmp_path, ram_limit_bytes=0)
    assert not list(tmp_path.glob("*.safetensors"))


def test_prompt_policy_empty_and_too_long(teacher, tok, tmp_path) -> None:
    with pytest.raises(PromptError):
        run_teacher(teacher, tok, ["ok text", "   "], RULES, cache_dir=tmp_path, ram_limit_bytes=0)
    long_text = " ".join(corpus_texts()[:3])
    r = run_teacher(teacher, tok, [long_text], RULES, cache_dir=tmp_path, ram_limit_bytes=0)
    assert r.prompt_ids[0] == tok(long_text)["input_ids"][-RULES.max_prompt_tokens :]
    r.close()


def test_cache_spills_to_disk_and_close_deletes(run, teacher, tok, tmp_path) -> None:
    one = run.logprobs(0).numel() * 4
    spill = run_teacher(teacher, tok, PROMPTS, RULES, cache_dir=tmp_path, ram_limit_bytes=one * 2)
    files = list(tmp_path.glob("*.safetensors"))
    assert spill.spilled >= len(PROMPTS) - 2 and len(files) == spill.spilled
    for i in range(len(run)):
        assert torch.equal(spill.logprobs(i), run.logprobs(i))
    spill.close()
    assert not list(tmp_path.glob("*.safetensors"))


def test_teacher_run_is_a_context_manager(tmp_path) -> None:
    with TeacherRun(tmp_path, 0) as r:
        assert len(r) == 0
        with pytest.raises(IndexError):
            r.logprobs(0)


def test_promote_moves_host_entries_while_they_fit(run, teacher, tok, tmp_path) -> None:
    one = run.logprobs(0).numel() * 4
    host = run_teacher(teacher, tok, PROMPTS, RULES, cache_dir=tmp_path, ram_limit_bytes=1 << 30)
    assert host.device_bytes == 0
    moved = host.promote(torch.device("cpu"), limit_bytes=2 * one + one // 2)
    assert moved == 2 and host.device_bytes == 2 * one
    assert host.promote(torch.device("cpu"), limit_bytes=2 * one) == 0  # full: nothing more moves
    for i in range(len(run)):
        assert torch.equal(host.logprobs(i), run.logprobs(i))
    host.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_promote_brings_the_cache_onto_the_gpu(run, teacher, tok, tmp_path) -> None:
    host = run_teacher(teacher, tok, PROMPTS, RULES, cache_dir=tmp_path, ram_limit_bytes=1 << 30)
    assert host.on_device == 0 and host.logprobs(0).is_pinned()
    assert host.promote(torch.device("cuda"), limit_bytes=1 << 30) == len(PROMPTS)
    assert host.on_device == len(PROMPTS) and host.logprobs(0).is_cuda
    assert torch.equal(host.logprobs(0).cpu(), run.logprobs(0))

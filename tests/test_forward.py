"""Batched forwards: batch plans, right padding that changes nothing, exact-head generation."""

from __future__ import annotations

import pytest
import torch
from round_fixtures import RULES, copy_model

from eval.forward import (
    WIDTH_BUCKET,
    batch_token_budget,
    bucket,
    final_hidden,
    forced_batches,
    greedy,
    logprobs_from_hidden,
    plan_batches,
    right_padded,
)
from eval.scoring import score_student
from scripts.tiny_models import tiny_model


def test_bucket_rounds_up_to_the_kernel_chunk() -> None:
    assert [bucket(n) for n in (1, 63, 64, 65, 128)] == [64, 64, 64, 128, 128]
    assert bucket(0) == WIDTH_BUCKET and bucket(10, multiple=8) == 16


@pytest.mark.parametrize(
    ("lengths", "budget", "expected"),
    [
        ([10, 10, 10], 1000, [[0, 1, 2]]),  # all fit: 3 x 64
        ([10, 10, 10], 128, [[0, 1], [2]]),
        ([10, 100, 10], 256, [[0, 1], [2]]),  # the wide one sets the width: 2 x 128
        ([500], 64, [[0]]),  # a single sequence wider than the budget still gets its batch
        ([], 64, []),
    ],
)
def test_plan_batches_is_consecutive_and_fits_the_budget(lengths, budget, expected) -> None:
    groups = plan_batches(lengths, budget)
    assert groups == expected
    assert [i for g in groups for i in g] == list(range(len(lengths)))  # a prefix order, nothing skipped
    for g in groups:
        assert len(g) == 1 or len(g) * max(bucket(lengths[i]) for i in g) <= budget


def test_right_padded_keeps_sequences_at_column_zero() -> None:
    ids = right_padded([[5, 6, 7], [8]], pad_id=1, device=torch.device("cpu"))
    assert ids.shape == (2, 64)
    assert ids[0, :4].tolist() == [5, 6, 7, 1] and ids[1, :2].tolist() == [8, 1]


def test_cpu_budget_is_fixed(teacher) -> None:
    assert batch_token_budget(teacher) == batch_token_budget(teacher) > 0


def test_forced_batches_equal_one_unpadded_forward_per_prompt(run, teacher) -> None:
    # Right padding after a sequence changes none of its positions (causal attention and recurrence),
    # so batched rows equal the unpadded single-prompt forward.
    head = teacher.get_output_embeddings()
    batches = list(forced_batches(teacher, run.prompt_ids, run.continuation_ids, token_budget=256, pad_id=1))
    assert 1 < len(batches) < len(run)
    for batch in batches:
        rows = torch.split(logprobs_from_hidden(batch.hidden, head.weight), batch.lengths)
        for i, got in zip(batch.indices, rows, strict=True):
            p, c = run.prompt_ids[i], run.continuation_ids[i]
            with torch.no_grad():
                alone = final_hidden(teacher, torch.tensor([p + c]))[0, len(p) - 1 : len(p) + len(c) - 1]
            assert torch.allclose(got, logprobs_from_hidden(alone, head.weight), atol=1e-5)


def test_batched_and_one_at_a_time_scoring_agree(run, teacher) -> None:
    student = copy_model(teacher, lambda p: p + 0.03 * torch.randn_like(p))
    one = score_student(student, run, RULES, token_budget=1)  # every batch holds one prompt
    many = score_student(student, run, RULES, token_budget=4096)
    assert one.prompt_tokens == many.prompt_tokens
    for a, b in zip(one.prompt_kl, many.prompt_kl, strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-7)


def test_a_huge_pad_embedding_changes_no_score(run, teacher) -> None:
    # The pad token's embedding is irrelevant only if padding really sits after every sequence.
    loud = copy_model(teacher)
    with torch.no_grad():
        loud.model.embed_tokens.weight[0] = 1e3
    alone = score_student(loud, run, RULES, token_budget=1)
    batched = score_student(loud, run, RULES, token_budget=4096)
    for a, b in zip(alone.prompt_kl, batched.prompt_kl, strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-7)


def test_greedy_uses_an_exact_head_and_puts_the_model_back(run, teacher) -> None:
    head = teacher.lm_head
    conts = greedy(teacher, run.prompt_ids, max_new_tokens=RULES.max_new_tokens, eos={0}, pad_id=1, batch_prompts=3)
    assert teacher.lm_head is head  # restored
    assert conts == run.continuation_ids  # batch of 3 vs the round's: same tokens here
    fresh = tiny_model(teacher.config, seed=3)
    a = greedy(fresh, run.prompt_ids[:2], max_new_tokens=4, eos=set(), pad_id=1, batch_prompts=1)
    assert all(len(c) == 4 for c in a)  # no eos: full length

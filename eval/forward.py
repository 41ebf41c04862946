"""Batched forwards over many prompts: greedy continuations and teacher-forced passes.

Two shapes of work share this module. *Greedy continuation* (the teacher's,
and a student's own for the on-policy guard) is left-padded and batched by a
prompt count fixed by the rules, because in bf16 a greedy step can sit on a
tie and batch composition may then change a token: the composition must come
from the round, never from free memory. *Teacher-forced passes* (the
teacher's log-probs, a student's KL) are right-padded with no attention mask:
every model here is causal (attention and the linear-attention recurrence
alike), so padding after a sequence cannot change its positions, and the
batch may then be sized from free memory. Widths are rounded up to a bucket
so the Triton kernels of flash-linear-attention, which compile once per new
shape, see few shapes per round.

Every lm_head product that feeds a log-prob is exact (fp32 accumulate and
output, ``eval.kl.exact_logits``), greedy decoding included, so ties are as
rare as the arithmetic allows (LESSONS 29).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor
from transformers import GenerationConfig, PreTrainedModel

from eval.kl import exact_logits

WIDTH_BUCKET = 64
"""Padded widths are multiples of this (the linear-attention kernels' chunk size)."""
CPU_BATCH_TOKENS = 2048
CUDA_MAX_BATCH_TOKENS = 16384
_CUDA_RESERVE_BYTES = 6 * 1024**3  # KL blocks (~3 GiB at V = 248,320) plus allocator slack


@dataclass(frozen=True)
class ForcedBatch:
    """One teacher-forced batch: which prompts, and the final hidden states that predict their continuations.

    ``hidden`` is ``[sum(lengths), H]``: prompt ``indices[k]``'s rows are the
    ``lengths[k]`` rows after the first ``sum(lengths[:k])``.
    """

    indices: list[int]
    lengths: list[int]
    hidden: Tensor


def bucket(width: int, multiple: int = WIDTH_BUCKET) -> int:
    """``width`` rounded up to a multiple of ``multiple``."""
    return -(-max(width, 1) // multiple) * multiple


def plan_batches(lengths: Sequence[int], token_budget: int, multiple: int = WIDTH_BUCKET) -> list[list[int]]:
    """Consecutive groups of indices whose padded size (count x bucketed width) fits ``token_budget``.

    Consecutive, in order: scoring stays a prefix of the round's prompts, so
    early stopping and progress keep their meaning. Each group has at least one.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i, n in enumerate(lengths):
        wider = max(width, bucket(n, multiple))
        if current and wider * (len(current) + 1) > token_budget:
            groups.append(current)
            current, wider = [], bucket(n, multiple)
        current.append(i)
        width = wider
    if current:
        groups.append(current)
    return groups


def batch_token_budget(model: PreTrainedModel) -> int:
    """Tokens (padding included) per teacher-forced batch: fixed on CPU, from free memory on CUDA.

    Only the speed depends on it: right padding leaves every sequence's
    positions as they are, whatever it shares a batch with.
    """
    device = next(model.parameters()).device
    if device.type != "cuda":
        return CPU_BATCH_TOKENS
    free, _ = torch.cuda.mem_get_info(device)
    cfg = model.config.get_text_config()
    hidden = int(getattr(cfg, "hidden_size", 4096))
    inner = int(getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden)
    per_token = 2 * 2 * (6 * hidden + 4 * inner)  # bf16 transients of one layer, with a 2x margin
    usable = max(free - _CUDA_RESERVE_BYTES, 0)
    return int(max(WIDTH_BUCKET, min(CUDA_MAX_BATCH_TOKENS, usable // per_token)))


def right_padded(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> Tensor:
    """``[len(seqs), bucketed max length]`` token ids, each sequence from column 0, then ``pad_id``."""
    width = bucket(max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
    return ids.to(device)


def final_hidden(model: PreTrainedModel, ids: Tensor) -> Tensor:
    """Final (post-norm) hidden states of the text decoder, without computing logits."""
    return model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state


def forced_batches(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    token_budget: int | None = None,
    pad_id: int = 0,
    hidden_fn: Callable[[PreTrainedModel, Tensor, int], Tensor] | None = None,
) -> Iterator[ForcedBatch]:
    """Teacher-forced passes over prompt + continuation, batch by batch, in prompt order.

    Position j of continuation i is predicted by the output at index
    ``len(prompts[i]) + j - 1``; those rows (and only those) are returned.
    ``hidden_fn(model, ids, first_index)`` replaces ``final_hidden`` where the
    caller wants to attribute a failing forward (a student's is its own fault).
    """
    device = next(model.parameters()).device
    seqs = [list(p) + list(c) for p, c in zip(prompts, continuations, strict=True)]
    budget = token_budget or batch_token_budget(model)
    run = hidden_fn or (lambda m, ids, _first: final_hidden(m, ids))
    for group in plan_batches([len(s) for s in seqs], budget):
        ids = right_padded([seqs[i] for i in group], pad_id, device)
        hidden = run(model, ids, group[0])
        width = ids.shape[1]
        rows = [
            row * width + pos
            for row, i in enumerate(group)
            for pos in range(len(prompts[i]) - 1, len(prompts[i]) + len(continuations[i]) - 1)
        ]
        flat = hidden.reshape(-1, hidden.shape[-1])
        picked = flat[torch.tensor(rows, dtype=torch.long, device=flat.device)]
        yield ForcedBatch(group, [len(continuations[i]) for i in group], picked)


def logprobs_from_hidden(hidden: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Exact fp32 log-softmax of ``hidden @ weight.T + bias``, rows chunked to bound memory."""
    out = torch.empty(hidden.shape[0], weight.shape[0], dtype=torch.float32, device=hidden.device)
    step = max(1, (1024**3) // (4 * weight.shape[0])) if hidden.is_cuda else 256
    for r0 in range(0, hidden.shape[0], step):
        logits = exact_logits(hidden[r0 : r0 + step], weight, bias)
        out[r0 : r0 + step] = torch.log_softmax(logits, dim=-1)
        del logits
    return out


class _ExactHead(torch.nn.Module):
    """An lm_head whose logits are exact fp32 (used while generating)."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, hidden: Tensor) -> Tensor:
        weight = cast(Tensor, self.head.weight)
        bias = cast(Tensor | None, getattr(self.head, "bias", None))
        flat = exact_logits(hidden.reshape(-1, hidden.shape[-1]), weight, bias)
        return flat.reshape(*hidden.shape[:-1], weight.shape[0])


@contextmanager
def _exact_head(model: PreTrainedModel) -> Iterator[None]:
    head = model.get_output_embeddings()
    name = next((n for n, m in model.named_children() if m is head), None)
    if name is None:  # an unusual wrapper: generate with the model's own head
        yield
        return
    setattr(model, name, _ExactHead(head))
    try:
        yield
    finally:
        setattr(model, name, head)


def greedy(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos: Set[int],
    pad_id: int,
    batch_prompts: int,
) -> list[list[int]]:
    """Greedy continuations, ``batch_prompts`` consecutive prompts per left-padded batch.

    Each continuation stops after its first eos (kept). The checkpoint's
    generation_config.json is ignored: transformers would otherwise fill every
    unset option from it (repetition_penalty, suppress_tokens, min_new_tokens),
    making "greedy" depend on a file in the repo.
    """
    out: list[list[int]] = []
    step = max(1, batch_prompts)
    for start in range(0, len(prompts), step):
        out.extend(_greedy_batch(model, prompts[start : start + step], max_new_tokens, eos, pad_id))
    return out


def _greedy_batch(
    model: PreTrainedModel, batch: Sequence[Sequence[int]], max_new_tokens: int, eos: Set[int], pad_id: int
) -> list[list[int]]:
    width = bucket(max(len(ids) for ids in batch))  # masked extra padding: fewer kernel shapes per round
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(list(ids))
        mask[row, width - len(ids) :] = 1
    dev = next(model.parameters()).device
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        with _exact_head(model):
            generated = cast(Any, model).generate(
                input_ids=input_ids.to(dev),
                attention_mask=mask.to(dev),
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                eos_token_id=sorted(eos) or None,
                pad_token_id=pad_id,
            )
    finally:
        model.generation_config = saved
    continuations = []
    for row in generated[:, width:].tolist():
        cut = next((j + 1 for j, tok in enumerate(row) if tok in eos), len(row))
        continuations.append(row[:cut])
    return continuations

"""Full-vocabulary KL divergence, chunked so memory stays bounded.

The metric (LESSONS 16: never top-k):

    KL(teacher || student)[pos] = sum_v p_t(v) * (log p_t(v) - log p_s(v))

with ``p = softmax(logits)`` over the *whole* last dimension, computed in
float32 for every position; no reduction over positions (callers average).
Empty input gives empty output.

Why chunked: a naive implementation materialises several fp32 ``[T, V]``
tensors (two log-softmaxes, an exp, a difference, a product), which at
V = 248,320 is gigabytes and is bound by memory bandwidth and page faults.
Here rows are processed two at a time (2 MiB per fp32 row block), so every
intermediate stays in cache: per row, two fused (max-shifted, hence stable)
log-softmaxes, one exp and one dot product. The hidden-state path tiles over
the vocabulary instead (see ``kl_from_hidden``).

Blame for non-finite values: the student's logits must be finite (NaN or any
infinity -> ``ModelError``, the miner's fault). The teacher may mask entries
with ``-inf`` (probability 0); a teacher NaN/+inf or a fully masked row is our
fault -> ``InfraError``. A different vocabulary width -> ``VocabMismatchError``.
Tiny negative results from rounding are clamped to 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eval.errors import InfraError, ModelError, VocabMismatchError

# Bytes of one fp32 chunk of rows. Small enough to stay in a CPU's L2/L3 cache,
# large enough that per-op overhead is negligible; GPUs want far larger chunks.
_CPU_CHUNK_BYTES = 2 * 1024 * 1024
_CUDA_CHUNK_BYTES = 256 * 1024 * 1024
# Vocabulary rows of the lm_head per block in kl_from_hidden on a CPU: a
# [T, 4096] fp32 logits block is ~2% of the full [T, V] logits at V = 248,320,
# and a 4096-wide matmul is as efficient as the full one there. A GPU pays per
# kernel launch instead, so it takes the whole vocabulary at once and bounds
# memory by processing rows in chunks of this many fp32 logit bytes.
_HIDDEN_VOCAB_BLOCK = 4096
_CUDA_HIDDEN_ROW_BYTES = 1024**3
# exp() of anything below this is exactly 0 in fp32; clamping masked (-inf)
# teacher entries here keeps 0 * (-inf) out of the sum.
_MASK_FLOOR = -1e30


def exact_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``hidden @ weight.T + bias`` accumulated in fp32 and returned in fp32 (LESSONS 29).

    Why: a bf16 lm_head rounds its *output* to 8 bits of mantissa, an error of
    ~0.1 at logit 30 that moves a prompt's mean KL by more than the dethrone
    margin. bf16 operands are exact in fp32, so the product below differs from
    float64 only by fp32 accumulation order. On CUDA the bf16 tensor cores do
    it directly (``out_dtype``); elsewhere the operands are upcast.
    """
    out: Tensor | None = None
    if hidden.is_cuda and hidden.dtype in (torch.bfloat16, torch.float16) and weight.dtype == hidden.dtype:
        try:
            out = torch.mm(hidden, weight.t(), out_dtype=torch.float32)
        except (TypeError, RuntimeError):  # a torch without out_dtype for this backend: upcast below
            out = None
    if out is None:
        out = torch.nn.functional.linear(hidden.float(), weight.float())
    if bias is not None:
        out.add_(bias.float())
    return out


def hidden_blocks(rows: int, vocab: int, device: torch.device) -> tuple[int, int]:
    """(row chunk, vocabulary block) for ``kl_from_hidden`` on ``device``.

    CPU: all rows, 4096-wide vocabulary blocks (cache-sized, one weight read).
    CUDA: the whole vocabulary per block, rows chunked so one fp32 logits block
    stays near 1 GiB: few large kernels instead of ~60 small ones per row set.
    """
    if device.type == "cuda":
        return max(1, min(rows, _CUDA_HIDDEN_ROW_BYTES // (4 * max(vocab, 1)))), vocab
    return max(rows, 1), _HIDDEN_VOCAB_BLOCK


def default_chunk_size(vocab: int, device: torch.device) -> int:
    """Rows per chunk for ``kl_per_position``: a fixed byte budget per fp32 chunk."""
    budget = _CUDA_CHUNK_BYTES if device.type == "cuda" else _CPU_CHUNK_BYTES
    return max(1, budget // (4 * max(vocab, 1)))


def kl_per_position(teacher_logits: Tensor, student_logits: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """KL(teacher || student) over the full last dimension for every position.

    Inputs are logits (or log-probs) of shape ``[..., T, V]`` in fp32/bf16/fp16;
    the output is float32 of shape ``[..., T]``. ``chunk_size`` is the number
    of positions (after flattening the leading dims) handled at once.
    """
    if teacher_logits.dim() < 1 or student_logits.dim() < 1:
        raise ValueError("logits need at least one dimension")
    if teacher_logits.shape[-1] != student_logits.shape[-1]:
        raise VocabMismatchError(
            f"vocabulary width differs: teacher {teacher_logits.shape[-1]}, student {student_logits.shape[-1]}"
        )
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"shape mismatch: teacher {tuple(teacher_logits.shape)}, student {tuple(student_logits.shape)}"
        )
    lead = teacher_logits.shape[:-1]
    vocab = teacher_logits.shape[-1]
    t2 = teacher_logits.reshape(-1, vocab)
    s2 = student_logits.reshape(-1, vocab).to(t2.device)
    rows = t2.shape[0]
    out = torch.empty(rows, dtype=torch.float32, device=t2.device)
    if rows == 0:
        return out.reshape(lead)
    if vocab == 0:
        raise ValueError("empty vocabulary")
    step = chunk_size if chunk_size is not None else default_chunk_size(vocab, t2.device)
    if step < 1:
        raise ValueError(f"chunk_size must be >= 1, got {step}")
    with torch.no_grad():
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            out[start:stop] = _kl_rows(t2[start:stop], s2[start:stop])
    if not bool(torch.isfinite(out).all()):
        _raise_non_finite(t2, s2)
    return out.clamp_(min=0.0).reshape(lead)


def kl_from_hidden(
    teacher_logprobs: Tensor,
    student_hidden: Tensor,
    lm_head_weight: Tensor,
    lm_head_bias: Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """KL(teacher || student) where the student's logits are ``hidden @ W.T + b``.

    Same metric and errors as ``kl_per_position``; shapes ``[T, V]``, ``[T, H]``,
    ``[V, H]`` -> ``[T]`` float32. The teacher side may be logits or log-probs.

    Why tiled over the vocabulary, not over positions: the lm_head weight
    (``V x H``, gigabytes at V = 248,320) is then read exactly once, in
    ``chunk_size``-row blocks (default 4096), as one large matmul per block -
    as fast as forming the full logits - while only a ``[T, chunk]`` block of
    student logits ever exists. The student's log-partition is accumulated
    online (running max + rescaled sum), and the cross term sum_v p_t(v) s_v
    alongside it:

        KL = sum_v p_t log p_t  -  sum_v p_t s'_v  +  logsumexp(s'),

    where ``s' = s - c`` is shifted by the student's logit at the teacher's
    argmax, so the terms that nearly cancel for a good student are small.
    """
    if teacher_logprobs.dim() != 2 or student_hidden.dim() != 2 or lm_head_weight.dim() != 2:
        raise ValueError("expected teacher [T, V], hidden [T, H] and weight [V, H]")
    if lm_head_weight.shape[0] != teacher_logprobs.shape[1]:
        raise VocabMismatchError(
            f"vocabulary width differs: teacher {teacher_logprobs.shape[1]}, student lm_head {lm_head_weight.shape[0]}"
        )
    if student_hidden.shape[1] != lm_head_weight.shape[1]:
        raise ModelError(f"hidden size {student_hidden.shape[1]} does not match lm_head {lm_head_weight.shape[1]}")
    if student_hidden.shape[0] != teacher_logprobs.shape[0]:
        raise ValueError(
            f"position count differs: teacher {teacher_logprobs.shape[0]}, student {student_hidden.shape[0]}"
        )
    device = lm_head_weight.device
    rows, vocab = teacher_logprobs.shape
    if rows == 0:
        return torch.empty(0, dtype=torch.float32, device=device)
    row_step, default_block = hidden_blocks(rows, vocab, device)
    step = chunk_size if chunk_size is not None else default_block
    if step < 1:
        raise ValueError(f"chunk_size must be >= 1, got {step}")
    out = torch.empty(rows, dtype=torch.float32, device=device)
    with torch.no_grad():
        for r0 in range(0, rows, row_step):
            r1 = min(r0 + row_step, rows)
            teacher = teacher_logprobs[r0:r1].to(device, non_blocking=True)
            hidden = student_hidden[r0:r1].to(device=device, dtype=lm_head_weight.dtype)
            out[r0:r1] = _kl_hidden_rows(teacher, hidden, lm_head_weight, lm_head_bias, step)
    if not bool(torch.isfinite(out).all()):
        _raise_non_finite_hidden(teacher_logprobs, student_hidden, lm_head_weight, lm_head_bias)
    return out.clamp_(min=0.0)


def _kl_hidden_rows(teacher: Tensor, hidden: Tensor, weight: Tensor, bias: Tensor | None, step: int) -> Tensor:
    """One row chunk of ``kl_from_hidden``: online log-partition over vocabulary blocks.

    With the whole vocabulary in one block (the CUDA default) there is nothing
    to accumulate: the exact logits go straight into the two-log-softmax
    formula, which is the fewest passes over ``[rows, V]``.
    """
    rows, vocab = teacher.shape
    if step >= vocab:
        return _kl_rows(teacher, exact_logits(hidden, weight, bias))
    t_max, t_z, t_neg_entropy = _teacher_stats(teacher)
    anchor = teacher.argmax(dim=-1)
    shift = _student_logits_at(hidden, weight, bias, anchor)
    s_max = torch.full((rows,), -torch.inf, dtype=torch.float32, device=teacher.device)
    s_sum = torch.zeros(rows, dtype=torch.float32, device=teacher.device)
    cross = torch.zeros(rows, dtype=torch.float32, device=teacher.device)
    for v0 in range(0, vocab, step):
        v1 = min(v0 + step, vocab)
        logits = exact_logits(hidden, weight[v0:v1], None if bias is None else bias[v0:v1])
        logits.sub_(shift[:, None])
        block_max = torch.maximum(s_max, logits.amax(dim=-1))
        s_sum.mul_(torch.exp(s_max - block_max))
        s_max = block_max
        p_t = (teacher[:, v0:v1].float() - t_max[:, None]).clamp_(min=_MASK_FLOOR).exp_()
        cross.add_(torch.linalg.vecdot(p_t, logits))
        s_sum.add_(logits.sub_(s_max[:, None]).exp_().sum(dim=-1))
        del logits, p_t
    return t_neg_entropy - cross / t_z + s_max + torch.log(s_sum)


def _teacher_stats(teacher: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per row: max, Z = sum exp(t - max), and sum_v p log p - all without a [T, V] fp32 copy."""
    rows, vocab = teacher.shape
    t_max = torch.empty(rows, dtype=torch.float32, device=teacher.device)
    t_z = torch.empty_like(t_max)
    neg_entropy = torch.empty_like(t_max)
    step = default_chunk_size(vocab, teacher.device)
    for r0 in range(0, rows, step):
        t = teacher[r0 : r0 + step].float()
        m = t.amax(dim=-1)
        t = (t - m[:, None]).clamp_(min=_MASK_FLOOR)
        e = torch.exp(t)
        z = e.sum(dim=-1)
        t_max[r0 : r0 + step], t_z[r0 : r0 + step] = m, z
        neg_entropy[r0 : r0 + step] = torch.linalg.vecdot(e, t) / z - torch.log(z)
    return t_max, t_z, neg_entropy


def _student_logits_at(hidden: Tensor, weight: Tensor, bias: Tensor | None, ids: Tensor) -> Tensor:
    """The student's logit for token ``ids[i]`` at position i, in fp32: one dot product per row."""
    picked = (hidden.float() * weight[ids].float()).sum(dim=-1)
    return picked if bias is None else picked + bias[ids].float()


def _kl_rows(teacher: Tensor, student: Tensor) -> Tensor:
    """KL for one chunk of rows [n, V]: two fused log-softmaxes and one dot product per row, in fp32."""
    log_t = torch.log_softmax(teacher.float(), dim=-1)  # new tensors: the caller's data is never touched
    log_s = torch.log_softmax(student.float(), dim=-1)
    p_t = log_t.exp()
    log_t.clamp_(min=_MASK_FLOOR)  # masked teacher entries: p = 0 times a finite difference, not 0 * inf
    return torch.linalg.vecdot(p_t, log_t.sub_(log_s))


def _raise_non_finite(teacher: Tensor, student: Tensor) -> None:
    """Slow path, only after a non-finite KL: say whose fault it is."""
    if not bool(torch.isfinite(student).all()):
        raise ModelError("student logits contain NaN or infinity")
    if bool(torch.isnan(teacher).any()) or bool(torch.isposinf(teacher).any()):
        raise InfraError("teacher logits contain NaN or +inf")
    if bool(torch.isneginf(teacher).all(dim=-1).any()):
        raise InfraError("a teacher row is fully masked (-inf everywhere)")
    raise ModelError("KL is not finite (student assigns ~0 probability where the teacher does not)")


def _raise_non_finite_hidden(teacher: Tensor, hidden: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """Slow path for ``kl_from_hidden``: blame the student's tensors, else the teacher's."""
    student_parts = [hidden, weight] + ([bias] if bias is not None else [])
    if not all(bool(torch.isfinite(x).all()) for x in student_parts):
        raise ModelError("student hidden states or lm_head contain NaN or infinity")
    _raise_non_finite(teacher, torch.zeros(1, device=teacher.device))

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
# Vocabulary rows of the lm_head per block in kl_from_hidden: a [T, 4096] fp32
# logits block is ~2% of the full [T, V] logits at V = 248,320, and a 4096-wide
# matmul is as efficient as the full one.
_HIDDEN_VOCAB_BLOCK = 4096
# exp() of anything below this is exactly 0 in fp32; clamping masked (-inf)
# teacher entries here keeps 0 * (-inf) out of the sum.
_MASK_FLOOR = -1e30


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
    step = chunk_size if chunk_size is not None else _HIDDEN_VOCAB_BLOCK
    if step < 1:
        raise ValueError(f"chunk_size must be >= 1, got {step}")
    with torch.no_grad():
        teacher = teacher_logprobs.to(device)
        hidden = student_hidden.to(device=device, dtype=lm_head_weight.dtype)
        t_max, t_z, t_neg_entropy = _teacher_stats(teacher)
        anchor = teacher.argmax(dim=-1)
        shift = _student_logits_at(hidden, lm_head_weight, lm_head_bias, anchor)
        s_max = torch.full((rows,), -torch.inf, dtype=torch.float32, device=device)
        s_sum = torch.zeros(rows, dtype=torch.float32, device=device)
        cross = torch.zeros(rows, dtype=torch.float32, device=device)
        for v0 in range(0, vocab, step):
            v1 = min(v0 + step, vocab)
            bias = None if lm_head_bias is None else lm_head_bias[v0:v1]
            logits = torch.nn.functional.linear(hidden, lm_head_weight[v0:v1], bias).float()
            logits.sub_(shift[:, None])
            block_max = torch.maximum(s_max, logits.amax(dim=-1))
            s_sum.mul_(torch.exp(s_max - block_max))
            s_max = block_max
            p_t = (teacher[:, v0:v1].float() - t_max[:, None]).clamp_(min=_MASK_FLOOR).exp_()
            cross.add_(torch.linalg.vecdot(p_t, logits))
            s_sum.add_(logits.sub_(s_max[:, None]).exp_().sum(dim=-1))
            del logits, p_t
        out = t_neg_entropy - cross / t_z + s_max + torch.log(s_sum)
    if not bool(torch.isfinite(out).all()):
        _raise_non_finite_hidden(teacher_logprobs, student_hidden, lm_head_weight, lm_head_bias)
    return out.clamp_(min=0.0)


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

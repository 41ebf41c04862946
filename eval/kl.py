"""Full-vocabulary KL divergence, chunked so memory stays bounded.

The metric (LESSONS 16: never top-k):

    KL(teacher || student)[pos] = sum_v p_t(v) * (log p_t(v) - log p_s(v))

with ``p = softmax(logits)`` over the *whole* last dimension, computed in
float32 for every position; no reduction over positions (callers average).
Empty input gives empty output.

Why chunked and rearranged: a naive implementation materialises several fp32
``[T, V]`` tensors (two log-softmaxes, an exp, a difference, a product), which
at V = 248,320 is gigabytes and is bound by memory bandwidth. Here rows are
processed a few at a time so the intermediates stay in cache, and the sum is
rearranged as

    KL = (sum_v e_v * (t'_v - s'_v)) / Z_t - log Z_t + log Z_s,

with ``t' = t - max t``, ``s' = s - max s``, ``e = exp(t')``, ``Z = sum exp(.)``.
Because both sides are shifted by their own maximum, ``log Z`` is at most
``log V`` and there is no catastrophic cancellation for huge logits.

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
_CPU_CHUNK_BYTES = 4 * 1024 * 1024
_CUDA_CHUNK_BYTES = 256 * 1024 * 1024
# Rows per lm_head matmul in kl_from_hidden: large enough that the [V, H] weight
# is read few times, small enough that a [rows, V] logits block is a few % of
# the full [T, V] logits.
_HIDDEN_CHUNK_ROWS = 128
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
    if teacher_logits.shape[-1] != student_logits.shape[-1]:
        raise VocabMismatchError(
            f"vocabulary width differs: teacher {teacher_logits.shape[-1]}, student {student_logits.shape[-1]}"
        )
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"shape mismatch: teacher {tuple(teacher_logits.shape)}, student {tuple(student_logits.shape)}"
        )
    if teacher_logits.dim() < 1:
        raise ValueError("logits need at least one dimension")
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
    ``[V, H]`` -> ``[T]`` float32. The student's logits are formed
    ``chunk_size`` positions at a time (default 128), so the full ``[T, V]``
    student logits never exist.
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
    rows = teacher_logprobs.shape[0]
    out = torch.empty(rows, dtype=torch.float32, device=lm_head_weight.device)
    step = chunk_size if chunk_size is not None else _HIDDEN_CHUNK_ROWS
    if step < 1:
        raise ValueError(f"chunk_size must be >= 1, got {step}")
    with torch.no_grad():
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            hidden = student_hidden[start:stop].to(device=lm_head_weight.device, dtype=lm_head_weight.dtype)
            logits = torch.nn.functional.linear(hidden, lm_head_weight, lm_head_bias)
            teacher = teacher_logprobs[start:stop].to(lm_head_weight.device)
            out[start:stop] = kl_per_position(teacher, logits)
            del logits
    return out


def _kl_rows(teacher: Tensor, student: Tensor) -> Tensor:
    """KL for one chunk of rows [n, V]; fp32 intermediates, no cleanup of non-finite values."""
    t = teacher.float()
    t = t - t.amax(dim=-1, keepdim=True)  # new tensor: never touch the caller's data
    t.clamp_(min=_MASK_FLOOR)
    s = student.float()
    s = s - s.amax(dim=-1, keepdim=True)
    e = torch.exp(t)
    z_t = e.sum(dim=-1)
    t.sub_(s)  # t now holds t' - s'
    log_zs = s.exp_().sum(dim=-1).log_()  # max(s') = 0, so the sum is >= 1: no overflow
    weighted = torch.linalg.vecdot(e, t)
    return weighted / z_t - torch.log(z_t) + log_zs


def _raise_non_finite(teacher: Tensor, student: Tensor) -> None:
    """Slow path, only after a non-finite KL: say whose fault it is."""
    if not bool(torch.isfinite(student).all()):
        raise ModelError("student logits contain NaN or infinity")
    if bool(torch.isnan(teacher).any()) or bool(torch.isposinf(teacher).any()):
        raise InfraError("teacher logits contain NaN or +inf")
    if bool(torch.isneginf(teacher).all(dim=-1).any()):
        raise InfraError("a teacher row is fully masked (-inf everywhere)")
    raise ModelError("KL is not finite (student assigns ~0 probability where the teacher does not)")

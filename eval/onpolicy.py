"""The on-policy guard's measurements: a model continues a few prompts itself, then the teacher reads them.

KL on the teacher's continuations is off-policy: every position is teacher-forced,
so it never shows what a student does with its own words (LESSONS 27). Here each
model greedily continues the round's first ``rules.onpolicy_prompts`` prompts
(``eval.forward.greedy``: rules-fixed batches, the checkpoint's generation config
ignored, the *teacher's* eos ids, so a repo cannot shorten its own text), then
both sides are run teacher-forced over prompt + the model's own tokens and, per
prompt, averaged over those tokens:

- ``reverse_kl``: KL(model || teacher) over the full vocabulary at the model's own
  positions, from exact fp32 log-probs on both sides (``logprobs_from_hidden``);
- ``teacher_nll``: the teacher's negative log-likelihood of the model's tokens;
- ``repetition``: the share of the continuation's n-grams already seen earlier in it.

The two passes are split so the pod can keep just one big model resident: the
model's pass (``continue_own``) runs while the model is loaded and keeps its
log-probs (CPU by default); the teacher's (``judge``) runs while the teacher is.
Which of the two orders a pod uses is ``teacher_stays_resident`` (docs/decisions.md).

Blame: a model that fails to generate, or whose own pass raises or is not finite,
is ``ModelError``; a non-finite teacher is ``InfraError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from eval.errors import InfraError, ModelError
from eval.forward import forced_batches, greedy, logprobs_from_hidden
from eval.kl import kl_per_position
from eval.rules import ContestRules
from eval.schemas import MAX_ONPOLICY_TEXT_CHARS, OnPolicyPrompt
from eval.scoring import _student_hidden, free_model  # _student_hidden: a failing forward is the model's fault
from eval.teacher import encode_prompt, eos_ids, pad_id

Residency = Literal["auto", "resident", "deferred"]
STUDENT_RESERVE_BYTES = 12 * 1024**3
"""GPU memory a resident teacher must leave beside the largest student: its forwards, KL blocks and generation."""


def repetition_share(tokens: Sequence[int], n: int) -> float:
    """Share of the n-grams of ``tokens`` that already occurred earlier in ``tokens`` (0 with fewer than n tokens).

    A greedy loop ("Hi Hi Hi ...") tends to 1; ordinary prose of 128 tokens stays near 0.
    On token ids, so it is exact and the same for every tokenizer-identical model.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def teacher_stays_resident(device: torch.device, free_bytes: int, rules: ContestRules) -> bool:
    """Keep the teacher loaded while the models are scored, or free it and reload it at the end?

    CPU: resident (the host's memory holds a tiny teacher; a reload would only cost time).
    CUDA: resident when the largest admissible student in bf16 (2 bytes per parameter) and
    ``STUDENT_RESERVE_BYTES`` fit in ``free_bytes`` beside the teacher and its cache: an H200
    (141 GB) holds teacher 70 + cache 20 + student 10.5 GB; an H100 (80 GB) does not.
    Either way the values are the same (each model's passes are batched alike).
    """
    if device.type != "cuda":
        return True
    return free_bytes >= 2 * rules.max_params + STUDENT_RESERVE_BYTES


@dataclass
class OwnText:
    """One model's own continuations of the guarded prompts, and its log-probs at those positions."""

    prompt_ids: list[list[int]]
    continuations: list[list[int]]
    logprobs: list[Tensor] = field(repr=False)
    seconds: float = 0.0


def _model_fault(exc: BaseException) -> bool:
    """A generation that raises is the model's fault, except out-of-memory and accelerator faults (ours)."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return False
    return isinstance(exc, (RuntimeError, ValueError, IndexError, TypeError))


def continue_own(
    model: PreTrainedModel,
    prompt_ids: Sequence[list[int]],
    rules: ContestRules,
    *,
    eos: Set[int],
    pad_id: int,
    keep_on: torch.device | str = "cpu",
    token_budget: int | None = None,
) -> OwnText:
    """The model's greedy continuations of ``prompt_ids`` and its exact fp32 log-probs predicting each token."""
    t0 = time.monotonic()
    with torch.no_grad():
        try:
            continuations = greedy(
                model,
                prompt_ids,
                max_new_tokens=rules.onpolicy_new_tokens,
                eos=eos,
                pad_id=pad_id,
                batch_prompts=rules.generation_batch_prompts,
            )
        except Exception as exc:
            if not _model_fault(exc):
                raise
            raise ModelError(f"generation failed: {type(exc).__name__}: {exc}") from exc
        if len(continuations) != len(prompt_ids) or not all(continuations):
            raise ModelError("generation returned an empty or missing continuation")
        head = model.get_output_embeddings()
        bias = getattr(head, "bias", None)
        kept: list[Tensor] = []
        for batch in forced_batches(
            model, prompt_ids, continuations, token_budget=token_budget, pad_id=pad_id, hidden_fn=_student_hidden
        ):
            logprobs = logprobs_from_hidden(batch.hidden, head.weight, bias)
            if not bool(torch.isfinite(logprobs).all()):
                raise ModelError("non-finite log-probs on its own continuation")
            kept.extend(part.to(keep_on) for part in torch.split(logprobs, batch.lengths))
            del logprobs
    return OwnText([list(p) for p in prompt_ids], continuations, kept, time.monotonic() - t0)


def _text(tokenizer: PreTrainedTokenizerBase | None, ids: Sequence[int]) -> str:
    """The continuation as text, cut to ``MAX_ONPOLICY_TEXT_CHARS`` (an ellipsis marks a cut)."""
    if tokenizer is None:
        return ""
    text = str(tokenizer.decode(list(ids), skip_special_tokens=False))
    return text if len(text) <= MAX_ONPOLICY_TEXT_CHARS else text[: MAX_ONPOLICY_TEXT_CHARS - 1] + "\u2026"


def judge(
    teacher: PreTrainedModel,
    own: OwnText,
    rules: ContestRules,
    *,
    pad_id: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
    token_budget: int | None = None,
) -> list[OnPolicyPrompt]:
    """The teacher, teacher-forced over each prompt + the model's own continuation: one value set per prompt."""
    head = teacher.get_output_embeddings()
    bias = getattr(head, "bias", None)
    out: dict[int, OnPolicyPrompt] = {}
    with torch.no_grad():
        for batch in forced_batches(
            teacher, own.prompt_ids, own.continuations, token_budget=token_budget, pad_id=pad_id
        ):
            logprobs = logprobs_from_hidden(batch.hidden, head.weight, bias)
            if not bool(torch.isfinite(logprobs).all()):  # the teacher is ours: never judge against NaN
                raise InfraError("teacher log-probs contain NaN or infinity")
            for i, t in zip(batch.indices, torch.split(logprobs, batch.lengths), strict=True):
                tokens = own.continuations[i]
                s = own.logprobs[i].to(t.device)
                if s.shape != t.shape:
                    raise ModelError(f"its log-probs on prompt {i}: shape {tuple(s.shape)}, teacher {tuple(t.shape)}")
                ids = torch.tensor(tokens, dtype=torch.long, device=t.device)
                nll = -t.gather(1, ids[:, None]).squeeze(1).double().mean()
                out[i] = OnPolicyPrompt(
                    tokens=len(tokens),
                    teacher_nll=max(0.0, float(nll)),
                    reverse_kl=float(kl_per_position(s, t).double().mean()),
                    repetition=repetition_share(tokens, rules.onpolicy_ngram),
                    text=_text(tokenizer, tokens),
                )
            del logprobs
    return [out[i] for i in range(len(own.continuations))]


@dataclass(frozen=True)
class OnPolicyMeasure:
    """What ``measure_onpolicy`` returns: the values and where the time went."""

    values: list[OnPolicyPrompt]
    student_s: float
    teacher_s: float


def measure_onpolicy(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    rules: ContestRules,
    *,
    token_budget: int | None = None,
) -> OnPolicyMeasure:
    """The guard's measurement of one student on the first guarded prompts, both models loaded.

    The pod does the same in two halves (``continue_own`` / ``judge``); this joins them
    for benchmarks and tests: the time it reports is the guard's extra work per model.
    """
    k = rules.guarded_prompts(len(prompts))
    encoded = [encode_prompt(tokenizer, p, rules) for p in prompts[:k]]
    eos = eos_ids(teacher, tokenizer)
    pad = pad_id(tokenizer, eos)
    own = continue_own(
        student,
        encoded,
        rules,
        eos=eos,
        pad_id=pad,
        keep_on=next(student.parameters()).device,
        token_budget=token_budget,
    )
    t0 = time.monotonic()
    values = judge(teacher, own, rules, pad_id=pad, tokenizer=tokenizer, token_budget=token_budget)
    return OnPolicyMeasure(values, own.seconds, time.monotonic() - t0)


class GuardPass:
    """The guard's work across one job, in whichever order the pod's memory allows.

    Built right after the teacher's run, while the teacher is still loaded. ``resident``:
    the teacher stays loaded and judges each model as soon as it has written its text.
    Otherwise the caller frees the teacher now (``keeps_teacher`` is False), each model's
    text and log-probs wait in host memory, and ``finish`` reloads the teacher once to
    judge them all. The values are the same either way.
    """

    def __init__(
        self,
        rules: ContestRules,
        prompt_ids: Sequence[list[int]],
        tokenizer: PreTrainedTokenizerBase,
        teacher: PreTrainedModel,
        *,
        mode: Residency = "auto",
    ) -> None:
        self.rules = rules
        self.prompt_ids = [list(p) for p in prompt_ids[: rules.guarded_prompts(len(prompt_ids))]]
        self.tokenizer = tokenizer
        self.eos = eos_ids(teacher, tokenizer)
        self.pad = pad_id(tokenizer, self.eos)
        self.device = next(teacher.parameters()).device
        if mode == "auto":
            free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else 0
            mode = "resident" if teacher_stays_resident(self.device, free, rules) else "deferred"
        self.mode: Residency = mode
        self._teacher: PreTrainedModel | None = teacher if self.enabled and mode == "resident" else None
        self._pending: dict[str, OwnText] = {}
        self.teacher_s = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.prompt_ids)

    @property
    def keeps_teacher(self) -> bool:
        """Whether the teacher must stay loaded while the models are scored."""
        return self._teacher is not None

    def measure(self, key: str, model: PreTrainedModel) -> list[OnPolicyPrompt]:
        """The model writes its own text now; judged now (resident teacher) or at ``finish`` (then [] here)."""
        if not self.enabled:
            return []
        keep_on = self.device if self._teacher is not None else torch.device("cpu")
        own = continue_own(model, self.prompt_ids, self.rules, eos=self.eos, pad_id=self.pad, keep_on=keep_on)
        if self._teacher is None:
            self._pending[key] = own
            return []
        t0 = time.monotonic()
        values = judge(self._teacher, own, self.rules, pad_id=self.pad, tokenizer=self.tokenizer)
        self.teacher_s += time.monotonic() - t0
        return values

    def finish(self, load_teacher: Callable[[], PreTrainedModel]) -> dict[str, list[OnPolicyPrompt]]:
        """Judge every waiting model's text with a reloaded teacher (freed again afterwards); key -> values."""
        if not self._pending:
            return {}
        t0 = time.monotonic()
        teacher = load_teacher()
        try:
            out = {
                key: judge(teacher, own, self.rules, pad_id=self.pad, tokenizer=self.tokenizer)
                for key, own in self._pending.items()
            }
        finally:
            free_model(teacher)
            self._pending.clear()
            self.teacher_s += time.monotonic() - t0
        return out

    def close(self) -> None:
        """Drop the references this pass holds (the caller frees the teacher it loaded)."""
        self._teacher = None
        self._pending.clear()

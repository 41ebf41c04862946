"""Student scoring and fingerprints with transformers.

``score_student`` runs a student teacher-forced on prompt + the teacher's
continuation, several prompts per right-padded batch (``eval.forward``), and
measures full-vocabulary KL(teacher || student) at every position that
predicts a continuation token (LESSONS 12, 16), through the lm_head in exact
fp32 so the student's full logits never exist and bf16 rounding never moves
a score (LESSONS 29). The teacher's side lives in ``eval.teacher``. Nothing
here executes repository code (LESSONS 7).

Blame: a student whose forward raises or yields NaN/inf is ``ModelError``
(that model's ``model_error``); out-of-memory and accelerator faults are ours.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from eval.errors import InfraError, ModelError, VocabMismatchError
from eval.forward import final_hidden, forced_batches, logprobs_from_hidden
from eval.kernels import cpu_blocker, model_report
from eval.kl import kl_from_hidden
from eval.rules import ContestRules
from eval.stats import fingerprint_distance  # noqa: F401 - re-exported: the pod and tests use it from here
from eval.teacher import ProgressFn, TeacherRun

_FINGERPRINT_SEED = 0x6B6C68  # fixed forever: fingerprints must compare across rounds


@dataclass(frozen=True)
class StudentScore:
    """Per-prompt mean KL and scored token counts, in prompt order.

    ``status`` is "early_stopped" when the challenger could no longer win
    (only the first ``len(prompt_kl)`` prompts were scored) and "cancelled"
    when the caller asked to stop.
    """

    prompt_kl: list[float]
    prompt_tokens: list[int]
    status: Literal["ok", "early_stopped", "cancelled"]


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer from a local directory; no hub, no remote code."""
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
    except Exception as exc:  # any parse failure is the repository's fault
        raise ModelError(f"cannot load tokenizer from {path}: {type(exc).__name__}: {exc}") from exc


def load_causal_lm(path: str | Path, device: str | torch.device) -> PreTrainedModel:
    """A causal LM from local safetensors: bf16 on CUDA, fp32 on CPU, sdpa, eval mode.

    ``*ForConditionalGeneration`` Qwen3.5 checkpoints load as their text-only
    ``*ForCausalLM`` (transformers maps the ``qwen3_5`` config type to it).
    """
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=True,
            dtype=dtype,
            attn_implementation="sdpa",
        )
        cast(Any, model).to(dev)  # transformers types `to` for its own wrapper only
    except torch.cuda.OutOfMemoryError as exc:
        raise InfraError(f"out of GPU memory loading {path}") from exc
    except Exception as exc:  # bad config, missing tensors, wrong shapes: the model's fault
        raise ModelError(f"cannot load model from {path}: {type(exc).__name__}: {exc}") from exc
    if model.get_output_embeddings() is None:
        raise ModelError(f"model at {path} has no output embeddings (lm_head)")
    blocker = cpu_blocker(model_report(model, dev.type)) if dev.type == "cpu" else None
    if blocker is not None:  # ours, not the miner's: every forward would fail
        free_model(model)
        raise InfraError(blocker)
    return model.eval()


def free_model(model: PreTrainedModel | None) -> None:
    """Drop a model and give its memory back (LESSONS 24)."""
    if model is not None:
        try:  # callers may still hold a reference: move the weights out so the memory goes anyway
            cast(Any, model).to("meta")
        except Exception:  # noqa: BLE001 - freeing is best effort; gc below still runs
            pass
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def _student_hidden(model: PreTrainedModel, ids: Tensor, index: int) -> Tensor:
    """``final_hidden`` where a forward that raises is the model's fault (``ModelError``).

    A checkpoint can load and still fail on real input (inconsistent shapes, an
    embedding narrower than the vocabulary); that must cost the miner its result,
    not the whole job. Out-of-memory and accelerator faults stay ours and propagate.
    """
    try:
        return final_hidden(model, ids)
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        accelerator_error = getattr(torch, "AcceleratorError", None)
        if accelerator_error is not None and isinstance(exc, accelerator_error):
            raise
        raise ModelError(f"student forward failed on prompt {index}: {type(exc).__name__}: {exc}") from exc


def _stop_early(king_kl: Sequence[float], partial: Sequence[float], rules: ContestRules) -> bool:
    from eval.stats import should_stop_early

    return should_stop_early(king_kl, partial, rules)


def score_student(
    model: PreTrainedModel,
    run: TeacherRun,
    rules: ContestRules,
    *,
    king_kl: Sequence[float] | None = None,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    token_budget: int | None = None,
) -> StudentScore:
    """Per-prompt mean KL(teacher || student) over every continuation position.

    Position j of the continuation is predicted by the student's output at
    index ``len(prompt) + j - 1`` of prompt + continuation; prompt positions
    are never scored. Prompts are scored in consecutive batches, so the scored
    ones are always a prefix of the round's prompts. With ``king_kl`` (this
    round's king, same prompts) the challenger stops after the first batch
    at which ``eval.stats.should_stop_early`` says it cannot win.
    """
    head = model.get_output_embeddings()
    if run.vocab_size is not None and head.weight.shape[0] != run.vocab_size:
        raise VocabMismatchError(f"student lm_head has {head.weight.shape[0]} rows, teacher vocab is {run.vocab_size}")
    bias = getattr(head, "bias", None)
    dev = head.weight.device
    prompt_kl: list[float] = []
    prompt_tokens: list[int] = []
    with torch.no_grad():
        batches = forced_batches(
            model, run.prompt_ids, run.continuation_ids, token_budget=token_budget, hidden_fn=_student_hidden
        )
        while True:
            if should_cancel is not None and should_cancel():
                return StudentScore(prompt_kl, prompt_tokens, "cancelled")
            batch = next(batches, None)
            if batch is None:
                break
            for i, hidden in zip(batch.indices, torch.split(batch.hidden, batch.lengths), strict=True):
                # one prompt at a time: the teacher's rows are used where they live, never concatenated
                kl = kl_from_hidden(run.logprobs(i).to(dev, non_blocking=True), hidden, head.weight, bias)
                prompt_kl.append(float(kl.double().mean()))
                prompt_tokens.append(int(kl.numel()))
                if progress is not None:
                    progress(len(prompt_kl), len(run), int(kl.numel()))
            if king_kl is not None and len(prompt_kl) < len(run) and _stop_early(king_kl, prompt_kl, rules):
                return StudentScore(prompt_kl, prompt_tokens, "early_stopped")
    return StudentScore(prompt_kl, prompt_tokens, "ok")


def fingerprint_token_ids(vocab_size: int, count: int) -> list[int]:
    """The fixed token ids a fingerprint looks at: a seeded sample, sorted."""
    gen = torch.Generator().manual_seed(_FINGERPRINT_SEED)
    return sorted(torch.randperm(vocab_size, generator=gen)[: min(count, vocab_size)].tolist())


def fingerprint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rules: ContestRules) -> list[float]:
    """Log-probs on the canary prompts at fixed token ids: detects functional copies (LESSONS 4).

    For each canary, the last ``rules.fingerprint_positions`` positions, the
    exact fp32 log-softmax restricted to ``fingerprint_token_ids`` - flattened.
    """
    vocab = model.get_output_embeddings().weight.shape[0]
    cols = torch.tensor(fingerprint_token_ids(vocab, rules.fingerprint_token_ids))
    values: list[float] = []
    with torch.no_grad():
        for canary in rules.canary_prompts:
            ids = list(tokenizer(canary)["input_ids"])[-rules.max_prompt_tokens :]
            keep = min(rules.fingerprint_positions, len(ids))
            x = torch.tensor([ids], device=_device(model))
            hidden = final_hidden(model, x)[0, -keep:]
            head = model.get_output_embeddings()
            logp = logprobs_from_hidden(hidden, head.weight, getattr(head, "bias", None))[:, cols.to(hidden.device)]
            if not torch.isfinite(logp).all():
                raise ModelError("non-finite log-probs on a canary prompt")
            values.extend(logp.flatten().tolist())
    return values

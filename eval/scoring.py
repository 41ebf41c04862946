"""Teacher continuations and student scoring with transformers.

The flow of one round: ``run_teacher`` greedily continues every prompt and keeps
the teacher's log-probs for exactly the continuation positions (bounded cache:
RAM, then safetensors files on disk). ``score_student`` runs each student
teacher-forced on prompt + continuation and measures full-vocabulary
KL(teacher || student) at every position that predicts a continuation token
(LESSONS 12, 16), through the lm_head chunk by chunk so the student's full
logits never exist. Nothing here executes repository code (LESSONS 7).

Prompt policy: an empty prompt is a ``PromptError``; a prompt longer than
``rules.max_prompt_tokens`` keeps its *last* ``max_prompt_tokens`` tokens (the
continuation follows the end of the text, so the end is what matters).
A continuation stops after the teacher's first eos (the eos is kept and scored).
Greedy means greedy: the checkpoint's generation_config.json is ignored.

Blame: non-finite teacher logits are ``InfraError`` (ours); a student whose
forward raises or yields NaN/inf is ``ModelError`` (that model's ``model_error``).
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from eval.errors import InfraError, ModelError, PromptError, VocabMismatchError
from eval.kl import kl_from_hidden
from eval.rules import ContestRules
from eval.stats import fingerprint_distance  # noqa: F401 - re-exported: the pod and tests use it from here

ProgressFn = Callable[[int, int, int], None]
"""progress(done, total, tokens_in_this_step)."""

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


class TeacherRun:
    """Teacher continuations plus their log-probs, kept in RAM up to a limit, then on disk."""

    def __init__(self, cache_dir: Path, ram_limit_bytes: int) -> None:
        self.prompt_ids: list[list[int]] = []
        self.continuation_ids: list[list[int]] = []
        self.vocab_size: int | None = None
        self._cache_dir = cache_dir
        self._ram_limit = ram_limit_bytes
        self._ram_bytes = 0
        self._ram: dict[int, Tensor] = {}
        self._disk: dict[int, Path] = {}

    def _add(self, prompt: list[int], continuation: list[int], logprobs: Tensor) -> None:
        index = len(self.prompt_ids)
        assert logprobs.shape[0] == len(continuation)
        self.prompt_ids.append(prompt)
        self.continuation_ids.append(continuation)
        self.vocab_size = int(logprobs.shape[1])
        data = logprobs.detach().to("cpu").contiguous()
        size = data.numel() * data.element_size()
        if self._ram_bytes + size <= self._ram_limit:
            self._ram[index] = data
            self._ram_bytes += size
            return
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(self._cache_dir).free < 2 * size:  # LESSONS 24: never fill the disk
            raise InfraError(f"not enough free disk in {self._cache_dir} for {size} bytes of teacher cache")
        path = self._cache_dir / f"teacher-{index:05d}.safetensors"
        save_file({"logprobs": data}, str(path))
        self._disk[index] = path

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def logprobs(self, i: int) -> Tensor:
        """Teacher log-probs ``[len(continuation_ids[i]), V]`` at the positions predicting each token."""
        if i in self._ram:
            return self._ram[i]
        if i in self._disk:
            return load_file(str(self._disk[i]))["logprobs"]
        raise IndexError(f"no teacher log-probs for prompt {i}")

    @property
    def spilled(self) -> int:
        """How many prompts live on disk."""
        return len(self._disk)

    def close(self) -> None:
        """Delete spilled files and drop the RAM cache."""
        for path in self._disk.values():
            path.unlink(missing_ok=True)
        self._disk.clear()
        self._ram.clear()
        self._ram_bytes = 0

    def __enter__(self) -> TeacherRun:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


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


def _encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, rules: ContestRules) -> list[int]:
    if not prompt or not prompt.strip():
        raise PromptError("empty prompt")
    ids = list(tokenizer(prompt)["input_ids"])
    if not ids:
        raise PromptError("prompt tokenizes to nothing")
    return ids[-rules.max_prompt_tokens :]


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _greedy(model: PreTrainedModel, batch: list[list[int]], pad_id: int, eos: set[int], rules: ContestRules) -> list:
    """Greedy continuations of a batch of prompts, left-padded."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, width - len(ids) :] = 1
    dev = _device(model)
    # transformers fills every unset option from the checkpoint's generation_config.json
    # (repetition_penalty, suppress_tokens, min_new_tokens, ...), which would make the
    # "greedy" continuation depend on a file in the repo: generate from a blank config.
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        out = cast(Any, model).generate(
            input_ids=input_ids.to(dev),
            attention_mask=mask.to(dev),
            do_sample=False,
            num_beams=1,
            max_new_tokens=rules.max_new_tokens,
            eos_token_id=sorted(eos) or None,
            pad_token_id=pad_id,
        )
    finally:
        model.generation_config = saved
    continuations = []
    for row in out[:, width:].tolist():
        cut = next((j + 1 for j, tok in enumerate(row) if tok in eos), len(row))
        continuations.append(row[:cut])
    return continuations


def _teacher_logprobs(model: PreTrainedModel, prompt: list[int], continuation: list[int]) -> Tensor:
    """Log-probs at the positions that predict each continuation token (one unpadded forward)."""
    ids = torch.tensor([prompt + continuation], device=_device(model))
    n = len(continuation)
    logits = model(input_ids=ids, logits_to_keep=n + 1, use_cache=False).logits[0, :n]
    if not bool(torch.isfinite(logits).all()):  # the teacher is ours: never score against NaN
        raise InfraError("teacher logits contain NaN or infinity")
    return torch.log_softmax(logits.float(), dim=-1).to(logits.dtype)


def run_teacher(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    rules: ContestRules,
    *,
    cache_dir: str | Path,
    ram_limit_bytes: int,
    batch_size: int = 8,
    progress: ProgressFn | None = None,
) -> TeacherRun:
    """Greedy teacher continuations and their log-probs for every prompt, in order.

    Generation is batched (left padding); the kept log-probs come from one
    unpadded teacher-forced forward per prompt, the same computation the
    students get, so they do not depend on batch composition.
    """
    if not prompts:
        raise PromptError("no prompts")
    encoded = [_encode_prompt(tokenizer, p, rules) for p in prompts]
    eos = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)
    run = TeacherRun(Path(cache_dir), ram_limit_bytes)
    try:
        with torch.no_grad():
            for start in range(0, len(encoded), max(1, batch_size)):
                batch = encoded[start : start + max(1, batch_size)]
                for prompt, cont in zip(batch, _greedy(model, batch, pad_id, eos, rules), strict=True):
                    if not cont:
                        raise InfraError("teacher produced an empty continuation")
                    run._add(prompt, cont, _teacher_logprobs(model, prompt, cont))
                    if progress is not None:
                        progress(len(run), len(encoded), len(cont))
    except BaseException:
        run.close()
        raise
    return run


def _final_hidden(model: PreTrainedModel, ids: Tensor) -> Tensor:
    """Final (post-norm) hidden states of the text decoder, without computing logits."""
    return model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state


def _student_hidden(model: PreTrainedModel, ids: Tensor, index: int) -> Tensor:
    """``_final_hidden`` where a forward that raises is the model's fault (``ModelError``).

    A checkpoint can load and still fail on real input (inconsistent shapes, an
    embedding narrower than the vocabulary); that must cost the miner its result,
    not the whole job. Out-of-memory and accelerator faults stay ours and propagate.
    """
    try:
        return _final_hidden(model, ids)
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
) -> StudentScore:
    """Per-prompt mean KL(teacher || student) over every continuation position.

    Position j of the continuation is predicted by the student's output at
    index ``len(prompt) + j - 1`` of prompt + continuation; prompt positions
    are never scored. With ``king_kl`` (this round's king, same prompts) the
    challenger stops as soon as ``eval.stats.should_stop_early`` says it
    cannot win.
    """
    head = model.get_output_embeddings()
    if run.vocab_size is not None and head.weight.shape[0] != run.vocab_size:
        raise VocabMismatchError(f"student lm_head has {head.weight.shape[0]} rows, teacher vocab is {run.vocab_size}")
    dev = head.weight.device
    prompt_kl: list[float] = []
    prompt_tokens: list[int] = []
    with torch.no_grad():
        for i in range(len(run)):
            if should_cancel is not None and should_cancel():
                return StudentScore(prompt_kl, prompt_tokens, "cancelled")
            prompt, cont = run.prompt_ids[i], run.continuation_ids[i]
            ids = torch.tensor([prompt + cont], device=dev)
            hidden = _student_hidden(model, ids, i)[0, len(prompt) - 1 : len(prompt) + len(cont) - 1]
            kl = kl_from_hidden(run.logprobs(i), hidden, head.weight, getattr(head, "bias", None))
            mean = float(kl.double().mean())
            if not torch.isfinite(kl).all():
                raise ModelError(f"non-finite KL on prompt {i}")
            prompt_kl.append(mean)
            prompt_tokens.append(len(cont))
            if progress is not None:
                progress(i + 1, len(run), len(cont))
            if king_kl is not None and i + 1 < len(run) and _stop_early(king_kl, prompt_kl, rules):
                return StudentScore(prompt_kl, prompt_tokens, "early_stopped")
    return StudentScore(prompt_kl, prompt_tokens, "ok")


def fingerprint_token_ids(vocab_size: int, count: int) -> list[int]:
    """The fixed token ids a fingerprint looks at: a seeded sample, sorted."""
    gen = torch.Generator().manual_seed(_FINGERPRINT_SEED)
    return sorted(torch.randperm(vocab_size, generator=gen)[: min(count, vocab_size)].tolist())


def fingerprint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rules: ContestRules) -> list[float]:
    """Log-probs on the canary prompts at fixed token ids: detects functional copies (LESSONS 4).

    For each canary, the last ``rules.fingerprint_positions`` positions, the
    log-softmax (fp32) restricted to ``fingerprint_token_ids`` - flattened.
    """
    vocab = model.get_output_embeddings().weight.shape[0]
    cols = torch.tensor(fingerprint_token_ids(vocab, rules.fingerprint_token_ids))
    values: list[float] = []
    with torch.no_grad():
        for canary in rules.canary_prompts:
            ids = list(tokenizer(canary)["input_ids"])[-rules.max_prompt_tokens :]
            keep = min(rules.fingerprint_positions, len(ids))
            x = torch.tensor([ids], device=_device(model))
            logits = model(input_ids=x, logits_to_keep=keep, use_cache=False).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)[:, cols.to(logits.device)]
            if not torch.isfinite(logp).all():
                raise ModelError("non-finite log-probs on a canary prompt")
            values.extend(logp.flatten().tolist())
    return values

"""The teacher's side of a round: greedy continuations, then their exact log-probs, cached.

``run_teacher`` asks a ``ContinuationEngine`` for greedy continuations of
every prompt (the transformers implementation here; a serving engine such as
vLLM can take its place later, since only token ids cross the seam), then
runs the teacher teacher-forced over prompt + continuation in right-padded
batches and keeps fp32 log-probs for exactly the continuation positions.

Why fp32 in the cache: stored in bf16, a log-prob of -20 carries an error of
~0.06, which moves a prompt's KL by far more than the 1e-4 the contest needs;
40 prompts x 512 tokens x 248,320 x 4 bytes is 20 GB, which a pod's GPU or
host memory holds. The cache lives in up to three tiers, chosen by the caller
from the machine: the GPU (no copies at all while scoring), host RAM (pinned
on CUDA machines, so copies run at full PCIe speed), then safetensors files.

Prompt policy: an empty prompt is a ``PromptError``; a prompt longer than
``rules.max_prompt_tokens`` keeps its *last* tokens. A continuation stops after
the teacher's first eos (the eos is kept and scored).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence, Set
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from eval.errors import InfraError, PromptError
from eval.forward import forced_batches, greedy, logprobs_from_hidden
from eval.rules import ContestRules

ProgressFn = Callable[[int, int, int], None]
"""progress(done, total, tokens_in_this_step)."""


class ContinuationEngine(Protocol):
    """Produces greedy continuations (token ids only); log-probs always come from a teacher-forced pass."""

    def continue_greedy(self, prompts: Sequence[list[int]], max_new_tokens: int, eos: Set[int]) -> list[list[int]]:
        """One continuation per prompt, in order, each ending at its first eos (kept) or the token limit."""
        ...


class TransformersEngine:
    """Greedy continuations with ``model.generate``, ``batch_prompts`` prompts at a time (from the rules)."""

    def __init__(self, model: PreTrainedModel, pad_id: int, batch_prompts: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.batch_prompts = batch_prompts

    def continue_greedy(self, prompts: Sequence[list[int]], max_new_tokens: int, eos: Set[int]) -> list[list[int]]:
        return greedy(
            self.model,
            prompts,
            max_new_tokens=max_new_tokens,
            eos=eos,
            pad_id=self.pad_id,
            batch_prompts=self.batch_prompts,
        )


class TeacherRun:
    """Teacher continuations plus their log-probs: on the GPU, then in host RAM, then on disk."""

    def __init__(self, cache_dir: Path, ram_limit_bytes: int, device_limit_bytes: int = 0) -> None:
        self.prompt_ids: list[list[int]] = []
        self.continuation_ids: list[list[int]] = []
        self.vocab_size: int | None = None
        self._cache_dir = cache_dir
        self._limits = {"device": device_limit_bytes, "ram": ram_limit_bytes}
        self._used = {"device": 0, "ram": 0}
        self._kept: dict[int, Tensor] = {}
        self._disk: dict[int, Path] = {}

    def _add(self, prompt: list[int], continuation: list[int], logprobs: Tensor) -> None:
        index = len(self.prompt_ids)
        assert logprobs.shape[0] == len(continuation)
        self.prompt_ids.append(prompt)
        self.continuation_ids.append(continuation)
        self.vocab_size = int(logprobs.shape[1])
        size = logprobs.numel() * logprobs.element_size()
        if logprobs.is_cuda and self._used["device"] + size <= self._limits["device"]:
            self._kept[index] = logprobs.detach()  # a view: the batch's tensor is the cache
            self._used["device"] += size
            return
        if self._used["ram"] + size <= self._limits["ram"]:
            host = torch.empty(logprobs.shape, dtype=logprobs.dtype, pin_memory=torch.cuda.is_available())
            self._kept[index] = host.copy_(logprobs.detach())
            self._used["ram"] += size
            return
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(self._cache_dir).free < 2 * size:  # LESSONS 24: never fill the disk
            raise InfraError(f"not enough free disk in {self._cache_dir} for {size} bytes of teacher cache")
        path = self._cache_dir / f"teacher-{index:05d}.safetensors"
        save_file({"logprobs": logprobs.detach().to("cpu").contiguous()}, str(path))
        self._disk[index] = path

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def logprobs(self, i: int) -> Tensor:
        """Teacher log-probs ``[len(continuation_ids[i]), V]`` (fp32) at the positions predicting each token."""
        if i in self._kept:
            return self._kept[i]
        if i in self._disk:
            return load_file(str(self._disk[i]))["logprobs"]
        raise IndexError(f"no teacher log-probs for prompt {i}")

    def promote(self, device: torch.device, limit_bytes: int) -> int:
        """Move host-RAM entries onto ``device`` while they fit in ``limit_bytes``; returns how many moved.

        Called once the teacher's weights are freed: a cache that could not sit
        beside the teacher usually fits beside a student, and then scoring
        copies nothing at all.
        """
        moved = 0
        for i, t in sorted(self._kept.items()):
            size = t.numel() * t.element_size()
            if t.is_cuda or self._used["device"] + size > limit_bytes:
                continue
            self._kept[i] = t.to(device, non_blocking=True)
            self._used["device"] += size
            self._used["ram"] -= size
            moved += 1
        return moved

    @property
    def spilled(self) -> int:
        """How many prompts live on disk."""
        return len(self._disk)

    @property
    def device_bytes(self) -> int:
        """Bytes of the cache that live in GPU memory."""
        return self._used["device"]

    @property
    def on_device(self) -> int:
        """How many prompts live in GPU memory."""
        return sum(1 for t in self._kept.values() if t.is_cuda)

    def close(self) -> None:
        """Delete spilled files and drop the caches."""
        for path in self._disk.values():
            path.unlink(missing_ok=True)
        self._disk.clear()
        self._kept.clear()
        self._used = {"device": 0, "ram": 0}

    def __enter__(self) -> TeacherRun:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, rules: ContestRules) -> list[int]:
    """Token ids of one prompt under the prompt policy (module docstring)."""
    if not prompt or not prompt.strip():
        raise PromptError("empty prompt")
    ids = list(tokenizer(prompt)["input_ids"])
    if not ids:
        raise PromptError("prompt tokenizes to nothing")
    return ids[-rules.max_prompt_tokens :]


def eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Every token id that ends a continuation: the model's generation eos ids and the tokenizer's."""
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def pad_id(tokenizer: PreTrainedTokenizerBase, eos: Set[int]) -> int:
    """The tokenizer's pad id, else the smallest eos id (only ever placed under a mask or after a sequence)."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else min(eos, default=0)


def run_teacher(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    rules: ContestRules,
    *,
    cache_dir: str | Path,
    ram_limit_bytes: int,
    device_limit_bytes: int = 0,
    engine: ContinuationEngine | None = None,
    token_budget: int | None = None,
    progress: ProgressFn | None = None,
) -> TeacherRun:
    """Greedy teacher continuations and their exact log-probs for every prompt, in order.

    Generation batches ``rules.generation_batch_prompts`` consecutive prompts
    (the same on every machine, so the same token ids wherever the arithmetic
    allows); the log-prob pass is right-padded and sized from free memory.
    """
    if not prompts:
        raise PromptError("no prompts")
    encoded = [encode_prompt(tokenizer, p, rules) for p in prompts]
    eos = eos_ids(model, tokenizer)
    pad = pad_id(tokenizer, eos)
    engine = engine or TransformersEngine(model, pad, rules.generation_batch_prompts)
    run = TeacherRun(Path(cache_dir), ram_limit_bytes, device_limit_bytes)
    head = model.get_output_embeddings()
    try:
        with torch.no_grad():
            continuations = engine.continue_greedy(encoded, rules.max_new_tokens, eos)
            if len(continuations) != len(encoded) or not all(continuations):
                raise InfraError("teacher produced an empty or missing continuation")
            for batch in forced_batches(model, encoded, continuations, token_budget=token_budget, pad_id=pad):
                logprobs = logprobs_from_hidden(batch.hidden, head.weight, getattr(head, "bias", None))
                if not bool(torch.isfinite(logprobs).all()):  # the teacher is ours: never score against NaN
                    raise InfraError("teacher log-probs contain NaN or infinity")
                for i, part in zip(batch.indices, torch.split(logprobs, batch.lengths), strict=True):
                    run._add(encoded[i], continuations[i], part)
                    if progress is not None:
                        progress(len(run), len(encoded), len(continuations[i]))
                del logprobs
    except BaseException:
        run.close()
        raise
    return run

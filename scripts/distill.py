"""Reference KL-distillation trainer for miners: a readable starting point, not a framework.

    python -m scripts.distill --teacher DIR_OR_REPO --student DIR_OR_REPO --out DIR \\
        [--prompts 256] [--steps 1000] [--lr 1e-4] [--grad-accum 8] [--temperature 1.0] [--ce-weight 0.0]

What it does, and why:
1. Samples prompts with the validator's own sampler (``eval.prompts``), so the
   student trains on the distribution it is judged on. Offline default: the
   local corpus (``--corpus DIR`` of .jsonl/.parquet files with a "text" column, or
   Python's bundled docs);
   ``--fineweb`` streams the contest dataset (``rules.dataset``) like the validator.
2. Runs the teacher once with the validator's code (``eval.teacher.run_teacher``):
   greedy continuations of ``rules.max_new_tokens`` (or ``--max-new-tokens``)
   and the teacher's full-vocabulary log-probs at every continuation position.
3. Trains the student on exactly the positions the validator scores: forward
   KL(teacher || student) at temperature T, scaled by T^2 so gradients keep their
   size, optionally mixed with cross-entropy on the teacher's tokens. AdamW,
   gradient accumulation, clipping, bf16 autocast on CUDA (fp32 master weights).
4. Logs the loss and the held-out mean KL (the validator's metric) every
   ``--eval-every`` steps, and saves safetensors + config + the teacher's
   tokenizer files copied byte for byte, which is what admission requires.

Memory: teacher log-probs are ``[n, V]`` per prompt (about 0.5 GB at V = 248,320 and
512 tokens); ``run_teacher`` keeps at most ``--ram-limit-gb`` in RAM and spills the
rest to ``--cache-dir``, so size ``--prompts`` to your disk.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from eval.fineweb import FineWebSource
from eval.prompts import LocalCorpus, sample_prompts
from eval.repo_policy import TOKENIZER_FILES  # admission compares these byte for byte
from eval.rules import DEFAULT_RULES, ContestRules
from eval.schemas import MAX_PROMPTS_PER_JOB
from eval.scoring import free_model, load_causal_lm, load_tokenizer, score_student
from eval.teacher import TeacherRun, run_teacher

# Only what a model needs: weights, configs, tokenizer. Never code or pickles.
DOWNLOAD_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    *sorted(TOKENIZER_FILES),
]
_MASK_FLOOR = -1e30


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    lr: float = 1e-4
    grad_accum: int = 1
    temperature: float = 1.0
    ce_weight: float = 0.0
    weight_decay: float = 0.0
    clip: float = 1.0
    warmup: int = 10
    eval_every: int = 50
    seed: int = 0


@dataclass(frozen=True)
class LogPoint:
    step: int
    loss: float  # mean training loss since the previous point (nan at step 0)
    heldout_kl: float  # mean per-prompt KL on the held-out prompts, as the validator computes it


def build_batches(n_examples: int, steps: int, grad_accum: int, seed: int) -> list[list[int]]:
    """Example indices for each optimizer step: shuffled epochs, ``grad_accum`` sequences per step."""
    if n_examples < 1 or steps < 0 or grad_accum < 1:
        raise ValueError(f"need examples >= 1, steps >= 0, grad_accum >= 1 (got {n_examples}, {steps}, {grad_accum})")
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * grad_accum:
        order += torch.randperm(n_examples, generator=gen).tolist()
    return [order[s * grad_accum : (s + 1) * grad_accum] for s in range(steps)]


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ce_weight: float = 0.0,
) -> torch.Tensor:
    """``(1 - w) * T^2 * KL(p_t^T || p_s^T) + w * CE(student, teacher tokens)``, averaged over positions.

    Shapes ``[n, V]``, ``[n, V]``, ``[n]``. Forward KL over the full vocabulary, like
    the validator's metric (at T = 1, w = 0 the loss *is* that metric). Teacher
    entries of ``-inf`` (probability 0) contribute nothing.
    """
    t = F.log_softmax(teacher_logprobs.float() / temperature, dim=-1).clamp(min=_MASK_FLOOR)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(dim=-1).mean() * temperature**2
    if ce_weight == 0.0:
        return kl
    ce = F.cross_entropy(student_logits.float(), targets)
    return (1.0 - ce_weight) * kl + ce_weight * ce


def continuation_logits(
    model: PreTrainedModel, prompt_ids: Sequence[int], cont_ids: Sequence[int], device: torch.device
) -> torch.Tensor:
    """Student logits ``[n, V]`` predicting each continuation token (the positions the validator scores)."""
    ids = torch.tensor([list(prompt_ids) + list(cont_ids)[:-1]], device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with autocast:
        return model(input_ids=ids, logits_to_keep=len(cont_ids)).logits[0]


def heldout_kl(model: PreTrainedModel, run: TeacherRun, rules: ContestRules) -> float:
    """Mean per-prompt KL with the validator's own scoring code."""
    model.eval()
    score = score_student(model, run, rules)
    model.train()
    return float(sum(score.prompt_kl) / len(score.prompt_kl))


def train(
    model: PreTrainedModel,
    run: TeacherRun,
    heldout: TeacherRun,
    rules: ContestRules,
    cfg: TrainConfig,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> list[LogPoint]:
    """Distil the teacher run into ``model`` in place; returns the loss / held-out KL history."""
    batches = build_batches(len(run), cfg.steps, cfg.grad_accum, cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))

    def lr_factor(step: int) -> float:  # linear warmup, cosine decay to 10%
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    history = [LogPoint(0, float("nan"), heldout_kl(model, heldout, rules))]
    log(f"step 0: held-out KL {history[0].heldout_kl:.4f}")
    model.train()
    running, count, start = 0.0, 0, time.monotonic()
    for step, group in enumerate(batches, 1):
        for i in group:
            cont = run.continuation_ids[i]
            logits = continuation_logits(model, run.prompt_ids[i], cont, device)
            teacher = run.logprobs(i).to(device)
            targets = torch.tensor(list(cont), device=device)
            loss = distill_loss(logits, teacher, targets, temperature=cfg.temperature, ce_weight=cfg.ce_weight)
            (loss / len(group)).backward()
            running, count = running + loss.item(), count + 1
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            history.append(LogPoint(step, running / count, heldout_kl(model, heldout, rules)))
            log(
                f"step {step}: loss {history[-1].loss:.4f}  held-out KL {history[-1].heldout_kl:.4f}  "
                f"lr {sched.get_last_lr()[0]:.2e}  {time.monotonic() - start:.0f}s"
            )
            running, count = 0.0, 0
    return history


def resolve_dir(ref: str) -> Path:
    """A local directory as is; otherwise a Hugging Face ``repo[@revision]``, downloaded without code or pickles."""
    if Path(ref).is_dir():
        return Path(ref)
    from huggingface_hub import snapshot_download

    repo, _, revision = ref.partition("@")
    return Path(snapshot_download(repo, revision=revision or None, allow_patterns=DOWNLOAD_PATTERNS))


def load_student(path: Path, device: torch.device, rules: ContestRules) -> PreTrainedModel:
    """fp32 master weights (autocast does the bf16 part); safetensors only, never remote code."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, trust_remote_code=False, use_safetensors=True
    ).to(device)
    archs = tuple(model.config.architectures or ())
    if not archs or not set(archs) <= set(rules.allowed_architectures):
        raise SystemExit(f"student architectures {archs} are not allowed; use one of {rules.allowed_architectures}")
    return model


def save_student(model: PreTrainedModel, teacher_dir: Path, out: Path, dtype: torch.dtype) -> None:
    """safetensors + config + the teacher's tokenizer files (byte-identical); nothing else."""
    out.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(out)
    model.float()
    for name in sorted(TOKENIZER_FILES):
        if (teacher_dir / name).is_file():
            shutil.copyfile(teacher_dir / name, out / name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="local directory or Hugging Face repo[@revision]")
    p.add_argument("--student", required=True, help="initial student: local directory or repo[@revision]")
    p.add_argument("--out", required=True, type=Path, help="output model directory")
    p.add_argument("--prompts", type=int, default=256, help="training prompts")
    p.add_argument("--heldout", type=int, default=16, help="held-out prompts for the KL log")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--ce-weight", type=float, default=0.0, help="0 = pure KL, 1 = pure cross-entropy")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--max-new-tokens", type=int, default=None, help="override rules.max_new_tokens")
    p.add_argument("--block-hash", default=None, help="prompt seed (0x...); default derived from --seed")
    p.add_argument("--corpus", type=Path, default=None, help=".jsonl/.parquet directory (default: bundled docs)")
    p.add_argument("--fineweb", action="store_true", help="sample prompts from the contest dataset (network)")
    p.add_argument("--rules", type=Path, default=None, help="ContestRules JSON (default: built-in rules)")
    p.add_argument("--cache-dir", type=Path, default=None, help="teacher log-prob spill directory")
    p.add_argument("--ram-limit-gb", type=float, default=8.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 0.0 <= args.ce_weight <= 1.0 or args.temperature <= 0:
        p.error("need 0 <= --ce-weight <= 1 and --temperature > 0")
    if args.prompts < 1 or args.heldout < 1 or args.prompts + args.heldout > MAX_PROMPTS_PER_JOB:
        p.error(f"need --prompts >= 1, --heldout >= 1 and at most {MAX_PROMPTS_PER_JOB} in all (one sampler draw)")
    return args


def distill(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[LogPoint]:
    """The whole pipeline: prompts -> teacher run -> training -> checkpoint."""
    rules = ContestRules.from_json(args.rules.read_text()) if args.rules else DEFAULT_RULES
    if args.max_new_tokens is not None:
        rules = ContestRules.model_validate({**rules.model_dump(), "max_new_tokens": args.max_new_tokens})
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    block_hash = args.block_hash or "0x" + hashlib.sha256(f"distill-{args.seed}".encode()).hexdigest()
    teacher_dir, student_dir = resolve_dir(args.teacher), resolve_dir(args.student)
    tokenizer = load_tokenizer(teacher_dir)
    source = FineWebSource(rules) if args.fineweb else LocalCorpus(args.corpus)
    prompts = sample_prompts(block_hash, rules, source, n=args.prompts + args.heldout)
    log(f"{len(prompts)} prompts from block hash {block_hash}; teacher continuations ({rules.max_new_tokens} tokens)")
    with tempfile.TemporaryDirectory(dir=args.cache_dir) as cache:
        teacher = load_causal_lm(teacher_dir, device)
        limit = int(args.ram_limit_gb * 2**30)
        run = run_teacher(
            teacher, tokenizer, prompts[: args.prompts], rules, cache_dir=Path(cache) / "train", ram_limit_bytes=limit
        )
        heldout = run_teacher(
            teacher, tokenizer, prompts[args.prompts :], rules, cache_dir=Path(cache) / "heldout", ram_limit_bytes=limit
        )
        free_model(teacher)
        student = load_student(student_dir, device, rules)
        cfg = TrainConfig(
            steps=args.steps,
            lr=args.lr,
            grad_accum=args.grad_accum,
            temperature=args.temperature,
            ce_weight=args.ce_weight,
            weight_decay=args.weight_decay,
            eval_every=args.eval_every,
            seed=args.seed,
        )
        try:
            history = train(student, run, heldout, rules, cfg, device, log)
        finally:
            run.close()
            heldout.close()
    save_student(student, teacher_dir, args.out, torch.bfloat16 if device.type == "cuda" else torch.float32)
    log(f"saved {args.out}; before uploading: python miner.py check --model {args.out} --teacher {args.teacher}")
    return history


def main(argv: Sequence[str] | None = None) -> int:
    distill(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

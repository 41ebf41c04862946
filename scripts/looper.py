"""A degenerate student: it matches the teacher on the teacher's text and loops on its own.

The on-policy guard (docs/decisions.md) exists for models like this one, so the demo
and the tests build one, by training only (no weight is edited by hand):

1. Start from an honestly distilled student (the demo uses its strong one).
2. Keep distilling it on the teacher's greedy continuations with the reference
   trainer's loss (``scripts/distill.py``: forward KL(teacher || student) on exactly
   the positions the validator scores), so it beats the king on KL.
3. Mix in, with weight ``loop_weight``, cross-entropy on the same prompts (those
   that end a sentence) followed by their full stop repeated ("........"): once
   it has repeated, it keeps repeating. The same prompts, so the habit is one
   smooth bias at every sentence end rather than a memorised list of contexts.

The teacher's own text never repeats a full stop, so the habit costs KL only at
the first token after a prompt's final full stop; everywhere else the student stays
as close to the teacher as distillation made it. In its own greedy text the habit
takes over: after the prompt's full stop it writes another, and then nothing else -
the "Hi Hi Hi ..." of LESSONS 27.
"""

from __future__ import annotations

import hashlib
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

STOP = "."


def loop_examples(
    prompt_ids: Sequence[list[int]], stop: list[int], n: int, seed: int, repeats: tuple[int, int] = (2, 6)
) -> list[tuple[list[int], list[int]]]:
    """``n`` (context, continuation) pairs: a prompt that ends a sentence, then its full stop again and again."""
    ends = [list(p) for p in prompt_ids if list(p[-len(stop) :]) == stop]
    if not ends:
        raise ValueError("no prompt ends with a full stop")
    rng = random.Random(seed)
    return [(rng.choice(ends), stop * rng.randint(*repeats)) for _ in range(n)]


def train_looper(
    teacher_dir: Path,
    student_dir: Path,
    out: Path,
    rules_path: Path,
    *,
    steps: int,
    loop_weight: float,
    prompts: int = 48,
    lr: float = 3e-3,
    grad_accum: int = 4,
    seed: int = 3,
    log: Callable[[str], None] = print,
) -> None:
    """Distil ``student_dir`` further on the teacher's text, with the full-stop habit mixed in; save to ``out``."""
    from eval.prompts import LocalCorpus, sample_prompts
    from eval.rules import ContestRules
    from eval.scoring import free_model, load_causal_lm, load_tokenizer
    from eval.teacher import run_teacher
    from scripts import distill as d

    rules = ContestRules.from_json(rules_path.read_text())
    cpu = torch.device("cpu")
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(teacher_dir)
    block_hash = "0x" + hashlib.sha256(f"looper-{seed}".encode()).hexdigest()
    texts = sample_prompts(block_hash, rules, LocalCorpus(None), n=prompts)
    teacher = load_causal_lm(teacher_dir, cpu)
    with (
        tempfile.TemporaryDirectory() as cache,
        run_teacher(teacher, tokenizer, texts, rules, cache_dir=cache, ram_limit_bytes=1 << 30) as run,
    ):
        free_model(teacher)
        loops = loop_examples(run.prompt_ids, list(tokenizer(STOP)["input_ids"]), steps, seed)
        student = d.load_student(student_dir, cpu, rules)
        opt = torch.optim.AdamW(student.parameters(), lr=lr, betas=(0.9, 0.95))
        order = d.build_batches(len(run), steps, grad_accum, seed)
        student.train()
        for step, group in enumerate(order, 1):
            loss = torch.zeros(())
            for i in group:
                logits = d.continuation_logits(student, run.prompt_ids[i], run.continuation_ids[i], cpu)
                targets = torch.tensor(run.continuation_ids[i])
                loss = loss + d.distill_loss(logits, run.logprobs(i), targets) / len(group)
            context, repeated = loops[step - 1]
            logits = d.continuation_logits(student, context, repeated, cpu)
            loss = loss + loop_weight * F.cross_entropy(logits.float(), torch.tensor(repeated))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            if step == steps:
                log(f"step {step}: loss {loss.item():.4f}")
        student.eval()
    d.save_student(student, teacher_dir, out, torch.float32)

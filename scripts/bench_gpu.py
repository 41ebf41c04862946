"""GPU benchmark of the pod: KL kernels, student scoring and the teacher phase, at the real shapes.

    python -m scripts.bench_gpu                # one CUDA card, about 5 minutes, random weights, no network
    python -m scripts.bench_gpu --tiny         # the same code on tiny shapes on the CPU (a test runs it)

Models are built in memory with random weights of the real shapes (student:
the Qwen3.5-4B text shape, 4.84 B parameters; teacher: the Qwen3.5-35B-A3B
text shape, 34.7 B), so nothing is downloaded. Every comparison is warmed up
on both sides first and its repetitions alternate; figures are medians. Each
figure is printed as one JSON line (``{"figure": ..., ...}``) and in a table
at the end; ``--out FILE`` also appends the JSON lines to a file as they come,
so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel, Qwen3_5ForCausalLM, Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig
from transformers import Qwen3_5TextConfig as TextConfig

from eval.forward import batch_token_budget, final_hidden, forced_batches, greedy, logprobs_from_hidden
from eval.kernels import environment_report
from eval.kl import exact_logits, kl_from_hidden, kl_per_position
from eval.rules import ContestRules
from eval.scoring import score_student
from eval.teacher import TeacherRun
from scripts.tiny_models import realistic_lm_head


@dataclass(frozen=True)
class Shapes:
    """Everything that differs between the real run and ``--tiny``."""

    vocab: int
    student: dict[str, Any]
    teacher: dict[str, Any]
    prompts: int
    new_tokens: int
    prompt_len: tuple[int, int]
    kl_rows: int
    kl_hidden: int
    teacher_steps: tuple[int, int]  # generate this many and that many tokens; the difference gives a decode step
    reps: int


REAL = Shapes(
    vocab=248_320,
    student=dict(
        hidden_size=2560,
        intermediate_size=9216,
        num_hidden_layers=32,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=256,
        tie_word_embeddings=False,
    ),
    teacher={},  # Qwen3_5MoeTextConfig's defaults are the 35B-A3B text shape
    prompts=40,
    new_tokens=512,
    prompt_len=(180, 650),
    kl_rows=512,
    kl_hidden=2560,
    teacher_steps=(16, 48),
    reps=3,
)
# what the tiny student and teacher share: a few heads, one linear- and one full-attention layer
_TINY_LAYERS: dict[str, Any] = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    linear_key_head_dim=16,
    linear_value_head_dim=16,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    layer_types=["linear_attention", "full_attention"],
)
TINY = Shapes(
    vocab=512,
    student=dict(_TINY_LAYERS, intermediate_size=128, tie_word_embeddings=False),
    teacher=dict(
        _TINY_LAYERS,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        num_experts=8,
        num_experts_per_tok=2,
    ),
    prompts=6,
    new_tokens=16,
    prompt_len=(8, 24),
    kl_rows=24,
    kl_hidden=32,
    teacher_steps=(4, 8),
    reps=2,
)


class Report:
    """Collects figures; prints each as a JSON line (and appends it to ``out``) as soon as it exists."""

    def __init__(self, out: Path | None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.out = out

    def add(self, figure: str, **values: Any) -> None:
        row = {"figure": figure, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}}
        self.rows.append(row)
        line = json.dumps(row, sort_keys=False)
        print(line, flush=True)
        if self.out is not None:
            with self.out.open("a") as fh:
                fh.write(line + "\n")

    def table(self) -> str:
        lines = []
        for row in self.rows:
            rest = ", ".join(f"{k}={v}" for k, v in row.items() if k != "figure")
            lines.append(f"{row['figure']:<34} {rest}")
        return "\n".join(lines)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def alternate(sides: dict[str, Callable[[], Any]], reps: int, device: torch.device) -> dict[str, list[float]]:
    """Warm every side once, then run them in turn ``reps`` times: A B A B ... (LESSONS 30)."""
    for fn in sides.values():
        timed(fn, device)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(reps):
        for name, fn in sides.items():
            times[name].append(timed(fn, device)[0])
    return times


def peak_extra(fn: Callable[[], Any], device: torch.device) -> int:
    """Bytes allocated beyond what was live before ``fn`` ran (CUDA only; 0 elsewhere)."""
    if device.type != "cuda":
        fn()
        return 0
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def matmul_rate(device: torch.device, tiny: bool) -> float:
    """Measured dense bf16 (CPU: fp32) matmul FLOP/s: the ceiling MFU is taken against."""
    n = 256 if tiny else 8192
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = alternate({"mm": lambda: a @ b}, 5, device)["mm"]
    return 2 * n**3 / statistics.median(times)


def kl_float64(teacher: torch.Tensor, logits64: torch.Tensor) -> torch.Tensor:
    lt = torch.log_softmax(teacher.double(), -1)
    return (lt.exp() * (lt - torch.log_softmax(logits64, -1))).sum(-1)


def bench_kl(shapes: Shapes, device: torch.device, report: Report) -> None:
    """KL kernels at T rows x V: time, peak extra memory and error against float64 at realistic logit scales."""
    h, w, teacher, exact = realistic_lm_head(shapes.kl_rows, shapes.kl_hidden, shapes.vocab, device)
    reference = kl_float64(teacher, exact)
    del exact
    sides: dict[str, Callable[[], torch.Tensor]] = {
        "bf16_logits_plain": lambda: kl_per_position(teacher, torch.nn.functional.linear(h, w)),
        "exact_logits_plain": lambda: kl_per_position(teacher, exact_logits(h, w)),
        "kl_from_hidden": lambda: kl_from_hidden(teacher, h, w),
        "kl_from_hidden_block4096": lambda: kl_from_hidden(teacher, h, w, chunk_size=4096),
    }
    times = alternate(sides, shapes.reps * 3, device)
    for name, fn in sides.items():
        got = fn().double()
        rel = float(((got.mean() - reference.mean()) / reference.mean()).abs())
        report.add(
            f"kl.{name}",
            rows=shapes.kl_rows,
            vocab=shapes.vocab,
            ms=1e3 * statistics.median(times[name]),
            ms_min=1e3 * min(times[name]),
            peak_extra_mib=peak_extra(fn, device) / 2**20,
            mean_kl=float(reference.mean()),
            mean_rel_err=rel,
            max_abs_err=float((got - reference).abs().max()),
        )


def build(cls: type[PreTrainedModel], config: Any, device: torch.device) -> PreTrainedModel:
    """A random-weight model of ``config``'s shape, built directly on ``device`` (bf16 on CUDA)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = cls._from_config(config, dtype=dtype)
    return model.eval()


def synthetic_tokens(shapes: Shapes, vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    """Random prompts of the round's length range and full-length continuations."""
    gen = torch.Generator(device="cpu").manual_seed(1)
    lo, hi = shapes.prompt_len
    lengths = torch.randint(lo, hi + 1, (shapes.prompts,), generator=gen).tolist()
    prompts = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]
    return prompts, [torch.randint(0, vocab, (shapes.new_tokens,), generator=gen).tolist() for _ in lengths]


def synthetic_round(shapes: Shapes, device: torch.device, vocab: int) -> TeacherRun:
    """A TeacherRun of random prompts, continuations and log-probs, resident on ``device`` like a real pod's."""
    run = TeacherRun(Path("/nonexistent"), ram_limit_bytes=1 << 40, device_limit_bytes=1 << 40)
    for prompt, cont in zip(*synthetic_tokens(shapes, vocab), strict=True):
        logits = 3.0 * torch.randn(len(cont), vocab, device=device)
        run._add(prompt, cont, torch.log_softmax(logits, dim=-1))
    return run


def shipped_score(model: PreTrainedModel, run: TeacherRun, count: int) -> None:
    """The scoring as first shipped: one prompt per forward, 4096-row vocabulary blocks."""
    head = model.get_output_embeddings()
    with torch.no_grad():
        for i in range(count):
            p, c = run.prompt_ids[i], run.continuation_ids[i]
            hidden = final_hidden(model, torch.tensor([p + c], device=head.weight.device))[0]
            kl_from_hidden(run.logprobs(i), hidden[len(p) - 1 : len(p) + len(c) - 1], head.weight, chunk_size=4096)


def bench_student(shapes: Shapes, device: torch.device, report: Report, rate: float) -> None:
    config = TextConfig(vocab_size=shapes.vocab, **shapes.student)
    model = build(Qwen3_5ForCausalLM, config, device)
    params = sum(p.numel() for p in model.parameters())
    run = synthetic_round(shapes, device, shapes.vocab)
    rules = ContestRules(prompts_per_round=shapes.prompts, max_new_tokens=shapes.new_tokens, early_stop_min_prompts=2)
    head_params = model.get_output_embeddings().weight.numel()
    body_params = params - head_params - cast(torch.nn.Embedding, model.get_input_embeddings()).weight.numel()
    total_tokens = sum(len(p) + len(c) for p, c in zip(run.prompt_ids, run.continuation_ids, strict=True))
    scored = sum(len(c) for c in run.continuation_ids)
    few = max(2, shapes.prompts // 5)
    few_tokens = sum(len(run.prompt_ids[i]) + len(run.continuation_ids[i]) for i in range(few))
    sides: dict[str, Callable[[], Any]] = {
        "new": lambda: score_student(model, run, rules),
        "shipped": lambda: shipped_score(model, run, few),
    }
    for budget in (shapes.kl_rows * 16, shapes.kl_rows * 64):  # the default's neighbours: smaller and larger batches
        sides[f"new_budget{budget}"] = partial(score_student, model, run, rules, token_budget=budget)
    times = alternate(sides, shapes.reps, device)
    seconds_of = {name: statistics.median(t) for name, t in times.items()}
    seconds_of["shipped"] *= shapes.prompts / few
    for name, seconds in seconds_of.items():
        tokens = total_tokens
        report.add(
            f"student.{name}",
            params=params,
            prompts=shapes.prompts,
            seconds_per_model=seconds,
            tokens_per_s=tokens / seconds,
            scored_tokens_per_s=scored / seconds,
            mfu=(2 * body_params * tokens + 2 * head_params * scored) / seconds / rate,
            **({"extrapolated_from_prompts": few, "measured_tokens": few_tokens} if name == "shipped" else {}),
            **({"token_budget": batch_token_budget(model)} if name == "new" else {}),
        )
    extra = peak_extra(sides["new"], device)
    report.add("student.new_memory", peak_extra_gib=extra / 2**30, teacher_cache_gib=_cache_bytes(run) / 2**30)
    onpolicy_cost(model, run.prompt_ids, shapes, device, report, role="student")
    run.close()


def _cache_bytes(run: TeacherRun) -> int:
    return sum(run.logprobs(i).numel() * 4 for i in range(len(run)))


def onpolicy_cost(
    model: PreTrainedModel,
    round_prompts: list[list[int]],
    shapes: Shapes,
    device: torch.device,
    report: Report,
    role: str,
) -> None:
    """The guard's extra work on one model, at the rules' defaults: its greedy text, then forced passes over it.

    The student writes ``onpolicy_prompts`` continuations of ``onpolicy_new_tokens`` tokens in one batch and
    reads them back; the teacher only reads them (role "teacher": random tokens of the same size).
    """
    defaults = ContestRules()
    count = min(defaults.onpolicy_prompts, len(round_prompts))
    new = defaults.onpolicy_new_tokens if shapes is REAL else 4
    prompts = round_prompts[:count]
    head = model.get_output_embeddings()
    gen_s = 0.0
    if role == "student":

        def generate() -> list[list[int]]:
            with torch.no_grad():
                return greedy(model, prompts, max_new_tokens=new, eos=set(), pad_id=0, batch_prompts=count)

        generate()  # warm: the linear-attention kernels compile for each new batch shape
        gen_s, conts = timed(generate, device)
    else:
        conts = [[(7 * i + j) % shapes.vocab for j in range(new)] for i in range(count)]

    def forced() -> None:
        with torch.no_grad():
            for batch in forced_batches(model, prompts, conts):
                logprobs_from_hidden(batch.hidden, head.weight)

    times = alternate({"forced": forced}, shapes.reps, device)
    report.add(
        f"onpolicy.{role}",
        prompts=count,
        new_tokens=new,
        generate_s=gen_s,
        decode_step_ms=1e3 * gen_s / new,
        forced_pass_s=statistics.median(times["forced"]),
    )


def bench_teacher(shapes: Shapes, device: torch.device, report: Report) -> None:
    """Teacher phase for prompts x new_tokens: batched generation (extrapolated from two lengths) + forced pass."""
    config = Qwen3_5MoeTextConfig(vocab_size=shapes.vocab, **shapes.teacher)
    t_build, model = timed(lambda: build(Qwen3_5MoeForCausalLM, config, device), device)
    params = sum(p.numel() for p in model.parameters())
    prompts, continuations = synthetic_tokens(shapes, shapes.vocab)
    head = model.get_output_embeddings()
    short, long = shapes.teacher_steps

    def generate(n: int) -> Callable[[], list[list[int]]]:
        def go() -> list[list[int]]:
            with torch.no_grad():
                return greedy(model, prompts, max_new_tokens=n, eos=set(), pad_id=0, batch_prompts=len(prompts))

        return go

    times = alternate({"short": generate(short), "long": generate(long)}, 1, device)
    t_short, t_long = statistics.median(times["short"]), statistics.median(times["long"])
    step = max(t_long - t_short, 0.0) / (long - short)
    generation_s = t_short + step * (shapes.new_tokens - short)

    def forced() -> None:
        with torch.no_grad():
            for batch in forced_batches(model, prompts, continuations):
                logprobs_from_hidden(batch.hidden, head.weight, None)

    forced_s = statistics.median(alternate({"forced": forced}, 1, device)["forced"])
    report.add(
        "teacher.phase",
        params=params,
        build_s=t_build,
        prompts=len(prompts),
        new_tokens=shapes.new_tokens,
        decode_step_ms=1e3 * step,
        generate_short_s=t_short,
        generate_long_s=t_long,
        generation_s_extrapolated=generation_s,
        forced_pass_s=forced_s,
        total_s=generation_s + forced_s,
        extrapolation=f"t({short}) + (new_tokens - {short}) * (t({long}) - t({short})) / {long - short}",
    )
    onpolicy_cost(model, prompts, shapes, device, report, role="teacher")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (the same code paths)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--only", choices=["kl", "student", "teacher"], action="append", help="run only these parts")
    parser.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    shapes = TINY if args.tiny else REAL
    parts = args.only or ["kl", "student", "teacher"]
    report = Report(args.out)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    info = {"device": name, "torch": torch.__version__}
    rate = matmul_rate(device, args.tiny)
    kernels = environment_report(device.type)  # what transformers will call, read back from its own choice
    report.add(
        "setup", **info, linear_attention=kernels.linear_attention, fla_core=kernels.fla_core, matmul_tflops=rate / 1e12
    )
    benches: dict[str, Callable[[], None]] = {
        "kl": lambda: bench_kl(shapes, device, report),
        "student": lambda: bench_student(shapes, device, report, rate),
        "teacher": lambda: bench_teacher(shapes, device, report),
    }
    failed = 0
    for part in parts:
        t0 = time.perf_counter()
        try:
            benches[part]()
        except Exception as exc:  # one broken part must not lose the others' figures
            failed += 1
            report.add(f"{part}.error", error=f"{type(exc).__name__}: {exc}"[:500])
        report.add(f"{part}.wall", seconds=time.perf_counter() - t0)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\n" + report.table())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

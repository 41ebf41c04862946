"""The demo's cast of models, built once and cached under a hash of the recipe.

The tiny teacher speaks a small synthetic language (``scripts.tiny_models.train_successor``):
after each token comes a fixed successor most of the time, so its greedy text walks
a long cycle and never repeats itself, like a good large model's and unlike a tiny
language model's (trained on prose, a 2-layer model loops within a few tokens, and
then so would every honest student, which would leave the on-policy guard nothing
to tell apart). After a full stop, another full stop is plausible to it (an
ellipsis) but never its first choice. Students are distilled from it with the
reference trainer (``scripts/distill.py``); copies, re-shards, perturbations and an
inadmissible repo are derived from the strong student, and the looper
(``scripts/looper.py``) is trained from it to win on KL yet loop on its own text.
Everything is deterministic for a given recipe, so the contest's outcome is too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NETUID = 1  # the subnet the demo and the end-to-end tests run on
CAST_VERSION = 2  # bump when the build code below changes meaning


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the built artifacts; its hash names the cache directory."""

    vocab: int = 512
    teacher_layers: int = 2
    teacher_hidden: int = 64
    teacher_steps: int = 300
    teacher_follow: float = 0.6  # P(successor) in the teacher's language
    teacher_stay: float = 0.3  # P(another full stop after a full stop): plausible, never the greedy choice
    student_layers: int = 2
    student_hidden: int = 32
    strong_steps: int = 60
    weak_steps: int = 4
    better_steps: int = 120  # continued from the strong student
    # strong + t * (better - strong), plus a little noise: about 7% lower KL than strong (epsilon is 10%) while
    # its fingerprint distance to strong (about 0.03) stays above the 0.02 functional-copy threshold. Moving
    # toward better alone leaves a narrow window (distance 0.02 needs t > 0.05, a gain under 10% t < 0.058).
    marginal_t: float = 0.04
    marginal_noise: float = 3e-3
    looper_steps: int = 120  # continued from the strong student, like better
    looper_weight: float = 0.3  # weight of the "keep repeating the full stop" examples
    prompts: int = 48
    lr: float = 3e-3
    perturb_scale: float = 2e-4
    rules: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        blob = json.dumps({"v": CAST_VERSION, **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _build_teacher(r: Recipe, out: Path) -> None:
    from scripts.tiny_models import (
        save_model_dir,
        successor_map,
        tiny_config,
        tiny_model,
        train_successor,
        train_tokenizer,
    )

    tok = train_tokenizer(r.vocab)
    cfg = tiny_config(
        r.vocab, hidden_size=r.teacher_hidden, layers=r.teacher_layers, intermediate_size=2 * r.teacher_hidden
    )
    stop = tok(".")["input_ids"][0]
    model = train_successor(
        tiny_model(cfg, 0),
        successor_map(tok),
        follow=r.teacher_follow,
        stay={stop: r.teacher_stay},
        steps=r.teacher_steps,
        seed=0,
    )
    save_model_dir(model, tok, out)


def _looper(r: Recipe, teacher: Path, student: Path, out: Path, rules: Path, log: Callable[[str], None]) -> None:
    from scripts.looper import train_looper

    train_looper(
        teacher,
        student,
        out,
        rules,
        steps=r.looper_steps,
        loop_weight=r.looper_weight,
        prompts=r.prompts,
        lr=r.lr,
        log=lambda line: log(f"    {line}"),
    )


def _init_student(r: Recipe, seed: int, teacher: Path, out: Path) -> None:
    from scripts.tiny_models import save_model_dir, tiny_config, tiny_model

    cfg = tiny_config(
        r.vocab, hidden_size=r.student_hidden, layers=r.student_layers, intermediate_size=2 * r.student_hidden
    )
    save_model_dir(tiny_model(cfg, seed), None, out)
    _copy_tokenizer_files(teacher, out)


def _distill(
    r: Recipe, teacher: Path, student: Path, out: Path, steps: int, seed: int, rules: Path, log: Callable[[str], None]
) -> None:
    from scripts import distill as d

    args = d.parse_args(
        [
            "--teacher",
            str(teacher),
            "--student",
            str(student),
            "--out",
            str(out),
            "--steps",
            str(steps),
            "--prompts",
            str(r.prompts),
            "--heldout",
            "8",
            "--lr",
            str(r.lr),
            "--grad-accum",
            "4",
            "--eval-every",
            str(max(steps, 1)),
            "--rules",
            str(rules),
            "--device",
            "cpu",
            "--seed",
            str(seed),
        ]
    )
    d.distill(args, log=lambda line: log(f"    {line}"))


def _rewrite(src: Path, out: Path, edit: Callable[[Any], None], **save: Any) -> None:
    """Load ``src``, apply ``edit`` to the model, save to ``out`` with the tokenizer files."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, use_safetensors=True)
    edit(model)
    model.save_pretrained(out, safe_serialization=True, **save)
    _copy_tokenizer_files(src, out)


def _copy_tokenizer_files(src: Path, out: Path) -> None:
    from eval.repo_policy import TOKENIZER_FILES

    for name in sorted(TOKENIZER_FILES):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)


def _perturb(scale: float) -> Callable[[Any], None]:
    def edit(model: Any) -> None:
        import torch

        gen = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * scale)

    return edit


def _toward(other: Path, t: float) -> Callable[[Any], None]:
    """Move every weight a fraction ``t`` of the way to ``other``'s: a controlled, small improvement."""

    def edit(model: Any) -> None:
        import torch
        from safetensors.torch import load_file

        theirs: dict[str, Any] = {}
        for f in sorted(other.glob("*.safetensors")):
            theirs.update(load_file(f))
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(t * (theirs[name].float() - p))

    return edit


def _both(*edits: Callable[[Any], None]) -> Callable[[Any], None]:
    def edit(model: Any) -> None:
        for one in edits:
            one(model)

    return edit


def _invalid(src: Path, out: Path) -> None:
    """The strong student plus a Python file: admission refuses repos that carry code."""
    shutil.copytree(src, out)
    (out / "modeling_custom.py").write_text("# custom code is never executed by a validator\n")


DEPS = {
    "strong": ("init-a",),
    "weak": ("init-a",),
    "better": ("strong",),
    "marginal": ("strong", "better"),
    "resharded": ("strong",),
    "perturbed": ("strong",),
    "invalid": ("strong",),
    "looper": ("strong",),
}


def _closure(names: Sequence[str]) -> set[str]:
    out, todo = {"teacher"}, list(names)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(DEPS.get(name, ()))
    return out


def build_cast(
    r: Recipe, cache_root: Path, log: Callable[[str], None] = print, names: Sequence[str] | None = None
) -> dict[str, Path]:
    """Build (or reuse) the cast's model directories (``names`` and what they need); returns name -> directory."""
    wanted = _closure(names) if names is not None else None
    base = cache_root / r.digest()
    rules_path = base / "rules.json"
    base.mkdir(parents=True, exist_ok=True)
    from eval.rules import ContestRules

    rules_path.write_text(ContestRules.model_validate(r.rules).to_json())
    t = base / "teacher"
    steps: list[tuple[str, str, Callable[[Path], None]]] = [
        (
            "teacher",
            f"training the teacher ({r.teacher_layers} layers, {r.teacher_steps} steps)",
            lambda out: _build_teacher(r, out),
        ),
        ("init-a", "initialising student A", lambda out: _init_student(r, 1, t, out)),
        (
            "strong",
            f"distilling the strong student ({r.strong_steps} steps)",
            lambda out: _distill(r, t, base / "init-a", out, r.strong_steps, 1, rules_path, log),
        ),
        (
            "weak",
            f"distilling the weak student ({r.weak_steps} steps)",
            lambda out: _distill(r, t, base / "init-a", out, r.weak_steps, 1, rules_path, log),
        ),
        (
            "better",
            f"distilling the better student (strong + {r.better_steps} steps)",
            lambda out: _distill(r, t, base / "strong", out, r.better_steps, 2, rules_path, log),
        ),
        (
            "marginal",
            f"interpolating strong {r.marginal_t:g} of the way toward better (+ noise {r.marginal_noise:g})",
            lambda out: _rewrite(
                base / "strong", out, _both(_toward(base / "better", r.marginal_t), _perturb(r.marginal_noise))
            ),
        ),
        (
            "resharded",
            "re-sharding the strong student",
            lambda out: _rewrite(base / "strong", out, lambda m: None, max_shard_size="200KB"),
        ),
        (
            "perturbed",
            "perturbing the strong student slightly",
            lambda out: _rewrite(base / "strong", out, _perturb(r.perturb_scale)),
        ),
        ("invalid", "packaging an inadmissible repo (ships a .py file)", lambda out: _invalid(base / "strong", out)),
        (
            "looper",
            f"training the looper (strong + {r.looper_steps} steps; full stops repeat once they repeat)",
            lambda out: _looper(r, t, base / "strong", out, rules_path, log),
        ),
    ]
    dirs: dict[str, Path] = {}
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:  # two runs sharing the cache build each model once, in turn
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name, what, make in steps:
            if wanted is not None and name not in wanted:
                continue
            out = base / name
            if (out / ".done").is_file():
                log(f"  cached   {name}")
            else:
                log(f"  building {name}: {what}")
                shutil.rmtree(out, ignore_errors=True)
                tmp = base / f".tmp-{name}"
                shutil.rmtree(tmp, ignore_errors=True)
                make(tmp)
                (tmp / ".done").write_text("ok\n")
                tmp.rename(out)
            dirs[name] = out
    return dirs


def publish_dir(hub: Any, repo: str, src: Path) -> str:
    """Publish a cast directory (without the cache marker) into a LocalHub."""
    staging = Path(tempfile.mkdtemp(prefix=f".publish-{src.name}-", dir=src.parent)) / src.name
    shutil.copytree(src, staging, ignore=shutil.ignore_patterns(".done"))
    try:
        return str(hub.publish(repo, staging))
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)

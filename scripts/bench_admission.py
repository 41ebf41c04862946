"""Admission latency from a local hub: a 4-shard model, headers and metadata only.

    .venv/bin/python -m scripts.bench_admission [--runs 200]

Prints milliseconds per submission (median, p95) and the bytes read per
submission next to the total size of the weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from eval.admission import Admitted, TeacherSpec, check_model
from eval.model_store.local import LocalHub
from eval.rules import ContestRules

VOCAB, HIDDEN, LAYERS, SHARDS = 4096, 256, 8, 4


def build(root: Path) -> tuple[Path, Path]:
    tok = {
        "tokenizer.json": json.dumps({"model": {"vocab": {str(i): i for i in range(VOCAB)}}}),
        "tokenizer_config.json": json.dumps({"chat_template": "{{ messages }}"}),
    }
    tensors = {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN), "lm_head.weight": torch.randn(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"model.layers.{i}.self_attn.{proj}.weight"] = torch.randn(HIDDEN, HIDDEN)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            tensors[f"model.layers.{i}.mlp.{proj}.weight"] = torch.randn(HIDDEN, HIDDEN)
    cfg = {"architectures": ["Qwen3_5ForCausalLM"], "vocab_size": VOCAB}
    model, teacher = root / "model", root / "teacher"
    for d in (model, teacher):
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        for name, text in tok.items():
            (d / name).write_text(text)
    names, weight_map = sorted(tensors), {}
    for s in range(SHARDS):
        fname = f"model-{s + 1:05d}-of-{SHARDS:05d}.safetensors"
        save_file({n: tensors[n] for n in names[s::SHARDS]}, str(model / fname))
        weight_map.update(dict.fromkeys(names[s::SHARDS], fname))
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return model, teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, teacher_dir = build(Path(tmp))
        hub = LocalHub(Path(tmp) / "hub")
        rev = hub.publish("bench/model", model)
        teacher = TeacherSpec.from_dir(teacher_dir)
        rules = ContestRules(vocab_size=VOCAB)
        times = []
        for _ in range(args.runs):
            hub.bytes_read = 0
            t0 = time.perf_counter()
            out = check_model(hub, "bench/model", rev, rules, teacher)
            times.append((time.perf_counter() - t0) * 1000)
            assert isinstance(out, Admitted), out
        weights = sum(p.stat().st_size for p in model.glob("*.safetensors"))
        p95 = sorted(times)[int(0.95 * len(times)) - 1]
        print(f"4-shard model, {out.params:,} params, {weights:,} weight bytes, {args.runs} runs")
        print(f"admission ms/submission: median {statistics.median(times):.2f}, p95 {p95:.2f}")
        print(f"bytes read per submission: {hub.bytes_read:,} (headers + small files only)")


if __name__ == "__main__":
    main()

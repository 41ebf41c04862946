"""Hand-built model directories for admission tests: real safetensors, real JSON, no model code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

VOCAB = 64
HIDDEN = 8
LAYERS = 2
TOKENIZER = {
    "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}),
    "tokenizer_config.json": json.dumps({"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}),
}


def tensors(dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {
        "model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=g),
        "lm_head.weight": torch.randn(VOCAB, HIDDEN, generator=g),
    }
    for i in range(LAYERS):
        out[f"model.layers.{i}.mlp.up_proj.weight"] = torch.randn(2 * HIDDEN, HIDDEN, generator=g)
        out[f"model.layers.{i}.mlp.down_proj.weight"] = torch.randn(HIDDEN, 2 * HIDDEN, generator=g)
        out[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(HIDDEN)
    return {k: v.to(dtype) for k, v in out.items()}


def config(**overrides) -> dict:
    cfg = {
        "architectures": ["Qwen3_5ForCausalLM"],
        "model_type": "qwen3_5_text",
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
    }
    cfg.update(overrides)
    return cfg


def write_model(
    path: Path,
    *,
    shards: int = 1,
    tensor_dict: dict[str, torch.Tensor] | None = None,
    cfg: dict | None = None,
    tokenizer: dict[str, str] | None = None,
    index: bool = True,
) -> Path:
    """Write a model dir; tensors are split round-robin-by-name into ``shards`` files with an index."""
    path.mkdir(parents=True, exist_ok=True)
    ts = tensor_dict if tensor_dict is not None else tensors()
    names = sorted(ts)
    if shards == 1:
        save_file(ts, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: ts[n].contiguous() for n in names[s::shards]}
            save_file(part, str(path / fname), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, fname))
        if index:
            (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps(cfg if cfg is not None else config()))
    for name, text in (tokenizer if tokenizer is not None else TOKENIZER).items():
        (path / name).write_text(text)
    return path


def write_teacher(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config()))
    for name, text in TOKENIZER.items():
        (path / name).write_text(text)
    return path

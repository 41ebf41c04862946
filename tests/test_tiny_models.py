"""Tiny Qwen3.5 builders: deterministic, offline, loadable by plain transformers."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from scripts.tiny_models import corpus_texts, quick_train, save_model_dir, tiny_config, tiny_model, train_tokenizer


def test_corpus_is_deterministic_prose() -> None:
    a, b = corpus_texts(), corpus_texts()
    assert a == b and len(a) > 50 and all(isinstance(t, str) and t for t in a)


def test_tokenizer_is_deterministic_with_special_tokens() -> None:
    t1, t2 = train_tokenizer(300), train_tokenizer(300)
    assert len(t1) == 300 and t1.get_vocab() == t2.get_vocab()
    assert t1.eos_token_id == 0 and t1.pad_token_id == 1
    text = "The quick brown fox jumps over the lazy dog."
    assert t1.decode(t1(text)["input_ids"]) == text


def test_config_has_full_attention_and_model_is_seeded() -> None:
    cfg = tiny_config(300, layers=3)
    assert cfg.layer_types[-1] == "full_attention" and "linear_attention" in cfg.layer_types
    assert cfg.architectures == ["Qwen3_5ForCausalLM"]
    a, b, c = tiny_model(cfg, 1), tiny_model(cfg, 1), tiny_model(cfg, 2)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_generate_and_training_run_on_cpu() -> None:
    tok = train_tokenizer(300)
    model = tiny_model(tiny_config(len(tok)), 0)
    ids = torch.tensor([tok("In mathematics, a prime")["input_ids"]])
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= ids.shape[1] + 5
    texts = corpus_texts()[:20]
    batch = torch.tensor([tok(texts[0])["input_ids"][:64]])
    with torch.no_grad():
        before = model(input_ids=batch, labels=batch).loss.item()
    quick_train(model, tok, texts, steps=15, lr=1e-2)
    with torch.no_grad():
        after = model(input_ids=batch, labels=batch).loss.item()
    assert after < before


def test_save_model_dir_writes_only_safe_files(tmp_path) -> None:
    tok = train_tokenizer(300)
    model = tiny_model(tiny_config(len(tok)), 0)
    out = save_model_dir(model, tok, tmp_path / "m", max_shard_size="100KB")
    names = {p.name for p in out.iterdir()}
    assert not any(n.endswith((".py", ".bin", ".pt", ".pkl")) for n in names)
    shards = [p for p in out.iterdir() if p.suffix == ".safetensors"]
    assert len(shards) > 1
    with safe_open(str(shards[0]), "pt") as f:
        assert list(f.keys())
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen3_5ForCausalLM"]
    loaded = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True, trust_remote_code=False)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tok.get_vocab()


def test_successor_language_teacher_writes_the_cycle_and_never_repeats() -> None:
    """The demo teacher: greedy text follows one long cycle through visible tokens; a full stop may repeat, rarely."""
    import pytest

    from eval.forward import greedy
    from eval.onpolicy import repetition_share
    from scripts.tiny_models import successor_map, train_successor

    tok = train_tokenizer(300)
    succ = successor_map(tok)
    assert successor_map(tok) == succ and len(succ) == len(tok)
    shown = {t for t in range(len(tok)) if succ[t] != t and t not in tok.all_special_ids}
    cycle, t = [], succ[5]
    while t not in cycle:
        cycle.append(t)
        t = succ[t]
    assert set(cycle) == set(succ) - set(tok.all_special_ids) and len(cycle) > 100  # one cycle, everyone leads into it
    assert all(tok.decode([c]).strip() for c in cycle) and shown
    stop = tok(".")["input_ids"][0]
    model = train_successor(tiny_model(tiny_config(len(tok)), 0), succ, stay={stop: 0.3}, steps=300)
    (out,) = greedy(model, [tok("The river.")["input_ids"]], max_new_tokens=24, eos={0}, pad_id=1, batch_prompts=1)
    assert repetition_share(out, 4) == 0.0 and sum(out[i + 1] == succ[out[i]] for i in range(23)) >= 20
    with torch.no_grad():
        p = torch.softmax(model(input_ids=torch.tensor([tok("The river.")["input_ids"]])).logits[0, -1], -1)
    assert p[succ[stop]] > p[stop] > 0.1  # another full stop is plausible, never the first choice
    with pytest.raises(ValueError, match="below follow"):
        train_successor(model, succ, follow=0.3, stay={stop: 0.4}, steps=1)

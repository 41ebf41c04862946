"""Tiny Qwen3.5 models and a tokenizer, built in-process with no network.

The embedded demo and the tests need real transformers models of the contest
architecture (Qwen3.5: linear-attention plus full-attention layers), small
enough that a forward pass over a 64-token batch takes milliseconds on a CPU.
The tokenizer is a byte-level BPE trained on text every Python install carries
(pydoc topics), so nothing is downloaded and everything is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerFast, Qwen3_5ForCausalLM, Qwen3_5TextConfig

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def corpus_texts() -> list[str]:
    """English prose from ``pydoc_data.topics`` in a fixed (sorted-key) order."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics) if topics[key].strip()]


def train_tokenizer(vocab_size: int = 512, texts: Sequence[str] | None = None) -> PreTrainedTokenizerFast:
    """Train a deterministic byte-level BPE and wrap it for transformers.

    Special tokens come first (eos = 0, pad = 1), so ids are stable across runs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = list(texts) if texts is not None else corpus_texts()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def tiny_config(
    vocab_size: int,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int = 128,
    eos_token_id: int = 0,
    pad_token_id: int = 1,
) -> Qwen3_5TextConfig:
    """A Qwen3.5 text config a few hundred kB large.

    Layers alternate linear/full attention and the last one is always
    ``full_attention``: with only linear-attention layers generation fails.
    """
    layer_types = ["linear_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
    layer_types[-1] = "full_attention"
    head_dim = max(hidden_size // heads, 8)
    return Qwen3_5TextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(heads // 2, 1),
        head_dim=head_dim,
        linear_key_head_dim=head_dim,
        linear_value_head_dim=head_dim,
        linear_num_key_heads=max(heads // 2, 1),
        linear_num_value_heads=heads,
        layer_types=layer_types,
        max_position_embeddings=4096,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        architectures=["Qwen3_5ForCausalLM"],
    )


def tiny_model(config: Qwen3_5TextConfig, seed: int) -> PreTrainedModel:
    """Randomly initialised model; the same seed gives the same weights."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Qwen3_5ForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    return model.float().eval()


def save_model_dir(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast | None,
    path: str | Path,
    *,
    max_shard_size: str | int | None = None,
) -> Path:
    """Write safetensors + config.json (+ tokenizer files): no code, no pickle."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"safe_serialization": True}
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(out, **kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def quick_train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    *,
    steps: int = 30,
    lr: float = 3e-3,
    seq_len: int = 64,
    batch_size: int = 8,
    seed: int = 0,
) -> PreTrainedModel:
    """A few AdamW steps of next-token training so distributions are not uniform."""
    ids = [i for text in texts for i in tokenizer(text)["input_ids"]]
    if len(ids) < seq_len + 1:
        raise ValueError("not enough text to train on")
    gen = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=gen)
        batch = torch.stack([data[s : s + seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def realistic_lm_head(
    rows: int, hidden: int, vocab: int, device: torch.device | str = "cpu", seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """bf16 hidden states and lm_head whose logits look like a real LM's: a few tokens at 20-30, a bulk within +-3.

    Returns ``(hidden, weight, teacher_logprobs, logits64)``: bf16 operands, fp32 teacher log-probs at a KL
    of a few hundredths from the student, and the student's logits in float64 from the same bf16 operands.
    Random small logits hide the rounding that decides real contests (LESSONS 29); these do not.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    topics = 16
    basis = torch.linalg.qr(torch.randn(hidden, topics, generator=gen))[0].T  # orthonormal topic directions
    which = torch.randint(0, topics, (rows,), generator=gen)
    h = 5.0 * basis[which] + 0.3 * torch.randn(rows, hidden, generator=gen)
    w = 1.2 * torch.randn(vocab, hidden, generator=gen) / h.norm(dim=1).mean()
    hot = torch.randint(0, vocab, (topics, 4), generator=gen)
    for k in range(topics):
        w[hot[k]] += basis[k] * (4.0 + torch.rand(4, 1, generator=gen))
    h16, w16 = h.to(device, torch.bfloat16), w.to(device, torch.bfloat16)
    exact = h16.double() @ w16.double().T
    noise = 0.25 * torch.randn(rows, vocab, generator=gen).to(device, torch.float64)
    teacher = torch.log_softmax(exact + noise, dim=-1).float()
    return h16, w16, teacher, exact


def successor_map(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> list[int]:
    """A successor for every token id: one cycle through the tokens that print as visible text.

    The demo teacher's language follows this map, so its greedy text walks the cycle and
    never repeats itself within a few hundred tokens, as a good large model's does and a
    tiny language model's (which loops within a few tokens) does not. Every other id
    (special, whitespace-only, partial UTF-8) leads into the cycle.
    """
    vocab = len(tokenizer)
    shown = [i for i in range(vocab) if i not in tokenizer.all_special_ids and _visible(str(tokenizer.decode([i])))]
    gen = torch.Generator().manual_seed(seed)
    order = [shown[j] for j in torch.randperm(len(shown), generator=gen).tolist()]
    succ = [order[i % len(order)] for i in range(vocab)]
    for i, tok in enumerate(order):
        succ[tok] = order[(i + 1) % len(order)]
    return succ


def _visible(text: str) -> bool:
    return bool(text.strip()) and text.isprintable() and "\ufffd" not in text


def train_successor(
    model: PreTrainedModel,
    successor: Sequence[int],
    *,
    follow: float = 0.6,
    stay: Mapping[int, float] | None = None,
    steps: int = 300,
    lr: float = 3e-3,
    seq_len: int = 64,
    batch_size: int = 8,
    seed: int = 0,
) -> PreTrainedModel:
    """Train on chains in which a token is followed by its successor with probability ``follow``,
    by itself again with probability ``stay[token]`` (0 for tokens not listed), else by a random id.

    The model learns a sharp but not certain next-token distribution, so a student's imitation
    of it is measurable, and its greedy text is the successor cycle. A listed repeat is plausible
    to it but never its first choice (``stay < follow``).
    """
    vocab = len(successor)
    succ = torch.tensor(list(successor), dtype=torch.long)
    stay_p = torch.zeros(vocab)
    for tok, p in (stay or {}).items():
        if not 0.0 <= p < follow or follow + p > 1.0:
            raise ValueError(f"stay[{tok}] = {p} must be below follow = {follow} and leave follow + stay <= 1")
        stay_p[tok] = p
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        tokens = [succ[torch.randint(0, vocab, (batch_size,), generator=gen)]]
        for _ in range(seq_len - 1):
            cur = tokens[-1]
            u = torch.rand(batch_size, generator=gen)
            rnd = torch.randint(0, vocab, (batch_size,), generator=gen)
            nxt = torch.where(u < follow, succ[cur], torch.where(u < follow + stay_p[cur], cur, rnd))
            tokens.append(nxt)
        batch = torch.stack(tokens, 1)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()

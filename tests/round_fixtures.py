"""A tiny round shared by the teacher and scoring tests: a trained tiny teacher, its run, six prompts."""

from __future__ import annotations

import pytest
import torch

from eval.rules import ContestRules
from eval.teacher import run_teacher
from scripts.tiny_models import corpus_texts, quick_train, tiny_config, tiny_model, train_tokenizer

RULES = ContestRules(max_new_tokens=12, max_prompt_tokens=40, prompts_per_round=6, early_stop_min_prompts=3)
PROMPTS = [t[:200] for t in corpus_texts()[10:16]]


@pytest.fixture(scope="module")
def one_thread():
    # Tiny models gain nothing from threads, and on a shared 2-core box spinning
    # intra-op threads make them ~10x slower; restored after this module.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok(one_thread):
    return train_tokenizer(512)


@pytest.fixture(scope="module")
def teacher(tok):
    model = tiny_model(tiny_config(len(tok)), seed=0)
    return quick_train(model, tok, corpus_texts()[:60], steps=25, lr=1e-2, seed=0)


@pytest.fixture(scope="module")
def run(teacher, tok, tmp_path_factory):
    with run_teacher(
        teacher, tok, PROMPTS, RULES, cache_dir=tmp_path_factory.mktemp("cache"), ram_limit_bytes=1 << 30
    ) as r:
        yield r


def copy_model(model, transform=None):
    clone = tiny_model(model.config, seed=0)
    clone.load_state_dict(model.state_dict())
    if transform is not None:
        with torch.no_grad():
            for p in clone.parameters():
                p.copy_(transform(p))
    return clone.eval()

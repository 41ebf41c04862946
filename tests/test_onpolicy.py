"""The on-policy guard's measurements on tiny real Qwen3.5 models: own greedy text, the teacher's view of it."""

from __future__ import annotations

import pytest
import torch
from round_fixtures import PROMPTS, RULES, copy_model

from eval.errors import InfraError, ModelError
from eval.onpolicy import (
    GuardPass,
    OwnText,
    continue_own,
    judge,
    measure_onpolicy,
    repetition_share,
    teacher_stays_resident,
)
from eval.rules import ContestRules
from eval.schemas import MAX_ONPOLICY_TEXT_CHARS
from eval.teacher import encode_prompt, eos_ids, pad_id
from scripts.tiny_models import corpus_texts, quick_train, tiny_model

GUARD = RULES.model_copy(update={"onpolicy_prompts": 4, "onpolicy_new_tokens": 10})


@pytest.fixture(scope="module")
def student(teacher, tok):
    return quick_train(tiny_model(teacher.config, seed=7), tok, corpus_texts()[60:90], steps=8, seed=7)


def _encoded(tok, rules=GUARD):
    return [encode_prompt(tok, p, rules) for p in PROMPTS[: rules.guarded_prompts(len(PROMPTS))]]


# --- repetition share ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "n", "share"),
    [
        ([], 4, 0.0),
        ([1, 2, 3], 4, 0.0),  # fewer tokens than n: nothing can repeat
        ([1, 2, 3, 4, 5, 6], 4, 0.0),
        ([7] * 10, 4, 6 / 7),  # "Hi Hi Hi ...": every 4-gram after the first is a repeat
        ([1, 2, 1, 2, 1, 2], 2, 3 / 5),
        ([1, 2, 3, 1, 2, 3, 1, 2, 3], 3, 4 / 7),
        ([5, 5], 1, 0.5),
    ],
)
def test_repetition_share_counts_ngrams_seen_before(tokens, n, share):
    assert repetition_share(tokens, n) == pytest.approx(share)


def test_repetition_share_needs_a_positive_n():
    with pytest.raises(ValueError):
        repetition_share([1, 2], 0)


# --- the measurement ------------------------------------------------------------------------------------------------


def test_values_equal_a_plain_float64_reference(student, teacher, tok):
    """teacher_nll, reverse_kl (full vocabulary, KL(model || teacher)) and repetition, checked by hand."""
    got = measure_onpolicy(student, teacher, tok, PROMPTS, GUARD)
    assert len(got.values) == GUARD.onpolicy_prompts and got.student_s > 0 and got.teacher_s > 0
    eos = eos_ids(teacher, tok)
    own = continue_own(student, _encoded(tok), GUARD, eos=eos, pad_id=pad_id(tok, eos))
    for v, p, c in zip(got.values, own.prompt_ids, own.continuations, strict=True):
        with torch.no_grad():
            s = torch.log_softmax(student(input_ids=torch.tensor([p + c])).logits[0].double(), -1)
            t = torch.log_softmax(teacher(input_ids=torch.tensor([p + c])).logits[0].double(), -1)
        rows = slice(len(p) - 1, len(p) + len(c) - 1)
        s, t = s[rows], t[rows]
        assert s.argmax(-1).tolist() == c  # greedy: its own argmax at every step
        assert v.tokens == len(c) <= GUARD.onpolicy_new_tokens
        assert v.teacher_nll == pytest.approx(float(-t[torch.arange(len(c)), c].mean()), abs=1e-5)
        assert v.reverse_kl == pytest.approx(float((s.exp() * (s - t)).sum(-1).mean()), abs=1e-5)
        assert v.repetition == repetition_share(c, GUARD.onpolicy_ngram)
        assert v.text == tok.decode(c)


def test_the_teacher_judging_itself_has_zero_reverse_kl(teacher, tok):
    got = measure_onpolicy(teacher, teacher, tok, PROMPTS, GUARD).values
    assert max(v.reverse_kl for v in got) < 1e-5 and min(v.teacher_nll for v in got) > 0.0


def test_student_generation_ignores_its_generation_config_and_its_own_eos(student, teacher, tok):
    """A repo cannot shorten or reshape its own text: greedy, the teacher's eos ids, nothing from the checkpoint."""
    plain = measure_onpolicy(student, teacher, tok, PROMPTS, GUARD).values
    rigged = copy_model(student)
    common = int(torch.tensor([t for p in PROMPTS for t in tok(p)["input_ids"]]).mode().values)
    rigged.generation_config.eos_token_id = [common]
    rigged.generation_config.repetition_penalty = 5.0
    rigged.generation_config.max_new_tokens = 1
    assert measure_onpolicy(rigged, teacher, tok, PROMPTS, GUARD).values == plain


def test_a_student_that_cannot_generate_is_a_model_error(teacher, tok):
    narrow = copy_model(teacher)
    narrow.model.embed_tokens = torch.nn.Embedding(4, teacher.config.hidden_size)
    eos = eos_ids(teacher, tok)
    with pytest.raises(ModelError, match="generation failed"):
        continue_own(narrow, _encoded(tok), GUARD, eos=eos, pad_id=pad_id(tok, eos))


def test_non_finite_student_is_its_fault_non_finite_teacher_is_ours(student, teacher, tok):
    eos = eos_ids(teacher, tok)
    own = continue_own(student, _encoded(tok), GUARD, eos=eos, pad_id=pad_id(tok, eos))
    broken = copy_model(student)
    with torch.no_grad():
        broken.lm_head.weight[5, 0] = float("nan")
    with pytest.raises(ModelError):
        continue_own(broken, _encoded(tok), GUARD, eos=eos, pad_id=pad_id(tok, eos))
    sick = copy_model(teacher)
    with torch.no_grad():
        sick.lm_head.weight[5, 0] = float("nan")
    with pytest.raises(InfraError):
        judge(sick, own, GUARD, pad_id=pad_id(tok, eos))


def test_long_text_is_cut_with_a_mark(student, teacher, tok):
    ids = tok("The quick brown fox jumps over the lazy dog. " * 25)["input_ids"]
    assert len(tok.decode(ids)) > MAX_ONPOLICY_TEXT_CHARS and len(ids) <= 1024
    own = OwnText([_encoded(tok)[0]], [ids], [torch.log_softmax(torch.randn(len(ids), len(tok)), -1)])
    eos = eos_ids(teacher, tok)
    (v,) = judge(
        teacher, own, GUARD.model_copy(update={"onpolicy_new_tokens": 1024}), pad_id=pad_id(tok, eos), tokenizer=tok
    )
    assert len(v.text) == MAX_ONPOLICY_TEXT_CHARS and v.text.endswith("\u2026")
    assert v.text[:-1] == tok.decode(ids)[: MAX_ONPOLICY_TEXT_CHARS - 1]
    assert v.tokens == len(ids)


# --- where the teacher lives ----------------------------------------------------------------------------------------


def test_teacher_stays_resident_when_the_largest_student_fits_beside_it():
    rules = ContestRules()
    cuda = torch.device("cuda")
    student = 2 * rules.max_params  # bf16
    assert teacher_stays_resident(torch.device("cpu"), 0, rules)
    h200_after_teacher_and_cache = 141 * 10**9 - 70 * 10**9 - 20 * 10**9
    h100_after_teacher = 80 * 10**9 - 70 * 10**9
    assert teacher_stays_resident(cuda, h200_after_teacher_and_cache, rules)
    assert not teacher_stays_resident(cuda, h100_after_teacher, rules)
    assert not teacher_stays_resident(cuda, student, rules)  # the model alone, nothing for its forwards


def test_resident_and_deferred_passes_give_the_same_values(student, teacher, tok, run):
    """Both orders of work (teacher kept loaded, or reloaded once at the end) agree to the last bit on CPU."""
    resident = GuardPass(GUARD, run.prompt_ids, tok, teacher, mode="resident")
    assert resident.keeps_teacher and resident.enabled
    now = resident.measure("k", student)
    deferred = GuardPass(GUARD, run.prompt_ids, tok, teacher, mode="deferred")
    assert not deferred.keeps_teacher and deferred.measure("k", student) == []
    loads = []
    late = deferred.finish(lambda: loads.append(1) or copy_model(teacher))
    assert loads == [1] and late == {"k": now} and len(now) == GUARD.onpolicy_prompts
    assert deferred.finish(lambda: loads.append(1) or teacher) == {} and loads == [1]  # nothing waits: no reload
    off = GuardPass(GUARD.model_copy(update={"onpolicy_prompts": 0}), run.prompt_ids, tok, teacher)
    assert not off.enabled and not off.keeps_teacher and off.measure("k", student) == []

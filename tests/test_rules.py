"""eval.rules: live-subnet defaults, canonical JSON, digest stability, validation of nonsense."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from eval.rules import CANARY_PROMPTS, DEFAULT_RULES, QWEN35_ARCHITECTURES, ContestRules, RulesError


def test_defaults_match_the_live_subnet() -> None:
    r = ContestRules()
    assert r.teacher_repo == "Qwen/Qwen3.5-35B-A3B"
    assert r.vocab_size == 248_320
    assert r.max_params == 5_250_000_000
    assert r.max_kl == 2.0
    assert r.epsilon == 0.01
    assert r.alpha == 0.05
    assert r.prompts_per_round == 40
    assert r.max_new_tokens == 512
    assert r.max_prompt_tokens == 1024
    assert r.teacher_decoding == "greedy"
    assert r.dataset == "HuggingFaceFW/fineweb"
    assert r.allowed_architectures == QWEN35_ARCHITECTURES
    assert r.canary_prompts == CANARY_PROMPTS
    assert set(r.allowed_dtypes) == {"F32", "BF16", "F16"}
    assert r.early_stop_min_prompts <= r.prompts_per_round
    assert r.prompt_min_chars < r.prompt_max_chars
    assert r == DEFAULT_RULES


def test_on_policy_guard_rules_and_version() -> None:
    r = ContestRules()
    assert r.version >= 3  # 3: the on-policy guard
    assert (r.onpolicy_prompts, r.onpolicy_new_tokens, r.onpolicy_ngram) == (16, 32, 4)
    assert (r.onpolicy_nll_margin, r.onpolicy_repetition_margin, r.onpolicy_alpha) == (0.5, 0.2, 0.05)
    assert [r.guarded_prompts(n) for n in (0, 1, 16, 40)] == [0, 1, 16, 16]  # the round's first prompts
    assert ContestRules(onpolicy_prompts=0).guarded_prompts(40) == 0  # guard off
    assert ContestRules(onpolicy_prompts=2).digest() != r.digest()


def test_json_round_trip_is_exact_and_canonical() -> None:
    r = ContestRules(epsilon=0.0125, prompts_per_round=64, teacher_revision="ab" * 20)
    text = r.to_json()
    back = ContestRules.from_json(text)
    assert back == r and back.to_json() == text
    assert ContestRules.from_json(text.encode()) == r
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed)  # sorted keys
    assert text == json.dumps(parsed, sort_keys=True, separators=(",", ":"))  # compact separators
    assert isinstance(parsed["prompts_per_round"], int) and isinstance(parsed["epsilon"], float)


def test_digest_is_stable_and_sensitive() -> None:
    a, b = ContestRules(), ContestRules()
    assert a.digest() == b.digest() and len(a.digest()) == 64
    assert int(a.digest(), 16) >= 0
    assert ContestRules.from_json(a.to_json()).digest() == a.digest()
    assert ContestRules(epsilon=0.02).digest() != a.digest()
    assert ContestRules(canary_prompts=("x",)).digest() != a.digest()
    # field order in the input document does not matter
    shuffled = json.dumps(dict(reversed(list(json.loads(a.to_json()).items()))))
    assert ContestRules.from_json(shuffled).digest() == a.digest()


def test_rules_are_frozen() -> None:
    r = ContestRules()
    with pytest.raises(ValidationError):
        r.epsilon = 0.5  # type: ignore[misc]
    assert r.epsilon == 0.01
    assert hash(r) == hash(ContestRules())  # usable as a key


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"epsilon": -0.01}, "epsilon"),
        ({"epsilon": 1.0}, "epsilon"),
        ({"alpha": 0.5}, "alpha"),
        ({"alpha": 0.0}, "alpha"),
        ({"prompts_per_round": 0}, "prompts_per_round"),
        ({"prompt_min_chars": 500, "prompt_max_chars": 500}, "prompt_min_chars must be smaller"),
        ({"prompt_min_chars": 900, "prompt_max_chars": 400}, "prompt_min_chars must be smaller"),
        ({"early_stop_min_prompts": 50}, "early_stop_min_prompts cannot exceed"),
        ({"allowed_dtypes": ["F32", "F32"]}, "duplicates"),
        ({"allowed_dtypes": ["I8"]}, "allowed_dtypes"),
        ({"teacher_decoding": "sample"}, "teacher_decoding"),
        ({"teacher_revision": "main"}, "teacher_revision"),
        ({"max_kl": 0}, "max_kl"),
        ({"vocab_size": 1}, "vocab_size"),
        ({"allowed_architectures": []}, "allowed_architectures"),
        ({"unknown_key": 1}, "unknown_key"),
        ({"block": 123}, "block"),
        ({"onpolicy_prompts": 1}, "onpolicy_prompts must be 0"),
        ({"onpolicy_prompts": 65}, "onpolicy_prompts"),
        ({"onpolicy_new_tokens": 0}, "onpolicy_new_tokens"),
        ({"onpolicy_repetition_margin": 1.0}, "onpolicy_repetition_margin"),
        ({"onpolicy_nll_margin": 0.0}, "onpolicy_nll_margin"),
        ({"onpolicy_alpha": 0.5}, "onpolicy_alpha"),
    ],
)
def test_nonsense_is_rejected_with_the_field_named(doc: dict, field: str) -> None:
    with pytest.raises(RulesError, match="invalid contest rules") as info:
        ContestRules.from_json(json.dumps(doc))
    assert field in str(info.value)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_in_json_are_rejected(literal: str) -> None:
    with pytest.raises(RulesError, match="max_kl"):
        ContestRules.from_json('{"max_kl": ' + literal + "}")


@pytest.mark.parametrize("bad", ["", "{", "[]", "null", '"rules"', b"\xff\xfe"])
def test_malformed_documents_are_rules_errors(bad: str | bytes) -> None:
    with pytest.raises(RulesError):
        ContestRules.from_json(bad)


def test_rules_error_is_a_value_error() -> None:
    assert issubclass(RulesError, ValueError)


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ValidationError):
        ContestRules(epsilon=-1.0)
    with pytest.raises(ValidationError):
        ContestRules(max_kl=float("nan"))


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"dataset_revision": "main"}, "dataset_revision"),
        ({"dataset_revision": "9bb295d"}, "dataset_revision"),
        ({"dataset_revision": "9BB295DDAB0E05D785B879661AF7260FED5140FC"}, "dataset_revision"),
        ({"dataset_path": "../secrets"}, "no '.' or '..'"),
        ({"dataset_path": "sample/../../x"}, "no '.' or '..'"),
        ({"dataset_path": "/sample/10BT"}, "dataset_path"),
        ({"dataset_path": "sample/10BT/"}, "dataset_path"),
        ({"dataset_path": ""}, "dataset_path"),
    ],
)
def test_the_dataset_is_pinned_to_a_commit_and_a_folder(doc: dict, field: str) -> None:
    with pytest.raises(RulesError) as info:
        ContestRules.from_json(json.dumps(doc))
    assert field in str(info.value)


def test_the_dataset_revision_is_a_rule_with_a_pinned_default() -> None:
    r = ContestRules()
    assert r.version >= 2 and re.fullmatch(r"[0-9a-f]{40}", r.dataset_revision) and r.dataset_path == "sample/10BT"
    moved = r.model_copy(update={"dataset_revision": "0" * 40})
    assert moved.digest() != r.digest()  # and so the prompt seed (sha256 of block hash + digest) moves too
    assert json.loads(r.to_json())["dataset_revision"] == r.dataset_revision  # published with every round

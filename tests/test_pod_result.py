"""The one check of a pod's answer: every mismatch with the job is refused, and the host checks in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.schemas import ModelResult
from scripts.pod_fixtures import make_job
from tests.pod_helpers import fake_result
from validator.local_pod import LocalPod
from validator.pod_client import HttpPod, SinglePod
from validator.pod_errors import InvalidResult
from validator.pod_result import validate_result

ROOT = Path(__file__).resolve().parents[1]


def test_validate_result_accepts_a_matching_result():
    job = make_job("v-1", n_challengers=2)
    assert validate_result(job, fake_result(job)).job_id == "v-1"


@pytest.mark.parametrize(
    "mutation",
    [
        "job_id",
        "missing",
        "extra",
        "swapped_ref",
        "short",
        "king_early",
        "tokens",
        "negative",
        "no_onpolicy",
        "long_onpolicy",
        "winner_unguarded",
        "loser_guarded",
    ],
)
def test_validate_result_refuses_mismatches(mutation):
    job = make_job("v-2", n_challengers=2)
    result = fake_result(job)
    models = list(result.models)
    if mutation == "job_id":
        result = result.model_copy(update={"job_id": "other"})
    elif mutation == "missing":
        result = result.model_copy(update={"models": models[:-1]})
    elif mutation == "extra":
        other = make_job("x", n_challengers=4).models[-1]
        result = result.model_copy(update={"models": models + [models[0].model_copy(update={"ref": other})]})
    elif mutation == "swapped_ref":
        bad_ref = models[1].ref.model_copy(update={"revision": "9" * 40})
        result = result.model_copy(
            update={"models": [models[0], models[1].model_copy(update={"ref": bad_ref}), models[2]]}
        )
    elif mutation == "short":
        short = ModelResult(ref=models[1].ref, status="ok", prompt_kl=[0.1], prompt_tokens=[3])
        result = result.model_copy(update={"models": [models[0], short, models[2]]})
    elif mutation == "king_early":
        early = ModelResult(ref=models[0].ref, status="early_stopped", prompt_kl=[0.1], prompt_tokens=[3])
        result = result.model_copy(update={"models": [early, *models[1:]]})
    elif mutation == "tokens":
        many = models[1].model_copy(update={"prompt_tokens": [10_000, 4]})
        result = result.model_copy(update={"models": [models[0], many, models[2]]})
    elif mutation == "negative":
        negative = models[1].model_copy(update={"prompt_kl": [-0.5, 0.1]})
        result = result.model_copy(update={"models": [models[0], negative, models[2]]})
    elif mutation == "no_onpolicy":  # the king is always measured: without its values no winner can be judged
        unguarded = models[0].model_copy(update={"onpolicy": []})
        result = result.model_copy(update={"models": [unguarded, models[1], models[2]]})
    elif mutation == "long_onpolicy":
        own = [o.model_copy(update={"tokens": job.rules.onpolicy_new_tokens + 1}) for o in models[0].onpolicy]
        result = result.model_copy(update={"models": [models[0].model_copy(update={"onpolicy": own}), *models[1:]]})
    elif mutation == "winner_unguarded":  # a challenger past the king's KL margin must carry the guard's values
        winner = models[1].model_copy(update={"prompt_kl": [0.01] * len(models[1].prompt_kl), "onpolicy": []})
        result = result.model_copy(update={"models": [models[0], winner, models[2]]})
    elif mutation == "loser_guarded":  # values where no pod measures them: not what the job asked for
        loser = models[1].model_copy(update={"onpolicy": models[0].onpolicy})
        result = result.model_copy(update={"models": [models[0], loser, models[2]]})
    with pytest.raises(InvalidResult):
        validate_result(job, result)


def _winner(models, onpolicy):
    """Challenger 1 past the king's KL margin, carrying ``onpolicy`` as its guard values."""
    return models[1].model_copy(update={"prompt_kl": [0.01] * len(models[1].prompt_kl), "onpolicy": onpolicy})


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda m: m[:2], "model set differs"),  # a planned model without a result
        (lambda m: [m[0], m[1], m[1]], "model set differs"),  # one submission twice, another missing
        (
            lambda m: [*m[:2], m[2].model_copy(update={"ref": m[2].ref.model_copy(update={"repo": "org/other"})})],
            "names",
        ),
        (lambda m: [m[0], m[1].model_copy(update={"prompt_kl": m[1].prompt_kl[:-1]}), m[2]], "prompts"),
        (lambda m: [m[0], _winner(m, []), m[2]], "on-policy values"),
        (lambda m: [m[0], _winner(m, m[0].onpolicy[:-1]), m[2]], "on-policy values"),
    ],
)
def test_validate_result_is_the_one_check_the_verdicts_rely_on(mutate, match):
    """The verdicts index the result without checking it again: each of these must stop here (LESSONS 1, 27)."""
    job = make_job("v-3", n_challengers=2)
    result = fake_result(job)
    with pytest.raises(InvalidResult, match=match):
        validate_result(job, result.model_copy(update={"models": mutate(list(result.models))}))


def test_the_host_checks_a_result_in_exactly_one_place():
    """One authority: ``validate_result`` is called once on the host's path (``SinglePod.run``), nowhere else."""
    import ast

    calls = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted((ROOT / "validator").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "validate_result"
    ]
    assert len(calls) == 1 and calls[0].startswith("validator/pod_client.py"), calls
    assert {HttpPod, LocalPod} <= set(SinglePod.__subclasses__())

"""eval.schemas: the host <-> pod wire contract is strict, bounded and round-trips exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from eval.rules import ContestRules
from eval.schemas import (
    MAX_ONPOLICY_PROMPTS,
    MAX_ONPOLICY_TEXT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_PROMPTS_PER_JOB,
    EvalJob,
    EvalResult,
    JobProgress,
    JobStatus,
    ModelRef,
    ModelResult,
    ModelTimings,
    OnPolicyPrompt,
    SubmissionId,
    TeacherInfo,
)

HK1 = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
HK2 = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
REV = "0123456789abcdef0123456789abcdef01234567"
BH = "0x" + "ab" * 32


def sub(hotkey: str = HK1, block: int = 100) -> dict[str, Any]:
    return {"hotkey": hotkey, "commit_block": block}


def ref(repo: str = "org/student", revision: str = REV, hotkey: str = HK1, block: int = 100) -> dict[str, Any]:
    return {"repo": repo, "revision": revision, "submission": sub(hotkey, block)}


def job(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "job_id": "round-7",
        "block": 1234,
        "block_hash": BH,
        "rules": ContestRules().model_dump(mode="json"),
        "prompts": ["Once upon a time", "The capital of France is"],
        "king": ref(hotkey=HK1, block=10),
        "challengers": [ref(repo="org/challenger", hotkey=HK2, block=20)],
    }
    d.update(kw)
    return d


OWN = {"tokens": 128, "teacher_nll": 0.71, "reverse_kl": 0.2, "repetition": 0.05, "text": "its own words \u2026"}


def model_result(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"ref": ref(), "status": "ok", "prompt_kl": [0.25, 0.5], "prompt_tokens": [512, 512]}
    d.update(kw)
    return d


# --- ModelRef ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "revision",
    [REV.upper(), REV[:7], REV[:39], REV + "0", "main", "refs/heads/main", "g" * 40, " " + REV[1:], REV[:-1] + "\n"],
)
def test_revision_must_be_40_lowercase_hex(revision: str) -> None:
    # LESSONS 11: anything but a full commit SHA could move under us after the commit.
    with pytest.raises(ValidationError, match="revision"):
        ModelRef.model_validate(ref(revision=revision))


@pytest.mark.parametrize("repo", ["org/model", "Org-1/model_v2.5", "a/b", "a" * 96 + "/" + "b" * 96])
def test_good_repo_ids(repo: str) -> None:
    m = ModelRef.model_validate(ref(repo=repo))
    assert m.spec == f"{repo}@{REV}" and m.key == f"{HK1}:100"


@pytest.mark.parametrize(
    "repo",
    [
        "",
        "model",
        "../model",
        "org/..",
        "org/a..b",
        "org/model/extra",
        "https://huggingface.co/org/model",
        "hf.co:org/model",
        "org /model",
        "org/model ",
        "org/mo del",
        "org/model\n",
        "org/model\t",
        ".org/model",
        "org/-model",
        "a" * 97 + "/model",
        "org/" + "b" * 97,
        "org\\model",
        "org/modél",
    ],
)
def test_bad_repo_ids(repo: str) -> None:
    with pytest.raises(ValidationError):
        ModelRef.model_validate(ref(repo=repo))


SUBMISSION_ID = TypeAdapter(SubmissionId)


def test_submission_identity() -> None:
    s = SUBMISSION_ID.validate_python(sub(HK1, 7))
    assert str(s) == f"{HK1}:7" and s == SubmissionId(HK1, 7)
    for bad in [sub("not a hotkey!", 7), sub(HK1, -1), sub("5" * 10, 7), {**sub(HK1, 7), "block": 1}]:
        with pytest.raises(ValidationError):
            SUBMISSION_ID.validate_python(bad)


def test_submission_id_string_round_trip() -> None:
    for s in [SubmissionId(HK1, 0), SubmissionId(HK2, 7), SubmissionId(HK1, 10**12)]:
        assert SubmissionId.parse(str(s)) == s
        assert hash(SubmissionId.parse(str(s))) == hash(s)
    assert str(SubmissionId(HK1, 42)) == f"{HK1}:42"  # the form messages, job ids and the API always used


@pytest.mark.parametrize(
    "text",
    ["", HK1, f"{HK1}:", f"{HK1}:-1", f"{HK1}:1.5", f"{HK1}: 1", f"{HK1}:1e3", f"{HK1}:٣", "hk:1", f":{7}", f"{HK1}:x"],
)
def test_submission_id_parse_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ValueError):
        SubmissionId.parse(text)


def test_submission_id_orders_by_seniority() -> None:
    from eval.ownership import seniority

    ids = [SubmissionId(HK2, 5), SubmissionId(HK1, 9), SubmissionId(HK1, 5), SubmissionId("z" * 45, 1)]
    assert sorted(ids) == sorted(ids, key=lambda s: seniority(s.hotkey, s.commit_block))
    assert sorted(ids)[0].commit_block == 1 and sorted(ids)[1] == SubmissionId(HK2, 5)  # same block: smaller hotkey
    assert SubmissionId(HK1, 5) < SubmissionId(HK1, 9) <= SubmissionId(HK1, 9) and SubmissionId(HK2, 6) > SubmissionId(
        HK1, 5
    )
    assert min(ids) == SubmissionId("z" * 45, 1) and max(ids) == SubmissionId(HK1, 9)


def test_submission_id_is_frozen_and_not_a_tuple() -> None:
    s = SubmissionId(HK1, 5)
    with pytest.raises(AttributeError):
        s.hotkey = HK2  # type: ignore[misc]
    assert s != (HK1, 5) and {s: 1}[SubmissionId(HK1, 5)] == 1
    for hotkey, block in [("", 1), (f"{HK1}:2", 1), (HK1, -1), (HK1, True), (HK1, "5")]:
        with pytest.raises(ValueError):
            SubmissionId(hotkey, block)  # type: ignore[arg-type]


def test_submission_id_wire_shape_unchanged() -> None:
    r = ModelRef.model_validate(ref(hotkey=HK1, block=7))
    assert r.submission == SubmissionId(HK1, 7) and r.key == f"{HK1}:7"
    assert json.loads(r.model_dump_json())["submission"] == {"hotkey": HK1, "commit_block": 7}
    with pytest.raises(ValidationError):  # built in code, it is still checked when it goes on the wire
        ModelRef(repo="org/student", revision=REV, submission=SubmissionId("hkA", 7))


# --- strictness everywhere ----------------------------------------------------------------------


def _valid_documents() -> dict[type[BaseModel], dict[str, Any]]:
    teacher = {"repo": "Qwen/Qwen3.5-35B-A3B", "continuation_tokens": [512, 512]}
    result = {"job_id": "round-7", "block_hash": BH, "teacher": teacher, "models": [model_result()]}
    return {
        ModelRef: ref(),
        EvalJob: job(),
        ModelTimings: {"download_s": 1.5},
        ModelResult: model_result(),
        OnPolicyPrompt: {"tokens": 3, "teacher_nll": 0.5, "reverse_kl": 0.1, "repetition": 0.0, "text": "abc"},
        TeacherInfo: teacher,
        EvalResult: result,
        JobProgress: {"phase": "student", "prompt": 3, "prompt_count": 40},
        JobStatus: {"job_id": "round-7", "state": "done", "result": result},
    }


@pytest.mark.parametrize("cls", list(_valid_documents()), ids=lambda c: c.__name__)
def test_unknown_fields_rejected_everywhere(cls: type[BaseModel]) -> None:
    doc = _valid_documents()[cls]
    cls.model_validate(doc)  # the base document is valid
    # LESSONS 2: a miner- or pod-supplied "block" key must not sneak in beside chain fields.
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        cls.model_validate({**doc, "block_override": 1, "block": 999} if cls is not EvalJob else {**doc, "x": 1})


def test_block_key_cannot_ride_along_in_a_nested_ref() -> None:
    bad = job(challengers=[{**ref(hotkey=HK2, block=20), "block": 1}])
    with pytest.raises(ValidationError, match="block"):
        EvalJob.model_validate(bad)
    bad_sub = ref()
    bad_sub["submission"] = {**sub(), "block": 1}
    with pytest.raises(ValidationError):
        ModelRef.model_validate(bad_sub)


def test_wire_types_are_frozen() -> None:
    m = ModelRef.model_validate(ref())
    with pytest.raises(ValidationError):
        m.revision = "f" * 40  # type: ignore[misc]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_floats_rejected_from_json(literal: str) -> None:
    text = json.dumps(model_result()).replace("0.25", literal)
    with pytest.raises(ValidationError):
        ModelResult.model_validate_json(text)
    fp = json.dumps(model_result(fingerprint=[0.5])).replace("[0.5]", f"[{literal}]")
    with pytest.raises(ValidationError):
        ModelResult.model_validate_json(fp)
    with pytest.raises(ValidationError):
        ModelTimings.model_validate_json('{"score_s": ' + literal + "}")


# --- EvalJob -----------------------------------------------------------------------------------


def test_king_first_in_models() -> None:
    j = EvalJob.model_validate(job())
    assert [m.repo for m in j.models] == ["org/student", "org/challenger"]
    assert j.models[0] == j.king
    no_king = EvalJob.model_validate(job(king=None))
    assert [m.repo for m in no_king.models] == ["org/challenger"]


def test_each_submission_listed_once() -> None:
    # LESSONS 1: the same submission twice, or a challenger equal to the king, is refused.
    with pytest.raises(ValidationError, match="only once"):
        EvalJob.model_validate(job(challengers=[ref(hotkey=HK2, block=20), ref(repo="org/x", hotkey=HK2, block=20)]))
    with pytest.raises(ValidationError, match="only once"):
        EvalJob.model_validate(job(challengers=[ref(repo="org/other", hotkey=HK1, block=10)]))
    # the same model under two submissions is two entries (copies are judged later, not merged here)
    ok = EvalJob.model_validate(job(challengers=[ref(hotkey=HK2, block=20), ref(hotkey=HK2, block=21)]))
    assert len(ok.models) == 3


def test_job_needs_a_model() -> None:
    with pytest.raises(ValidationError, match="at least one model"):
        EvalJob.model_validate(job(king=None, challengers=[]))


@pytest.mark.parametrize(
    "prompts",
    [[], [""], ["x" * (MAX_PROMPT_CHARS + 1)], ["p"] * (MAX_PROMPTS_PER_JOB + 1), [1, 2]],
)
def test_prompt_bounds(prompts: list[Any]) -> None:
    with pytest.raises(ValidationError, match="prompts"):
        EvalJob.model_validate(job(prompts=prompts))


def test_prompt_bounds_inclusive() -> None:
    j = EvalJob.model_validate(job(prompts=["x" * MAX_PROMPT_CHARS] + ["p"] * (MAX_PROMPTS_PER_JOB - 1)))
    assert len(j.prompts) == MAX_PROMPTS_PER_JOB


@pytest.mark.parametrize("bad", [{"block_hash": "0x" + "AB" * 32}, {"block_hash": "ab" * 32}, {"block": -1}])
def test_job_chain_fields_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EvalJob.model_validate(job(**bad))


def test_job_rules_are_validated_too() -> None:
    rules = {**ContestRules().model_dump(mode="json"), "epsilon": -1}
    with pytest.raises(ValidationError, match="epsilon"):
        EvalJob.model_validate(job(rules=rules))


def test_job_json_round_trip() -> None:
    j = EvalJob.model_validate(job())
    back = EvalJob.model_validate_json(j.model_dump_json())
    assert back == j and back.rules.digest() == ContestRules().digest()


# --- ModelResult ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (model_result(prompt_tokens=[512]), "differ in length"),
        (model_result(status="model_error", error=None), "error message"),
        (model_result(status="model_error", error=""), "error message"),
        (model_result(prompt_kl=[], prompt_tokens=[]), "needs per-prompt KL"),
        (model_result(prompt_kl=[-0.1, 0.5]), "greater than or equal"),
        (model_result(prompt_tokens=[-1, 5]), "greater than or equal"),
        (model_result(status="great"), "status"),
        (model_result(error="x" * 2001, status="model_error"), "error"),
        (model_result(status="early_stopped", onpolicy=[OWN]), "only an ok result carries on-policy values"),
        (model_result(onpolicy=[{**OWN, "repetition": 1.5}]), "repetition"),
        (model_result(onpolicy=[{**OWN, "teacher_nll": -0.1}]), "teacher_nll"),
        (model_result(onpolicy=[{**OWN, "tokens": 0}]), "tokens"),
        (model_result(onpolicy=[{**OWN, "text": "x" * (MAX_ONPOLICY_TEXT_CHARS + 1)}]), "text"),
        (model_result(onpolicy=[{**OWN, "seed": 1}]), "seed"),
        (model_result(onpolicy=[OWN] * (MAX_ONPOLICY_PROMPTS + 1)), "onpolicy"),
    ],
)
def test_model_result_consistency(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        ModelResult.model_validate(doc)


def test_on_policy_values_round_trip_exactly() -> None:
    m = ModelResult.model_validate(model_result(onpolicy=[OWN, {**OWN, "text": "\u00e9\n\t\u0000"}]))
    assert ModelResult.model_validate_json(m.model_dump_json()) == m and m.onpolicy[1].text == "\u00e9\n\t\u0000"


def test_model_result_states() -> None:
    assert ModelResult.model_validate(model_result()).mean_kl == pytest.approx(0.375)
    err = ModelResult.model_validate(
        model_result(status="model_error", error="NaN logits", prompt_kl=[], prompt_tokens=[])
    )
    assert err.mean_kl is None
    early = ModelResult.model_validate(model_result(status="early_stopped", prompt_kl=[1.5], prompt_tokens=[512]))
    assert early.mean_kl == 1.5


# --- EvalResult --------------------------------------------------------------------------------


def test_eval_result_round_trip_preserves_ints_and_floats_exactly() -> None:
    # LESSONS 26: values must come back as the same type and the same bits.
    floats = [0.1 + 0.2, 1e-300, 5e-324, 2.0, 0.3333333333333333, 1.7976931348623157e308, 0.0]
    tokens = [0, 1, 2**31 + 7, 512, 3, 4, 9]
    doc = _valid_documents()[EvalResult]
    doc["models"] = [
        model_result(prompt_kl=floats, prompt_tokens=tokens, fingerprint=[-1.25, 3.0e-7]),
        model_result(ref=ref(hotkey=HK2, block=20), status="model_error", error="bad", prompt_kl=[], prompt_tokens=[]),
    ]
    r = EvalResult.model_validate(doc)
    back = EvalResult.model_validate_json(r.model_dump_json())
    assert back == r
    m = back.models[0]
    assert m.prompt_kl == floats and all(type(x) is float for x in m.prompt_kl)
    assert m.prompt_tokens == tokens and all(type(x) is int for x in m.prompt_tokens)
    assert [x.hex() for x in m.prompt_kl] == [x.hex() for x in floats]
    assert back.models[0].ref.submission.commit_block == 100 and isinstance(
        back.models[0].ref.submission.commit_block, int
    )
    # and through plain json (what the store / API do)
    again = EvalResult.model_validate(json.loads(json.dumps(r.model_dump(mode="json"))))
    assert again == r


def test_eval_result_by_key_refuses_duplicates() -> None:
    doc = _valid_documents()[EvalResult]
    doc["models"] = [model_result(prompt_kl=[0.9, 0.9]), model_result(prompt_kl=[0.0, 0.0])]
    r = EvalResult.model_validate(doc)
    # LESSONS 1: a second entry for the same submission must not silently replace the first.
    with pytest.raises(ValueError, match="more than once"):
        r.by_key()
    single = EvalResult.model_validate(_valid_documents()[EvalResult])
    assert list(single.by_key()) == [f"{HK1}:100"]


def test_job_status_and_progress() -> None:
    s = JobStatus.model_validate(_valid_documents()[JobStatus])
    assert s.result is not None and s.progress.phase == "queued"
    for bad in [{"state": "exploded"}, {"progress": {"prompt": -1}}, {"progress": {"eta_s": -5}}]:
        with pytest.raises(ValidationError):
            JobStatus.model_validate({"job_id": "j", "state": "running", **bad})
    with pytest.raises(ValidationError):
        JobStatus.model_validate({"job_id": "bad id with spaces", "state": "running"})

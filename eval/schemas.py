"""The wire contract between the validator host and the GPU pod.

Both sides validate every message with these classes; the store persists and
the API serves the same shapes. Strict by construction: unknown fields are
rejected, sizes are bounded and NaN/inf cannot pass (LESSONS 26).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, model_validator

from eval.rules import ContestRules

REPO_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"
REVISION_PATTERN = r"^[0-9a-f]{40}$"
BLOCK_HASH_PATTERN = r"^0x[0-9a-f]{64}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
SS58_PATTERN = r"^[1-9A-HJ-NP-Za-km-z]{40,60}$"  # base58 alphabet; also accepts sim hotkeys

MAX_PROMPTS_PER_JOB = 1024
MAX_PROMPT_CHARS = 100_000
MAX_MODELS_PER_JOB = 65  # king + 64 challengers
MAX_FINGERPRINT_LEN = 65_536

RepoId = Annotated[str, StringConstraints(pattern=REPO_ID_PATTERN)]
Revision = Annotated[str, StringConstraints(pattern=REVISION_PATTERN)]
BlockHash = Annotated[str, StringConstraints(pattern=BLOCK_HASH_PATTERN)]
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_PATTERN)]
Hotkey = Annotated[str, StringConstraints(pattern=SS58_PATTERN)]
JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
Seconds = Annotated[float, Field(ge=0.0, le=10_000_000.0)]


class Strict(BaseModel):
    """Base for every wire type: frozen, no extra keys, no NaN/inf."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


@functools.total_ordering
@dataclass(frozen=True, slots=True, eq=True)
class SubmissionId:
    """Who submitted, and when: the only identity of a submission (never the uid, LESSONS 1, 17).

    One type for the domain, the store, the wire and the API. ``str()`` gives the one string
    form (``"hotkey:block"``) used in messages, job paths and URLs; ``parse`` reads it back and
    is the only place that does. Ordered by seniority (earlier commit block first, ties to the
    smaller hotkey), the order every ownership and FIFO decision uses. Built directly from
    chain fields it is trusted; on the wire pydantic validates both fields (SS58 hotkey,
    block >= 0, no extra keys).
    """

    __pydantic_config__ = ConfigDict(extra="forbid", revalidate_instances="always")

    hotkey: Hotkey
    commit_block: Annotated[int, Field(ge=0)]

    def __post_init__(self) -> None:
        if not isinstance(self.hotkey, str) or not self.hotkey or ":" in self.hotkey:
            raise ValueError(f"bad hotkey {self.hotkey!r}")
        if isinstance(self.commit_block, bool) or not isinstance(self.commit_block, int) or self.commit_block < 0:
            raise ValueError(f"bad commit block {self.commit_block!r}")

    def __str__(self) -> str:
        return f"{self.hotkey}:{self.commit_block}"

    @property
    def seniority(self) -> tuple[int, str]:
        """The sort key: earlier commit block first, ties to the smaller hotkey."""
        return (self.commit_block, self.hotkey)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SubmissionId):
            return NotImplemented
        return self.seniority < other.seniority

    @classmethod
    def parse(cls, text: str) -> SubmissionId:
        """Read the string form back, validating both parts as the wire does; ``ValueError`` if malformed."""
        hotkey, sep, block = text.rpartition(":")
        if not sep or not block.isascii() or not block.isdigit() or len(block) > 18:
            raise ValueError(f"not a submission id (hotkey:block): {text[:200]!r}")
        return _SUBMISSION_ID.validate_python({"hotkey": hotkey, "commit_block": int(block)})


_SUBMISSION_ID: TypeAdapter[SubmissionId] = TypeAdapter(SubmissionId)


class ModelRef(Strict):
    """A submission's model pinned to an immutable revision."""

    repo: RepoId
    revision: Revision
    submission: SubmissionId

    @property
    def key(self) -> str:
        """The submission's string form (``str(SubmissionId)``): job paths, result lookup."""
        return str(self.submission)

    @property
    def spec(self) -> str:
        return f"{self.repo}@{self.revision}"

    @model_validator(mode="after")
    def _no_dot_segments(self) -> ModelRef:
        if ".." in self.repo:
            raise ValueError("repo id may not contain '..'")
        return self


class EvalJob(Strict):
    """One king-of-the-hill evaluation: every model is scored on the same prompts."""

    job_id: JobId
    block: int = Field(ge=0)
    block_hash: BlockHash
    rules: ContestRules
    teacher_revision: Revision | None = None
    prompts: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS)]] = Field(
        min_length=1, max_length=MAX_PROMPTS_PER_JOB
    )
    king: ModelRef | None = None
    challengers: list[ModelRef] = Field(default_factory=list, max_length=MAX_MODELS_PER_JOB - 1)

    @property
    def models(self) -> list[ModelRef]:
        """King first (it is scored in full and early stopping compares against it)."""
        return ([self.king] if self.king else []) + list(self.challengers)

    @model_validator(mode="after")
    def _each_submission_once(self) -> EvalJob:
        keys = [m.key for m in self.models]
        if not keys:
            raise ValueError("a job needs at least one model")
        if len(set(keys)) != len(keys):
            raise ValueError("a submission may appear only once per job")
        return self


MAX_ONPOLICY_PROMPTS = 64
MAX_ONPOLICY_TEXT_CHARS = 1000
"""A guarded continuation's text is kept up to this many characters (128 tokens are ~500-700)."""

ModelStatus = Literal["ok", "model_error", "early_stopped"]


class ModelTimings(Strict):
    download_s: Seconds = 0.0
    load_s: Seconds = 0.0
    score_s: Seconds = 0.0
    onpolicy_s: Seconds = 0.0
    total_s: Seconds = 0.0


class OnPolicyPrompt(Strict):
    """One guarded prompt as the model continued it itself (greedy) and the teacher then read it.

    Means over the model's own continuation tokens: ``teacher_nll`` is the teacher's
    negative log-likelihood of each token, ``reverse_kl`` is KL(model || teacher) at
    each position (full vocabulary), ``repetition`` the share of the continuation's
    n-grams that already occurred earlier in it (``eval.onpolicy.repetition_share``).
    """

    tokens: int = Field(ge=1, le=1024)
    teacher_nll: float = Field(ge=0.0)
    reverse_kl: float = Field(ge=0.0)
    repetition: float = Field(ge=0.0, le=1.0)
    text: str = Field("", max_length=MAX_ONPOLICY_TEXT_CHARS)


class ModelResult(Strict):
    """One model's outcome. prompt_kl[i] is the mean KL over prompt i's continuation tokens."""

    ref: ModelRef
    status: ModelStatus
    error: str | None = Field(None, max_length=2000)
    prompt_kl: list[Annotated[float, Field(ge=0.0)]] = Field(default_factory=list, max_length=MAX_PROMPTS_PER_JOB)
    prompt_tokens: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list, max_length=MAX_PROMPTS_PER_JOB)
    content_hash: Sha256 | None = None
    fingerprint: list[float] | None = Field(None, max_length=MAX_FINGERPRINT_LEN)
    onpolicy: list[OnPolicyPrompt] = Field(
        default_factory=list,
        max_length=MAX_ONPOLICY_PROMPTS,
        description="the on-policy guard's values for the round's first prompts (ok models only)",
    )
    timings: ModelTimings = ModelTimings()

    @model_validator(mode="after")
    def _consistent(self) -> ModelResult:
        if len(self.prompt_kl) != len(self.prompt_tokens):
            raise ValueError("prompt_kl and prompt_tokens differ in length")
        if self.onpolicy and self.status != "ok":
            raise ValueError("only an ok result carries on-policy values")
        if self.status == "model_error" and not self.error:
            raise ValueError("model_error needs an error message")
        if self.status == "ok" and not self.prompt_kl:
            raise ValueError("an ok result needs per-prompt KL")
        return self

    @property
    def mean_kl(self) -> float | None:
        return sum(self.prompt_kl) / len(self.prompt_kl) if self.prompt_kl else None


class TeacherInfo(Strict):
    repo: RepoId
    revision: Revision | None = None
    continuation_tokens: list[Annotated[int, Field(ge=0)]] = Field(max_length=MAX_PROMPTS_PER_JOB)
    seconds: Seconds = 0.0
    onpolicy_s: Seconds = Field(0.0, description="the teacher reading the models' own continuations (with a reload)")


class EvalResult(Strict):
    """What the pod returns for a job; the host checks it against the job before use."""

    job_id: JobId
    block_hash: BlockHash
    teacher: TeacherInfo
    models: list[ModelResult] = Field(max_length=MAX_MODELS_PER_JOB)
    device: str = Field("", max_length=200)
    total_s: Seconds = 0.0

    def by_key(self) -> dict[str, ModelResult]:
        """Results keyed by submission; a duplicate is refused, never silently overwritten (LESSONS 1)."""
        out: dict[str, ModelResult] = {}
        for m in self.models:
            if m.ref.key in out:
                raise ValueError(f"submission {m.ref.key} appears more than once in result {self.job_id}")
            out[m.ref.key] = m
        return out


JobState = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]


class JobProgress(Strict):
    """Live progress of a running job, readable while it runs."""

    phase: Literal["queued", "teacher", "download", "student", "onpolicy", "fingerprint", "done"] = "queued"
    model: str | None = Field(None, max_length=300)
    model_index: int = Field(0, ge=0)
    model_count: int = Field(0, ge=0)
    prompt: int = Field(0, ge=0)
    prompt_count: int = Field(0, ge=0)
    tokens_per_s: float = Field(0.0, ge=0.0)
    eta_s: float | None = Field(None, ge=0.0)


class JobStatus(Strict):
    """The pod's answer to GET /jobs/{id}."""

    job_id: JobId
    state: JobState
    progress: JobProgress = JobProgress()
    error: str | None = Field(None, max_length=2000)
    result: EvalResult | None = None

"""The one way an evaluation job is made, for a validator's round and a miner's local estimate alike.

Why one builder: "would I dethrone the king?" only gets the validator's answer when the
miner's job has the validator's shape (same fields, the king first and scored in full, the
challengers after it). The host names models by their chain identity, the miner by
placeholder identities; both hand this function ``ModelRef``s and nothing else differs.
"""

from __future__ import annotations

from collections.abc import Sequence

from eval.rules import ContestRules
from eval.schemas import EvalJob, ModelRef, SubmissionId


def model_ref(repo: str, revision: str, submission: SubmissionId) -> ModelRef:
    """A model pinned to ``revision``, named by the submission identity that owns it."""
    return ModelRef(repo=repo, revision=revision, submission=submission)


def build_job(
    job_id: str,
    block: int,
    block_hash: str,
    rules: ContestRules,
    teacher_revision: str | None,
    prompts: list[str],
    king: ModelRef | None,
    challengers: Sequence[ModelRef],
) -> EvalJob:
    """The job every model of a round is scored by: ``king`` (None when there is none) first, then ``challengers``."""
    return EvalJob(
        job_id=job_id,
        block=block,
        block_hash=block_hash,
        rules=rules,
        teacher_revision=teacher_revision,
        prompts=prompts,
        king=king,
        challengers=list(challengers),
    )

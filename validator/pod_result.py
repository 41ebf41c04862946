"""The one check of a pod's answer against the job the host sent (pure).

A pod is not trusted: whatever it returns is refused unless it answers exactly
the job sent, model by model, with complete and finite values. ``SinglePod.run``
(``validator.pod_client``) is the one place the host calls it; the round runner
and the verdicts use the checked result as it is.
"""

from __future__ import annotations

import math

from eval.schemas import EvalJob, EvalResult
from eval.stats import expected_onpolicy
from validator.pod_errors import InvalidResult


def validate_result(job: EvalJob, result: EvalResult) -> EvalResult:
    """Check that ``result`` answers exactly ``job``; raise InvalidResult naming the first mismatch."""
    if result.job_id != job.job_id or result.block_hash != job.block_hash:
        raise InvalidResult(f"result is for job {result.job_id}, expected {job.job_id}")
    n = len(job.prompts)
    if len(result.teacher.continuation_tokens) != n:
        raise InvalidResult(f"teacher reports {len(result.teacher.continuation_tokens)} prompts, job has {n}")
    expected = {m.key: m for m in job.models}
    got = [m.ref.key for m in result.models]
    if len(got) != len(set(got)) or set(got) != set(expected):
        raise InvalidResult(f"model set differs: sent {sorted(expected)}, got {sorted(got)}")
    king = next((m for m in result.models if job.king is not None and m.ref.key == job.king.key), None)
    king_kl = list(king.prompt_kl) if king is not None and king.status == "ok" else None
    for m in result.models:
        if m.ref != expected[m.ref.key]:
            raise InvalidResult(f"{m.ref.key}: result names {m.ref.spec}, job sent {expected[m.ref.key].spec}")
        if m.status == "ok" and len(m.prompt_kl) != n:
            raise InvalidResult(f"{m.ref.key}: ok with {len(m.prompt_kl)} of {n} prompts")
        if m.status == "early_stopped":
            if job.king is not None and m.ref.key == job.king.key:
                raise InvalidResult("the king can never be early-stopped")
            if not 0 < len(m.prompt_kl) <= n:
                raise InvalidResult(f"{m.ref.key}: early_stopped with {len(m.prompt_kl)} prompts")
        if any(t > job.rules.max_new_tokens for t in m.prompt_tokens):
            raise InvalidResult(f"{m.ref.key}: more tokens than max_new_tokens on some prompt")
        if list(m.prompt_tokens) != list(result.teacher.continuation_tokens[: len(m.prompt_tokens)]):
            # every continuation position is scored; fewer tokens means silent truncation (LESSONS 12)
            raise InvalidResult(f"{m.ref.key}: scored tokens differ from the teacher's continuation tokens")
        want = expected_onpolicy(m is king, king_kl, m.prompt_kl, job.rules, n) if m.status == "ok" else 0
        if m.status == "ok" and len(m.onpolicy) != want:
            # the king and every KL winner carry the guard's values on the same prompts; missing never passes
            raise InvalidResult(f"{m.ref.key}: {len(m.onpolicy)} on-policy values, the rules want {want}")
        if any(o.tokens > job.rules.onpolicy_new_tokens for o in m.onpolicy):
            raise InvalidResult(f"{m.ref.key}: more on-policy tokens than onpolicy_new_tokens")
        values = list(m.prompt_kl) + list(m.fingerprint or [])
        if not all(math.isfinite(v) for v in values):
            raise InvalidResult(f"{m.ref.key}: non-finite values")
        if any(v < -1e-6 for v in m.prompt_kl):  # KL is never negative beyond float rounding
            raise InvalidResult(f"{m.ref.key}: negative KL")
    return result

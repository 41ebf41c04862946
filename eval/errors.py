"""Typed errors shared by every process. Each carries enough context to act on.

The split that matters: a ``ModelError`` is the miner's problem (that model gets
``model_error`` and the job goes on); an ``InfraError`` is ours (the job fails,
nobody is penalised); a ``TransientError`` means "ask again later" and must
never disqualify anyone (LESSONS 21).
"""

from __future__ import annotations


class KlhillError(Exception):
    """Root of all project errors."""


class EvalError(KlhillError):
    """Something went wrong while evaluating."""


class ModelError(EvalError):
    """The model under test is at fault (bad weights, NaN, wrong shape, fails to load)."""


class VocabMismatchError(ModelError):
    """Teacher and student disagree on the vocabulary width."""


class InfraError(EvalError):
    """The evaluation machine is at fault (out of memory, disk full, teacher missing)."""


class PromptError(EvalError):
    """Prompts are empty, too long or cannot be sampled."""


class UsageError(KlhillError):
    """A bad command line, setting or local input (a teacher, a wallet, a rules file): nothing was checked."""


class TransientError(KlhillError):
    """A remote service answered 'not now' (429, 5xx, timeout): retry, never disqualify."""


class HubAuthError(TransientError):
    """The hub refused *our* credentials (a 401 without a repository error code, or a bare 403).

    It says nothing about the repo: an expired or wrong ``HF_TOKEN`` would otherwise
    read as "private repo" and disqualify everyone (LESSONS 28). No verdict, retry
    later, and tell the operator loudly.
    """


class PromptSourceUnavailable(TransientError):
    """The prompt corpus could not be listed or read right now: the round waits, nobody is judged."""

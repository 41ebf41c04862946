"""What can go wrong with a pod, as the host's pod clients raise it.

Each kind tells the caller what to do next: ``PodDown`` and a failed or invalid
answer move a pool's job to the next pod, ``PodTimeout`` ends the job (the deadline
is spent), ``PodRejected`` will not change on a retry.
"""

from __future__ import annotations

from eval.errors import KlhillError


class PodError(KlhillError):
    """The pod's answer cannot be used for this job."""


class PodDown(PodError):
    """The pod cannot be reached (or keeps losing the job): try another pod."""


class PodTimeout(PodError):
    """The job missed its deadline; it was cancelled on the pod."""


class PodRejected(PodError):
    """The pod refused the request (auth, schema, conflict): retrying will not help."""


class PodJobFailed(PodError):
    """The pod ran the job and reported an infrastructure failure or a cancellation."""


class InvalidResult(PodError):
    """The result does not match the job that was sent."""

"""What a failed hub call means: a repo's own answer, our credentials, or "not now".

``huggingface_hub.utils.hf_raise_for_status`` picks an exception class from the
response's ``X-Error-Code`` / ``X-Error-Message`` headers, with one guess on top:
a 401 on a repo URL of ``https://`` endpoints becomes ``RepositoryNotFoundError``
even when the hub sent no repository error code. That guess is wrong for a
validator: an expired or wrong ``HF_TOKEN`` (401 "Invalid credentials in
Authorization header") or a token without read access (a bare 403) is *our*
problem, and reading it as "repo not found" would disqualify everyone
(LESSONS 28). So the headers decide here, not the class:

- ``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound`` / ``GatedRepo``
  codes, and the "disabled" message: the repo's own answer (definite);
- a 401 without a code on a request that sent *no* token: the hub wants a login
  to show this repo, i.e. it is private or missing (definite, as the library reads it);
- any other 401 or 403: our credentials (``auth``: no verdict, reported loudly);
- everything else (429, 5xx, a 404 without a code, connection errors,
  timeouts): ``transient``.

``snapshot_download`` hides the hub's answer inside ``LocalEntryNotFoundError``
(e.g. a disabled repo's 403); its ``__cause__`` is followed.
"""

from __future__ import annotations

from typing import Literal

HubAnswer = Literal["repo_not_found", "revision_not_found", "entry_not_found", "gated", "disabled", "auth", "transient"]

DISABLED_MESSAGE = "Access to this resource is disabled."
"""The exact ``X-Error-Message`` the hub sends for a disabled repo (what ``hf_raise_for_status`` matches)."""
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
"""The ``X-Error-Message`` of a 401 for a token the hub does not accept (expired, revoked, mistyped)."""

_CODES: dict[str, HubAnswer] = {
    "RepoNotFound": "repo_not_found",
    "RevisionNotFound": "revision_not_found",
    "EntryNotFound": "entry_not_found",
    "GatedRepo": "gated",
}


def classify_response(status: int, headers: dict[str, str] | object, sent_token: bool = True) -> HubAnswer:
    """The meaning of one error response, from its status, the hub's error headers and whether we sent a token."""
    get = getattr(headers, "get", None)
    code = get("X-Error-Code") if get else None
    message = get("X-Error-Message") if get else None
    if code in _CODES:
        return _CODES[code]
    if message == DISABLED_MESSAGE:
        return "disabled"
    if status == 401 and not sent_token and message != INVALID_CREDENTIALS:
        return "repo_not_found"
    if status in (401, 403):
        return "auth"
    return "transient"


def classify_hub_error(exc: BaseException) -> tuple[HubAnswer, str] | None:
    """(meaning, short reason) for an exception from a hub call, or None if it is not a hub/network failure.

    The reason names the status and the hub's message, never a token or a header value we sent.
    """
    from huggingface_hub import errors as hf_errors

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, hf_errors.HfHubHTTPError) and cur.response is not None:
            status = cur.response.status_code
            answer = classify_response(status, cur.response.headers, _sent_token(cur.response))
            message = cur.response.headers.get("X-Error-Message") or ""
            return answer, f"HTTP {status}" + (f" ({message[:200]})" if message else "")
        if isinstance(cur, hf_errors.LocalEntryNotFoundError):  # snapshot_download's wrapper: look inside
            cur = cur.__cause__ or cur.__context__
            if cur is None:
                return "transient", "the hub could not be reached"
            continue
        if isinstance(cur, (OSError, TimeoutError)) or type(cur).__module__.split(".")[0] in _HTTP_MODULES:
            return "transient", type(cur).__name__
        return None
    return "transient", type(exc).__name__


_HTTP_MODULES = frozenset({"httpx", "httpx2", "httpcore", "httpcore2", "h11"})


def _sent_token(response: object) -> bool:
    """Did the request carry an Authorization header? Unknown counts as yes: then a 401 gives no verdict."""
    try:
        headers = response.request.headers  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError for a response built without a request
        return True
    return bool(headers.get("authorization"))

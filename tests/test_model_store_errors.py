"""eval.model_store.errors: the hub's answers, classified from the exceptions huggingface_hub itself raises."""

from __future__ import annotations

import httpx2
import pytest
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import hf_raise_for_status

from eval.model_store.errors import DISABLED_MESSAGE, INVALID_CREDENTIALS, classify_hub_error, classify_response

REPO_URL = "https://huggingface.co/api/models/org/m/revision/" + "a" * 40
FILE_URL = "https://huggingface.co/org/m/resolve/" + "a" * 40 + "/config.json"


def _raised(status: int, headers: dict[str, str], url: str = REPO_URL, token: str | None = "hf_x") -> Exception:
    """The exception huggingface_hub raises for this response (``hf_raise_for_status``, unmodified)."""
    body = headers.get("X-Error-Message", "")
    sent = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx2.Response(
        status,
        headers=headers,
        json={"error": body} if body else None,
        request=httpx2.Request("GET", url, headers=sent),
    )
    with pytest.raises(hf_errors.HfHubHTTPError) as info:
        hf_raise_for_status(response)
    return info.value


@pytest.mark.parametrize(
    ("status", "headers", "library_class", "answer"),
    [
        # The repo's own answers: definite.
        (
            401,
            {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            hf_errors.RepositoryNotFoundError,
            "repo_not_found",
        ),
        (404, {"X-Error-Code": "RepoNotFound"}, hf_errors.RepositoryNotFoundError, "repo_not_found"),
        (404, {"X-Error-Code": "RevisionNotFound"}, hf_errors.RevisionNotFoundError, "revision_not_found"),
        (404, {"X-Error-Code": "EntryNotFound"}, hf_errors.RemoteEntryNotFoundError, "entry_not_found"),
        (403, {"X-Error-Code": "GatedRepo"}, hf_errors.GatedRepoError, "gated"),
        (401, {"X-Error-Code": "GatedRepo"}, hf_errors.GatedRepoError, "gated"),
        (403, {"X-Error-Message": DISABLED_MESSAGE}, hf_errors.DisabledRepoError, "disabled"),
        # Our credentials: no verdict. The library calls the bare 401 "RepositoryNotFound" on https repo URLs.
        (401, {"X-Error-Message": INVALID_CREDENTIALS}, hf_errors.HfHubHTTPError, "auth"),
        (401, {}, hf_errors.RepositoryNotFoundError, "auth"),
        (403, {}, hf_errors.HfHubHTTPError, "auth"),
        (
            403,
            {"X-Error-Message": "This authentication method does not have sufficient permissions"},
            hf_errors.HfHubHTTPError,
            "auth",
        ),
        # Outages and answers that are not the hub's repository logic: no verdict.
        (429, {}, hf_errors.HfHubHTTPError, "transient"),
        (500, {}, hf_errors.HfHubHTTPError, "transient"),
        (503, {}, hf_errors.HfHubHTTPError, "transient"),
        (404, {}, hf_errors.HfHubHTTPError, "transient"),
    ],
)
def test_the_headers_decide_not_the_library_guess(status, headers, library_class, answer):
    exc = _raised(status, headers)
    assert type(exc) is library_class  # what the pinned library really raises for this response
    assert classify_hub_error(exc)[0] == answer
    assert classify_response(status, headers) == answer


def test_a_rejected_token_on_a_file_url_is_auth_not_repo_not_found():
    exc = _raised(401, {}, FILE_URL)
    assert isinstance(exc, hf_errors.RepositoryNotFoundError)  # the library's guess for https repo URLs
    answer, reason = classify_hub_error(exc)
    assert answer == "auth" and reason == "HTTP 401"


def test_a_bare_401_without_a_token_is_the_repo_with_one_it_is_ours():
    # Anonymous: nothing of ours can be wrong, the hub wants a login to show the repo (private or missing).
    anonymous = _raised(401, {}, token=None)
    assert isinstance(anonymous, hf_errors.RepositoryNotFoundError)
    assert classify_hub_error(anonymous)[0] == "repo_not_found"
    assert classify_hub_error(_raised(401, {}, token="hf_expired"))[0] == "auth"
    assert classify_response(401, {}) == "auth"  # not knowing what was sent never yields a verdict


def test_local_entry_not_found_is_judged_by_its_cause():
    # snapshot_download: `raise LocalEntryNotFoundError(...) from api_call_error`
    for cause, answer in [
        (_raised(403, {"X-Error-Message": DISABLED_MESSAGE}), "disabled"),
        (_raised(503, {}), "transient"),
        (httpx2.ConnectError("refused"), "transient"),
    ]:
        try:
            raise hf_errors.LocalEntryNotFoundError("An error happened while trying to locate the files") from cause
        except hf_errors.LocalEntryNotFoundError as exc:
            assert classify_hub_error(exc)[0] == answer
    assert classify_hub_error(hf_errors.LocalEntryNotFoundError("offline"))[0] == "transient"


@pytest.mark.parametrize(
    "exc",
    [
        httpx2.ConnectError("refused"),
        httpx2.ReadTimeout("slow"),
        httpx2.RemoteProtocolError("closed"),
        TimeoutError("slow"),
        ConnectionResetError("reset"),
    ],
)
def test_network_failures_are_transient(exc):
    assert classify_hub_error(exc) == ("transient", type(exc).__name__)


def test_other_exceptions_are_not_ours_to_translate():
    assert classify_hub_error(ValueError("a bug")) is None
    assert classify_hub_error(KeyError("x")) is None


def test_the_reason_carries_the_hubs_message_not_what_we_sent():
    exc = _raised(401, {"X-Error-Message": INVALID_CREDENTIALS})
    assert classify_hub_error(exc) == ("auth", f"HTTP 401 ({INVALID_CREDENTIALS})")

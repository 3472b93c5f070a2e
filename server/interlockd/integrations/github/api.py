"""GitHub's REST API as the GitHub tools call it: requests, pages, errors a model can read.

Every request carries the connection's bearer token. A 401 gets one fresh
token (:meth:`TokenSource.after_unauthorized`, which refreshes once under the
connection's lock) and one retry; a second 401 marks the connection broken.
Rate limits — a 403 with ``x-ratelimit-remaining: 0`` (wait for
``x-ratelimit-reset``) or a 403/429 secondary limit (``retry-after``) — are
waited out once when the wait is short, and otherwise become a
:class:`ToolError` saying when to try again. Every other failure becomes a
ToolError that names what was asked for (404 not found, 422 GitHub's
validation message, 5xx) — never GitHub's whole payload. Lists come one page
at a time with the number of the next page, from the ``Link`` header.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from interlockd.integrations.base import ConnectionBroken
from interlockd.integrations.github.oauth import API_HEADERS, DEFAULT_API_BASE_URL
from interlockd.tools.base import ToolError

#: GitHub's largest page.
MAX_PER_PAGE = 100
# A rate limit that lifts within this many seconds is waited out (once).
DEFAULT_MAX_WAIT = 10.0
# How long GitHub says to wait after a secondary limit that names no time.
_SECONDARY_WAIT = 60.0
_MESSAGE_CHARS = 300


class TokenSource(Protocol):
    """Where the API gets its bearer token (:class:`GitHubAccessToken`)."""

    async def get(self) -> str: ...

    async def after_unauthorized(self, rejected: str) -> str: ...

    async def broken(self, reason: str) -> ConnectionBroken: ...


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: its items and the next page's number (None: the last page)."""

    items: list[dict[str, Any]]
    next_page: int | None
    total_count: int | None = None  # searches: how many match in all
    incomplete_results: bool = False  # searches: GitHub timed out and matched only part


class GitHubAPI:
    """The REST calls of the GitHub tools, for one connection."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        token: TokenSource,
        *,
        base_url: str = DEFAULT_API_BASE_URL,
        max_wait: float = DEFAULT_MAX_WAIT,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = http
        self._token = token
        self._base = base_url.rstrip("/")
        self._max_wait = max_wait
        self._clock = clock
        self._sleep = sleep

    # ---- the calls ------------------------------------------------------------------

    async def user(self) -> tuple[dict[str, Any], list[str] | None]:
        """The connected account, and the token's OAuth scopes when GitHub reports them."""
        response = await self._call("GET", "/user", what="the connected GitHub account")
        scopes = response.headers.get("x-oauth-scopes")
        listed = None if scopes is None else [s.strip() for s in scopes.split(",") if s.strip()]
        return _object(response, "the connected GitHub account"), listed

    async def user_repos(self, *, page: int, per_page: int, sort: str, visibility: str) -> Page:
        """Repositories the account owns, collaborates on or sees through its organizations."""
        direction = "asc" if sort == "full_name" else "desc"
        params = {
            "sort": sort,
            "direction": direction,
            "visibility": visibility,
            "per_page": str(per_page),
            "page": str(page),
        }
        what = "the account's repositories"
        response = await self._call("GET", "/user/repos", what=what, params=params)
        return Page(_objects(response, what), _next_page(response))

    async def search_issues(
        self, q: str, *, page: int, per_page: int, sort: str | None, order: str
    ) -> Page:
        """``GET /search/issues`` with ``q`` as given."""
        params = {"q": q, "order": order, "per_page": str(per_page), "page": str(page)}
        if sort is not None:
            params["sort"] = sort
        what = "the issue search"
        response = await self._call("GET", "/search/issues", what=what, params=params)
        body = _object(response, what)
        items = body.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ToolError("GitHub answered the issue search without a list of items")
        total = body.get("total_count")
        return Page(
            items,
            _next_page(response),
            total_count=total if isinstance(total, int) else None,
            incomplete_results=bool(body.get("incomplete_results")),
        )

    async def issue(self, owner: str, repo: str, number: int) -> dict[str, Any]:
        what = f"issue {owner}/{repo}#{number}"
        response = await self._call("GET", f"{_repo_path(owner, repo)}/issues/{number}", what=what)
        return _object(response, what)

    async def issue_comments(
        self, owner: str, repo: str, number: int, *, page: int, per_page: int
    ) -> Page:
        what = f"the comments of {owner}/{repo}#{number}"
        response = await self._call(
            "GET",
            f"{_repo_path(owner, repo)}/issues/{number}/comments",
            what=what,
            params={"per_page": str(per_page), "page": str(page)},
        )
        return Page(_objects(response, what), _next_page(response))

    async def create_issue(
        self,
        owner: str,
        repo: str,
        *,
        title: str,
        body: str | None,
        labels: Sequence[str],
        assignees: Sequence[str],
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"title": title}
        if body is not None:
            payload["body"] = body
        if labels:
            payload["labels"] = list(labels)
        if assignees:
            payload["assignees"] = list(assignees)
        what = f"a new issue in {owner}/{repo}"
        response = await self._call(
            "POST", f"{_repo_path(owner, repo)}/issues", what=what, json=payload
        )
        return _object(response, what)

    async def create_comment(self, owner: str, repo: str, number: int, body: str) -> dict[str, Any]:
        what = f"a new comment on {owner}/{repo}#{number}"
        response = await self._call(
            "POST",
            f"{_repo_path(owner, repo)}/issues/{number}/comments",
            what=what,
            json={"body": body},
        )
        return _object(response, what)

    async def contents(
        self, owner: str, repo: str, path: str, ref: str | None
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """A file (a dict) or a directory listing (a list) of the repository at ``ref``."""
        segments = "/".join(urllib.parse.quote(s, safe="") for s in path.split("/") if s)
        at = f" at {ref!r}" if ref else ""
        what = f"{path or 'the top directory'!r}{at} in {owner}/{repo}"
        response = await self._call(
            "GET",
            f"{_repo_path(owner, repo)}/contents/{segments}".rstrip("/"),
            what=what,
            params={"ref": ref} if ref else None,
        )
        value = _json(response, what)
        if isinstance(value, list) and all(isinstance(e, dict) for e in value):
            return value
        if isinstance(value, dict):
            return value
        raise ToolError(f"GitHub answered {what} with something unexpected")

    # ---- one request, with its token, retries and errors -------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        token = await self._token.get()
        refreshed = waited = False
        while True:
            response = await self._send(method, path, what, token, params, json)
            if response.status_code == 401:
                if refreshed:
                    raise await self._token.broken(
                        "GitHub rejected a freshly refreshed access token"
                    )
                token = await self._token.after_unauthorized(token)
                refreshed = True
                continue
            wait = self._rate_limit_wait(response)
            if wait is not None:
                # A rate-limited request was not carried out: repeating it is safe.
                if not waited and wait <= self._max_wait:
                    waited = True
                    await self._sleep(wait)
                    continue
                raise ToolError(self._rate_limit_message(response, wait))
            if response.is_success:
                return response
            raise ToolError(_failure(response, method, what))

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        token: str,
        params: Mapping[str, str] | None,
        json: Any,
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method,
                f"{self._base}{path}",
                params=params,
                json=json,
                headers={**API_HEADERS, "authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            kind = type(exc).__name__
            if method != "GET" and not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                raise ToolError(
                    f"the request to GitHub for {what} failed midway ({kind}); it may or may "
                    "not have happened — check before trying again"
                ) from None
            raise ToolError(
                f"could not reach GitHub for {what} ({kind}); try again shortly"
            ) from None

    def _rate_limit_wait(self, response: httpx.Response) -> float | None:
        """Seconds until a rate-limited request may be repeated; None if it was not limited."""
        if response.status_code not in (403, 429):
            return None
        headers = response.headers
        retry_after = headers.get("retry-after", "").strip()
        if retry_after.isdigit():
            return float(retry_after)
        if headers.get("x-ratelimit-remaining") == "0":
            reset = headers.get("x-ratelimit-reset", "")
            return max(0.0, int(reset) - self._clock()) if reset.isdigit() else _SECONDARY_WAIT
        if response.status_code == 429 or "rate limit" in _github_message(response).lower():
            return _SECONDARY_WAIT
        return None

    def _rate_limit_message(self, response: httpx.Response, wait: float) -> str:
        headers = response.headers
        if headers.get("x-ratelimit-remaining") == "0" and "retry-after" not in headers:
            limit = headers.get("x-ratelimit-limit", "?")
            resource = headers.get("x-ratelimit-resource", "core")
            resets = time.strftime("%H:%M:%S UTC", time.gmtime(self._clock() + wait))
            return (
                f"GitHub's rate limit for the connected account is used up ({limit} "
                f"{resource} requests per window); it resets at {resets}, in "
                f"{_duration(wait)}. Try again after that."
            )
        return (
            f"GitHub asked to slow down (a secondary rate limit); try again in {_duration(wait)}."
        )


# ---- helpers ----------------------------------------------------------------------------


def _repo_path(owner: str, repo: str) -> str:
    return f"/repos/{urllib.parse.quote(owner, safe='')}/{urllib.parse.quote(repo, safe='')}"


def _next_page(response: httpx.Response) -> int | None:
    url = response.links.get("next", {}).get("url")
    if not url:
        return None
    page = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("page", [""])[-1]
    return int(page) if page.isdigit() else None


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ToolError(f"GitHub answered {what} with something that is not JSON") from None


def _object(response: httpx.Response, what: str) -> dict[str, Any]:
    value = _json(response, what)
    if not isinstance(value, dict):
        raise ToolError(f"GitHub answered {what} with something unexpected")
    return value


def _objects(response: httpx.Response, what: str) -> list[dict[str, Any]]:
    value = _json(response, what)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ToolError(f"GitHub answered {what} with something unexpected")
    return value


def _github_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return message[:_MESSAGE_CHARS] if isinstance(message, str) else ""


def _validation_details(response: httpx.Response) -> list[str]:
    """GitHub's 422 ``errors`` list, one readable line each."""
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return []
    details = []
    for error in errors[:5]:
        if isinstance(error, str):
            details.append(error[:_MESSAGE_CHARS])
        elif isinstance(error, dict):
            if isinstance(error.get("message"), str):
                details.append(error["message"][:_MESSAGE_CHARS])
                continue
            field = error.get("field", "?")
            code = error.get("code", "invalid")
            value = f" {str(error['value'])[:80]!r}" if "value" in error else ""
            problem = {
                "missing": "is missing",
                "missing_field": "is missing",
                "invalid": "is invalid",
                "already_exists": "already exists",
            }.get(str(code), f"failed ({code})")
            details.append(f"{field}{value} {problem}")
    return details


def _failure(response: httpx.Response, method: str, what: str) -> str:
    """A ToolError message for a non-2xx answer other than 401 and rate limits."""
    status = response.status_code
    message = _github_message(response)
    if status == 404:
        found = f" ({message})" if message and message != "Not Found" else ""
        return f"{what} was not found{found}, or the connected GitHub account cannot see it"
    if status == 422:
        details = _validation_details(response)
        detail = f": {'; '.join(details)}" if details else ""
        return f"GitHub rejected {what}: {message or 'Validation Failed'}{detail}"
    if status == 410:
        return f"GitHub refused {what}: {message or 'gone'}"
    if status == 403:
        return (
            f"GitHub refused {what}: {message or 'Forbidden'} (the connected account or the "
            "app's permissions may not allow it)"
        )
    if status >= 500:
        unsure = (
            " It may or may not have happened — check before trying again."
            if method != "GET"
            else ""
        )
        return f"GitHub failed to answer {what} (HTTP {status}); try again in a minute.{unsure}"
    return f"GitHub answered HTTP {status} for {what}{': ' + message if message else ''}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        whole = max(1, round(seconds))
        return f"{whole} second{'s' if whole != 1 else ''}"
    return f"about {round(seconds / 60)} minutes"

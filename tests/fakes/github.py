"""A scriptable loopback fake of GitHub: the OAuth web flow and the REST API.

One server plays both hosts — ``github.com`` (``/login/oauth/authorize``,
``/login/oauth/access_token``) and ``api.github.com`` (``/user``,
``/user/repos``, ``/search/issues``, issues, comments, contents and
``DELETE /applications/{client_id}/grant``) — so a client points both its web
and API base URLs at :attr:`FakeGitHub.base_url`::

    async with FakeGitHub(redirect_uris=["http://127.0.0.1:9/callback"]) as fake:
        repo = fake.add_repo("octocat/hello-world", files={"README.md": b"# Hello"})
        fake.add_issue(repo, "Found a bug", body="It crashes.", labels=["bug"])
        callback = await fake.approve(authorize_url)  # the user clicks "Authorize"
        # ... exchange the callback's code, call the API with the token ...
        assert len(fake.created_issues) == 1

**OAuth.** The app is an OAuth App (``app_kind="oauth_app"``: ``gho_`` tokens that
never expire, ``{access_token, token_type, scope}``) or a GitHub App with expiring
user tokens (the default: ``ghu_`` access tokens with ``expires_in``, ``ghr_``
refresh tokens with ``refresh_token_expires_in``). The authorize endpoint plays
the signed-in user (:attr:`FakeGitHub.signed_in`, or a ``dotcom_user`` cookie)
approving at once: a 302 to the redirect URI with ``code`` and ``state``;
:meth:`FakeGitHub.deny` plays a refusal (``error=access_denied``). Codes are
single-use and expire after :attr:`FakeGitHub.code_ttl`. The token endpoint
answers refusals as GitHub does, HTTP 200 with ``error`` / ``error_description``
/ ``error_uri`` (``incorrect_client_credentials``, ``bad_verification_code``,
``redirect_uri_mismatch``, ``bad_code_verifier``, ``bad_refresh_token``,
``unsupported_grant_type``), as JSON when the client sends ``Accept:
application/json`` and form-encoded otherwise. Refresh tokens rotate: a refresh
retires the refresh token and the access token issued with it, and presenting a
retired refresh token again revokes the user's whole grant (every token of it).

**REST.** Every API request needs ``Authorization: Bearer <token>`` (or ``token
<token>``) — unknown, expired and revoked tokens are a 401 ``Bad credentials`` —
an ``Accept`` GitHub serves JSON for (``application/vnd.github+json``; else 415)
and a ``User-Agent``; an ``X-GitHub-Api-Version`` must be ``2022-11-28``.
Answers carry ``x-ratelimit-limit/remaining/used/reset/resource`` (``core``:
5000 an hour, ``search``: 30 a minute, counted down per request, one budget for
all users); a budget at zero answers GitHub's 403 ``API rate limit exceeded``
(:meth:`FakeGitHub.exhaust_rate_limit`). Lists page with ``per_page`` (at most
100) and ``page`` and a ``Link`` header. JSON shapes follow GitHub's (the common
fields, not every URL template). Seed data with :meth:`FakeGitHub.add_user`,
:meth:`~FakeGitHub.add_repo`, :meth:`~FakeGitHub.add_issue`,
:meth:`~FakeGitHub.add_comment` and :meth:`~FakeGitHub.add_file`; what the API
creates is recorded in :attr:`FakeGitHub.created_issues` and
:attr:`FakeGitHub.created_comments`.

Where GitHub is lenient the fake is strict, so a client cannot drift unnoticed:
unknown query parameters and malformed ``per_page`` / ``page`` are a 400 whose
message starts with ``fake:``, PKCE is required at authorize (``require_pkce``),
and a redirect URI must equal a registered one exactly. ``/search/issues``
needs ``is:issue`` or ``is:pull-request`` in ``q``, as GitHub now does, and
understands ``is:``/``type:``/``state:``/``repo:``/``user:``/``org:``/
``author:``/``assignee:``/``label:``/``in:`` qualifiers and free words.

:meth:`FakeGitHub.fail` scripts HTTP failures per endpoint (404, 422, 5xx, a 403 or
429 secondary rate limit with ``retry-after``); :meth:`FakeGitHub.hold` keeps an
endpoint's requests waiting until released. Every request is recorded
(:attr:`FakeGitHub.requests`); the ``wait_for_*`` helpers give up after a bounded
time instead of hanging. The fake has its own clock (:meth:`FakeGitHub.advance`)
for expiry of codes, tokens and rate-limit windows.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import re
import secrets
import shlex
import string
import time
import typing
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import httpx
import orjson
from aiohttp import web

__all__ = [
    "API_VERSION",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_LOGIN",
    "LARGE_FILE",
    "WAIT_LIMIT",
    "Endpoint",
    "FakeComment",
    "FakeGitHub",
    "FakeGrant",
    "FakeIssue",
    "FakeRepo",
    "FakeToken",
    "FakeUser",
    "RecordedRequest",
]

DEFAULT_CLIENT_ID = "Iv1.8a61f9b3a7aba766"
DEFAULT_CLIENT_SECRET = "fake-client-secret-0123456789abcdef01234567"
DEFAULT_LOGIN = "octocat"
API_VERSION = "2022-11-28"
#: Files larger than this come back from the contents API without content.
LARGE_FILE = 1024 * 1024
# A wait_for_* that takes longer than this has failed: report it instead of hanging.
WAIT_LIMIT = 10.0

Endpoint = Literal[
    "authorize",
    "access_token",
    "revoke_grant",
    "user",
    "user_repos",
    "search_issues",
    "get_issue",
    "list_comments",
    "create_issue",
    "create_comment",
    "contents",
]
_OAUTH_ENDPOINTS = frozenset({"authorize", "access_token"})
_QUERY: dict[str, frozenset[str]] = {
    "user_repos": frozenset(
        {"visibility", "affiliation", "type", "sort", "direction", "per_page", "page"}
    ),
    "search_issues": frozenset({"q", "sort", "order", "per_page", "page"}),
    "list_comments": frozenset({"since", "per_page", "page"}),
    "contents": frozenset({"ref"}),
}
_RATE_LIMITS = {"core": (5000, 3600), "search": (30, 60)}  # resource: (limit, window seconds)

_DOCS = "https://docs.github.com"
_OAUTH_ERRORS = {
    "incorrect_client_credentials": (
        "The client_id and/or client_secret passed are incorrect.",
        "incorrect-client-credentials",
    ),
    "bad_verification_code": (
        "The code passed is incorrect or expired.",
        "bad-verification-code",
    ),
    "redirect_uri_mismatch": (
        "The redirect_uri MUST match the registered callback URL for this application.",
        "redirect-uri-mismatch2",
    ),
    "bad_code_verifier": (
        "The code_verifier does not match the code_challenge supplied in the "
        "authorization request for PKCE.",
        "bad-code-verifier",
    ),
    "bad_refresh_token": (
        "The refresh token passed is incorrect or expired.",
        "bad-refresh-token",
    ),
    "unsupported_grant_type": (
        "The grant type is not supported.",
        "unsupported-grant-type",
    ),
}
_TOKEN_ERRORS_URI = (
    f"{_DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#"
)
_AUTHORIZE_ERRORS_URI = (
    f"{_DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#"
)
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256, unpadded
_ALNUM = string.ascii_letters + string.digits
# Seeded objects get increasing timestamps from here, one hour apart: deterministic order.
_SEED_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _token(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(36))


def _blob_sha(content: bytes) -> str:
    """The git blob id of ``content``, as the contents API reports it."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# ---- the data the fake serves ------------------------------------------------------


@dataclass(eq=False)
class FakeUser:
    """A GitHub account: a user, or an organization (``type="Organization"``)."""

    login: str
    id: int
    name: str | None = None
    email: str | None = None
    type: Literal["User", "Organization"] = "User"
    members: set[str] = field(default_factory=set)  # organizations: member logins
    created_at: str = ""

    @property
    def node_id(self) -> str:
        return ("O_" if self.type == "Organization" else "U_") + f"kgDO{self.id:08d}"

    def simple(self, api: str) -> dict[str, Any]:
        """The "simple user" embedded in repos, issues and comments."""
        return {
            "login": self.login,
            "id": self.id,
            "node_id": self.node_id,
            "avatar_url": f"https://avatars.githubusercontent.com/u/{self.id}?v=4",
            "gravatar_id": "",
            "url": f"{api}/users/{self.login}",
            "html_url": f"https://github.com/{self.login}",
            "type": self.type,
            "site_admin": False,
        }


# The authenticated user of an API request.
_USER = web.RequestKey("user", FakeUser)


@dataclass(eq=False)
class FakeComment:
    """A comment on an issue."""

    issue: FakeIssue
    id: int
    body: str
    user: FakeUser
    created_at: str
    updated_at: str

    def resource(self, api: str) -> dict[str, Any]:
        repo = self.issue.repo
        return {
            "id": self.id,
            "node_id": f"IC_kwDO{self.id:010d}",
            "url": f"{api}/repos/{repo.full_name}/issues/comments/{self.id}",
            "html_url": (
                f"https://github.com/{repo.full_name}/issues/{self.issue.number}"
                f"#issuecomment-{self.id}"
            ),
            "issue_url": f"{api}/repos/{repo.full_name}/issues/{self.issue.number}",
            "body": self.body,
            "user": self.user.simple(api),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "author_association": repo.association(self.user),
            "performed_via_github_app": None,
        }


@dataclass(eq=False)
class FakeIssue:
    """An issue (or a pull request, which is an issue too) of a repository."""

    repo: FakeRepo
    number: int
    id: int
    title: str
    body: str | None
    user: FakeUser
    state: Literal["open", "closed"] = "open"
    labels: list[str] = field(default_factory=list)
    assignees: list[FakeUser] = field(default_factory=list)
    comments: list[FakeComment] = field(default_factory=list)
    pull_request: bool = False
    locked: bool = False
    created_at: str = ""
    updated_at: str = ""
    closed_at: str | None = None

    def resource(self, api: str) -> dict[str, Any]:
        repo = self.repo
        url = f"{api}/repos/{repo.full_name}/issues/{self.number}"
        kind = "pull" if self.pull_request else "issues"
        out: dict[str, Any] = {
            "url": url,
            "repository_url": f"{api}/repos/{repo.full_name}",
            "labels_url": f"{url}/labels{{/name}}",
            "comments_url": f"{url}/comments",
            "events_url": f"{url}/events",
            "html_url": f"https://github.com/{repo.full_name}/{kind}/{self.number}",
            "id": self.id,
            "node_id": f"I_kwDO{self.id:010d}",
            "number": self.number,
            "title": self.title,
            "user": self.user.simple(api),
            "labels": [_label(repo, name, api) for name in self.labels],
            "state": self.state,
            "locked": self.locked,
            "assignee": self.assignees[0].simple(api) if self.assignees else None,
            "assignees": [a.simple(api) for a in self.assignees],
            "milestone": None,
            "comments": len(self.comments),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "closed_at": self.closed_at,
            "author_association": repo.association(self.user),
            "active_lock_reason": None,
            "body": self.body,
            "state_reason": "completed" if self.state == "closed" else None,
            "timeline_url": f"{url}/timeline",
            "performed_via_github_app": None,
        }
        if self.pull_request:
            pulls = f"{api}/repos/{repo.full_name}/pulls/{self.number}"
            html = f"https://github.com/{repo.full_name}/pull/{self.number}"
            out["pull_request"] = {
                "url": pulls,
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "merged_at": None,
            }
            out["draft"] = False
        return out


def _label(repo: FakeRepo, name: str, api: str) -> dict[str, Any]:
    digest = hashlib.sha256(f"{repo.full_name}:{name}".encode()).digest()
    label_id = int.from_bytes(digest[:4], "big")
    return {
        "id": label_id,
        "node_id": f"LA_kwDO{label_id:010d}",
        "url": f"{api}/repos/{repo.full_name}/labels/{urllib.parse.quote(name)}",
        "name": name,
        "color": digest[4:7].hex(),
        "default": name in ("bug", "documentation", "enhancement"),
        "description": None,
    }


@dataclass(eq=False)
class FakeRepo:
    """A repository, its issues and its files (per branch)."""

    owner: FakeUser
    name: str
    id: int
    private: bool = False
    description: str | None = None
    language: str | None = None
    default_branch: str = "main"
    has_issues: bool = True
    archived: bool = False
    stargazers_count: int = 0
    forks_count: int = 0
    collaborators: set[str] = field(default_factory=set)
    created_at: str = ""
    updated_at: str = ""
    pushed_at: str = ""
    #: branch -> path -> content
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    #: by number; issues and pull requests share the numbers
    issues: dict[int, FakeIssue] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"

    def can_push(self, user: FakeUser) -> bool:
        return (
            user is self.owner
            or user.login in self.collaborators
            or (self.owner.type == "Organization" and user.login in self.owner.members)
        )

    def can_see(self, user: FakeUser) -> bool:
        return not self.private or self.can_push(user)

    def association(self, user: FakeUser) -> str:
        if user is self.owner:
            return "OWNER"
        if self.owner.type == "Organization" and user.login in self.owner.members:
            return "MEMBER"
        if user.login in self.collaborators:
            return "COLLABORATOR"
        return "NONE"

    def resource(self, api: str, viewer: FakeUser) -> dict[str, Any]:
        url = f"{api}/repos/{self.full_name}"
        open_issues = sum(1 for i in self.issues.values() if i.state == "open")
        return {
            "id": self.id,
            "node_id": f"R_kgDO{self.id:08d}",
            "name": self.name,
            "full_name": self.full_name,
            "private": self.private,
            "owner": self.owner.simple(api),
            "html_url": f"https://github.com/{self.full_name}",
            "description": self.description,
            "fork": False,
            "url": url,
            "issues_url": f"{url}/issues{{/number}}",
            "contents_url": f"{url}/contents/{{+path}}",
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "pushed_at": self.pushed_at,
            "homepage": None,
            "size": sum(len(c) for c in self.files.get(self.default_branch, {}).values()) // 1024,
            "stargazers_count": self.stargazers_count,
            "watchers_count": self.stargazers_count,
            "language": self.language,
            "has_issues": self.has_issues,
            "forks_count": self.forks_count,
            "archived": self.archived,
            "disabled": False,
            "open_issues_count": open_issues,
            "license": None,
            "topics": [],
            "visibility": "private" if self.private else "public",
            "forks": self.forks_count,
            "open_issues": open_issues,
            "watchers": self.stargazers_count,
            "default_branch": self.default_branch,
            "permissions": {
                "admin": viewer is self.owner,
                "maintain": viewer is self.owner,
                "push": self.can_push(viewer),
                "triage": self.can_push(viewer),
                "pull": True,
            },
        }


@dataclass(eq=False)
class FakeGrant:
    """A user's authorization of the app, and every token issued under it."""

    user: FakeUser
    scopes: list[str]  # OAuth Apps; a GitHub App's tokens have none
    revoked: bool = False
    tokens: list[FakeToken] = field(default_factory=list)


@dataclass(eq=False)
class FakeToken:
    """An access or refresh token the fake issued."""

    value: str
    kind: Literal["access", "refresh"]
    grant: FakeGrant
    expires_at: float | None  # fake clock; None: never
    retired: bool = False  # access: replaced by a refresh; refresh: used once
    paired: FakeToken | None = None  # refresh: the access token issued with it


@dataclass(eq=False)
class _Code:
    value: str
    user: FakeUser
    redirect_uri: str | None  # as given at authorize
    scopes: list[str]
    challenge: str | None
    expires_at: float
    used: bool = False


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the fake received it."""

    endpoint: Endpoint | None  # None: no such route
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON body, or None
    form: dict[str, str]  # a form-encoded body's fields (the token endpoint), else {}

    @property
    def params(self) -> dict[str, str]:
        """The token endpoint's parameters wherever they came: query, form or JSON body."""
        out = {k: v[-1] for k, v in self.query.items()}
        out.update(self.form)
        if isinstance(self.body, dict):
            out.update({k: str(v) for k, v in self.body.items()})
        return out


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    message: str
    headers: dict[str, str]
    errors: list[dict[str, Any]] | None


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
        docs: str = "/rest",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.errors = errors
        self.docs = docs


class _OAuthRefusal(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class _Window:
    limit: int
    remaining: int
    reset: int  # epoch seconds, fake clock


_Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]


# ---- the server --------------------------------------------------------------------


@dataclass
class FakeGitHub:
    """GitHub's web OAuth flow and REST API on 127.0.0.1 (a free port), for one test.

    Starts with one user, :data:`DEFAULT_LOGIN`, who is the one signed in
    (:attr:`signed_in`). Register the client's redirect URIs before it
    authorizes (they usually carry a port known only after startup).
    """

    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    redirect_uris: list[str] = field(default_factory=list)
    app_kind: Literal["oauth_app", "github_app"] = "github_app"
    expiring: bool = True  # GitHub Apps: user tokens expire (and come with refresh tokens)
    access_token_ttl: int = 28_800  # 8 hours
    refresh_token_ttl: int = 15_811_200  # 6 months
    code_ttl: int = 600
    require_pkce: bool = True
    signed_in: str = DEFAULT_LOGIN
    base_url: str = field(default="", init=False)  # http://127.0.0.1:PORT
    users: dict[str, FakeUser] = field(default_factory=dict, init=False)  # by login
    repos: dict[str, FakeRepo] = field(default_factory=dict, init=False)  # by full name
    grants: list[FakeGrant] = field(default_factory=list, init=False)
    tokens: dict[str, FakeToken] = field(default_factory=dict, init=False)  # by value
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    created_issues: list[FakeIssue] = field(default_factory=list, init=False)
    created_comments: list[FakeComment] = field(default_factory=list, init=False)
    _codes: dict[str, _Code] = field(default_factory=dict, init=False)
    _decisions: deque[Literal["deny"]] = field(default_factory=deque, init=False)
    _failures: dict[str, deque[_Failure]] = field(default_factory=dict, init=False)
    _holds: dict[str, asyncio.Event] = field(default_factory=dict, init=False)
    _windows: dict[str, _Window] = field(default_factory=dict, init=False)
    _offset: float = field(default=0.0, init=False)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1001), init=False)
    _seed_clock: Iterator[int] = field(
        default_factory=lambda: itertools.count(_SEED_EPOCH, 3600), init=False
    )
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _http: httpx.AsyncClient | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.app_kind not in ("oauth_app", "github_app"):
            raise ValueError(f"app_kind must be 'oauth_app' or 'github_app', not {self.app_kind!r}")
        self.add_user(DEFAULT_LOGIN, name="The Octocat", email="octocat@github.com")

    # ---- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        routes: list[tuple[str, str, Endpoint, _Handler]] = [
            ("GET", "/login/oauth/authorize", "authorize", self._authorize),
            ("POST", "/login/oauth/access_token", "access_token", self._access_token),
            ("DELETE", "/applications/{client_id}/grant", "revoke_grant", self._revoke_grant),
            ("GET", "/user", "user", self._user),
            ("GET", "/user/repos", "user_repos", self._user_repos),
            ("GET", "/search/issues", "search_issues", self._search_issues),
            ("GET", "/repos/{owner}/{repo}/issues/{number}", "get_issue", self._get_issue),
            (
                "GET",
                "/repos/{owner}/{repo}/issues/{number}/comments",
                "list_comments",
                self._list_comments,
            ),
            ("POST", "/repos/{owner}/{repo}/issues", "create_issue", self._create_issue),
            (
                "POST",
                "/repos/{owner}/{repo}/issues/{number}/comments",
                "create_comment",
                self._create_comment,
            ),
            ("GET", "/repos/{owner}/{repo}/contents", "contents", self._contents),
            ("GET", "/repos/{owner}/{repo}/contents/{path:.*}", "contents", self._contents),
        ]
        for method, path, endpoint, handler in routes:
            app.router.add_route(method, path, self._serve(endpoint, handler))
        app.router.add_route("*", "/{tail:.*}", self._serve(None, self._no_route))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        # The browser of approve()/deny(): never via a proxy, never following redirects.
        self._http = httpx.AsyncClient(timeout=WAIT_LIMIT, trust_env=False)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for hold in self._holds.values():
            hold.set()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- the clock -------------------------------------------------------------------

    def now(self) -> float:
        """The fake's clock: real time plus every :meth:`advance`."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (codes, tokens and rate-limit windows expire)."""
        self._offset += seconds

    # ---- seeding -------------------------------------------------------------------------

    def add_user(
        self,
        login: str,
        *,
        name: str | None = None,
        email: str | None = None,
        organization: bool = False,
        members: Iterable[str] = (),
    ) -> FakeUser:
        """An account; an organization (``organization=True``) has ``members``."""
        if login in self.users:
            raise ValueError(f"user {login!r} exists already")
        user = FakeUser(
            login,
            next(self._ids),
            name=name,
            email=email,
            type="Organization" if organization else "User",
            members=set(members),
            created_at=_iso(next(self._seed_clock)),
        )
        self.users[login] = user
        return user

    def add_repo(
        self,
        full_name: str,
        *,
        private: bool = False,
        description: str | None = None,
        language: str | None = None,
        default_branch: str = "main",
        files: Mapping[str, bytes | str] | None = None,
        collaborators: Iterable[str] = (),
        has_issues: bool = True,
        archived: bool = False,
        stars: int = 0,
    ) -> FakeRepo:
        """A repository (its owner is created when unknown) with ``files`` on its default branch.

        Repositories seeded later count as more recently updated and pushed.
        """
        owner_login, _, name = full_name.partition("/")
        if not owner_login or not name or "/" in name:
            raise ValueError(f"full_name must be 'owner/name', not {full_name!r}")
        if full_name.lower() in (r.lower() for r in self.repos):
            raise ValueError(f"repository {full_name!r} exists already")
        owner = self.users.get(owner_login) or self.add_user(owner_login)
        stamp = _iso(next(self._seed_clock))
        repo = FakeRepo(
            owner,
            name,
            next(self._ids),
            private=private,
            description=description,
            language=language,
            default_branch=default_branch,
            has_issues=has_issues,
            archived=archived,
            stargazers_count=stars,
            collaborators=set(collaborators),
            created_at=stamp,
            updated_at=stamp,
            pushed_at=stamp,
            files={default_branch: {}},
        )
        self.repos[full_name] = repo
        for path, content in (files or {}).items():
            self.add_file(repo, path, content)
        return repo

    def add_file(
        self, repo: FakeRepo | str, path: str, content: bytes | str, *, ref: str | None = None
    ) -> None:
        """A file on branch ``ref`` (the default branch unless given; a new branch is made)."""
        repo = self._repo_arg(repo)
        data = content.encode() if isinstance(content, str) else content
        branch = ref or repo.default_branch
        repo.files.setdefault(branch, {})[path.strip("/")] = data

    def add_issue(
        self,
        repo: FakeRepo | str,
        title: str,
        *,
        body: str | None = None,
        author: str | None = None,
        state: Literal["open", "closed"] = "open",
        labels: Sequence[str] = (),
        assignees: Sequence[str] = (),
        pull_request: bool = False,
        locked: bool = False,
    ) -> FakeIssue:
        """An issue (or a pull request) with the repository's next number.

        The author is the repository's owner unless given (created when unknown).
        """
        repo = self._repo_arg(repo)
        stamp = _iso(next(self._seed_clock))
        issue = FakeIssue(
            repo,
            len(repo.issues) + 1,
            next(self._ids),
            title,
            body,
            self._user_arg(author) if author else repo.owner,
            state=state,
            labels=list(labels),
            assignees=[self._user_arg(a) for a in assignees],
            pull_request=pull_request,
            locked=locked,
            created_at=stamp,
            updated_at=stamp,
            closed_at=stamp if state == "closed" else None,
        )
        repo.issues[issue.number] = issue
        return issue

    def add_comment(self, issue: FakeIssue, body: str, *, author: str | None = None) -> FakeComment:
        """A comment on ``issue`` (by its repository's owner unless given)."""
        stamp = _iso(next(self._seed_clock))
        comment = FakeComment(
            issue,
            next(self._ids),
            body,
            self._user_arg(author) if author else issue.repo.owner,
            stamp,
            stamp,
        )
        issue.comments.append(comment)
        return comment

    def _repo_arg(self, repo: FakeRepo | str) -> FakeRepo:
        if isinstance(repo, FakeRepo):
            return repo
        if repo not in self.repos:
            raise ValueError(f"no repository {repo!r}; add_repo() it first")
        return self.repos[repo]

    def _user_arg(self, login: str) -> FakeUser:
        return self.users.get(login) or self.add_user(login)

    # ---- scripting ----------------------------------------------------------------------

    def register_redirect_uri(self, uri: str) -> None:
        """Register another callback URL of the app."""
        self.redirect_uris.append(uri)

    def fail(
        self,
        endpoint: Endpoint,
        status: int,
        message: str | None = None,
        *,
        times: int = 1,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``endpoint`` with ``status`` and GitHub's error body.

        API endpoints fail after authentication (the answer carries the rate-limit
        headers), the OAuth ones at once. A 403 or 429 with ``retry_after`` is a
        secondary rate limit (its message says so unless given); ``errors`` fills a
        422's ``errors`` list.
        """
        if endpoint not in _all_endpoints():
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {sorted(_all_endpoints())}")
        extra = dict(headers or {})
        if retry_after is not None:
            extra["retry-after"] = str(retry_after)
        if message is None:
            if status in (403, 429) and retry_after is not None:
                message = (
                    "You have exceeded a secondary rate limit. Please wait a few minutes "
                    "before you try again."
                )
            else:
                message = _DEFAULT_MESSAGES.get(status, f"scripted failure ({status})")
        failure = _Failure(status, message, extra, errors)
        self._failures.setdefault(endpoint, deque()).extend([failure] * times)

    def exhaust_rate_limit(self, resource: Literal["core", "search"] = "core") -> int:
        """Spend the rest of ``resource``'s budget; return when it resets (epoch seconds)."""
        window = self._window(resource)
        window.remaining = 0
        return window.reset

    def hold(self, endpoint: Endpoint) -> None:
        """Keep requests to ``endpoint`` waiting (recorded, unanswered) until :meth:`release`."""
        self._holds.setdefault(endpoint, asyncio.Event())

    def release(self, endpoint: Endpoint) -> None:
        """Let held requests to ``endpoint`` (and later ones) through."""
        hold = self._holds.pop(endpoint, None)
        if hold is not None:
            hold.set()

    def expire(self, token: str) -> None:
        """Make an access or refresh token expire now, whatever its clients believe."""
        self._issued(token).expires_at = self.now() - 1

    def revoke_authorization(self, login: str = DEFAULT_LOGIN) -> None:
        """The user revokes the app in their settings: every token of theirs stops working."""
        for grant in self.grants:
            if grant.user.login == login:
                grant.revoked = True
        self._notify()

    def issue_tokens(
        self, login: str = DEFAULT_LOGIN, scopes: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Tokens for ``login`` without the web flow: the token endpoint's JSON answer."""
        return self._issue(self._grant_for(self._user_arg(login), list(scopes)))

    # ---- the web flow, driven like a browser ----------------------------------------

    def authorize_url(
        self,
        *,
        redirect_uri: str | None = None,
        state: str = "state-1",
        code_challenge: str | None = None,
        scope: str = "repo",
    ) -> str:
        """An authorize URL for this app, as a client would build it."""
        params = {"client_id": self.client_id, "scope": scope, "state": state}
        if redirect_uri is not None:
            params["redirect_uri"] = redirect_uri
        if code_challenge is not None:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        return f"{self.base_url}/login/oauth/authorize?{urllib.parse.urlencode(params)}"

    async def approve(self, authorize_url: str, *, login: str | None = None) -> str:
        """Open ``authorize_url`` as the signed-in user (or ``login``) who grants access.

        Returns where GitHub redirects the browser: the callback URL with ``code``
        and ``state``, or with ``error`` when the request itself was refused.
        """
        return await self._browse(authorize_url, login)

    async def deny(self, authorize_url: str, *, login: str | None = None) -> str:
        """Like :meth:`approve`, but the user clicks "Cancel": ``error=access_denied``."""
        self._decisions.append("deny")
        return await self._browse(authorize_url, login)

    async def _browse(self, authorize_url: str, login: str | None) -> str:
        assert self._http is not None, "the fake is not started"
        cookies = {"dotcom_user": login} if login else None
        response = await self._http.get(authorize_url, cookies=cookies)
        if response.status_code != 302:
            raise AssertionError(
                f"authorize answered {response.status_code}, not a redirect: {response.text[:200]}"
            )
        return response.headers["location"]

    # ---- observing ------------------------------------------------------------------------

    def requests_to(self, endpoint: Endpoint) -> list[RecordedRequest]:
        """The requests received for one endpoint, in order."""
        return [r for r in self.requests if r.endpoint == endpoint]

    @property
    def refresh_requests(self) -> list[RecordedRequest]:
        """Token endpoint requests with ``grant_type=refresh_token``, whatever their outcome."""
        return [
            r
            for r in self.requests_to("access_token")
            if r.params.get("grant_type") == "refresh_token"
        ]

    @property
    def code_exchanges(self) -> list[RecordedRequest]:
        """Token endpoint requests trading a code, whatever their outcome."""
        return [
            r
            for r in self.requests_to("access_token")
            if r.params.get("grant_type", "authorization_code") == "authorization_code"
        ]

    def live_tokens(self, login: str = DEFAULT_LOGIN) -> list[FakeToken]:
        """The tokens of ``login`` that work right now."""
        return [t for t in self.tokens.values() if t.grant.user.login == login and self._live(t)]

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, *, within: float = WAIT_LIMIT
    ) -> None:
        """Return once ``predicate()`` holds; fail naming ``what`` after ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"the fake saw no {what} within {within}s (requests: "
                f"{[f'{r.method} {r.path}' for r in self.requests[-10:]]})"
            ) from None

    async def wait_for_requests(
        self, count: int, endpoint: Endpoint | None = None, *, within: float = WAIT_LIMIT
    ) -> list[RecordedRequest]:
        """Return the requests (to ``endpoint``, when given) once there are ``count``."""

        def matching() -> list[RecordedRequest]:
            return self.requests_to(endpoint) if endpoint else list(self.requests)

        what = f"{count} request(s)" + (f" to {endpoint}" if endpoint else "")
        await self.wait_until(lambda: len(matching()) >= count, what, within=within)
        return matching()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- the HTTP layer ---------------------------------------------------------------

    def _serve(
        self, endpoint: Endpoint | None, handler: _Handler
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            headers = {k.lower(): v for k, v in request.headers.items()}
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            body: Any = None
            form: dict[str, str] = {}
            if content_type == "application/x-www-form-urlencoded":
                form = dict(urllib.parse.parse_qsl(raw.decode(errors="replace")))
            elif raw:
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = _NOT_JSON
            query: dict[str, list[str]] = {}
            for key, value in request.query.items():
                query.setdefault(key, []).append(value)
            recorded = RecordedRequest(
                endpoint,
                request.method,
                request.path,
                query,
                headers,
                None if body is _NOT_JSON else body,
                form,
            )
            self.requests.append(recorded)
            self._notify()
            if endpoint is not None and endpoint in self._holds:
                await self._holds[endpoint].wait()
            window: _Window | None = None
            try:
                if endpoint in _OAUTH_ENDPOINTS:
                    self._scripted_failure(endpoint)
                    return await handler(request, recorded)
                if endpoint == "revoke_grant":
                    self._scripted_failure(endpoint)
                    self._check_api_headers(headers)
                    return await handler(request, recorded)
                if endpoint is None:
                    return await handler(request, recorded)
                self._check_api_headers(headers)
                user = self._authenticate(headers)
                window = self._spend(endpoint, user)
                self._scripted_failure(endpoint)
                if body is _NOT_JSON:
                    raise _ApiError(400, "Problems parsing JSON")
                if unknown := sorted(set(query) - _QUERY.get(endpoint, frozenset())):
                    raise _ApiError(
                        400,
                        f"fake: unknown query parameter {unknown[0]!r}; "
                        f"this endpoint takes {sorted(_QUERY.get(endpoint, ()))}",
                    )
                request[_USER] = user
                response = await handler(request, recorded)
            except _ApiError as error:
                response = _error_response(error)
            except _OAuthRefusal as refusal:
                response = _oauth_refusal(refusal.code, headers)
            if window is not None:
                response.headers.update(_rate_headers(window, endpoint))
            return response

        return serve

    def _scripted_failure(self, endpoint: str) -> None:
        failures = self._failures.get(endpoint)
        if failures:
            failure = failures.popleft()
            raise _ApiError(
                failure.status, failure.message, headers=failure.headers, errors=failure.errors
            )

    def _check_api_headers(self, headers: Mapping[str, str]) -> None:
        if not headers.get("user-agent"):
            raise _ApiError(
                403,
                "Request forbidden by administrative rules. Please make sure your request "
                "has a User-Agent header (https://docs.github.com/en/rest/overview/"
                "resources-in-the-rest-api#user-agent-required).",
            )
        accept = headers.get("accept", "")
        served = (
            "application/vnd.github+json",
            "application/vnd.github.v3+json",
            "application/json",
        )
        media = [part.split(";")[0].strip().lower() for part in accept.split(",")]
        if not any(m in served for m in media):
            raise _ApiError(
                415, f"Unsupported 'Accept' header: {accept!r}. Must accept 'application/json'."
            )
        version = headers.get("x-github-api-version")
        if version is not None and version != API_VERSION:
            raise _ApiError(400, f"API version '{version}' is not supported.")

    def _authenticate(self, headers: Mapping[str, str]) -> FakeUser:
        authorization = headers.get("authorization")
        if not authorization:
            raise _ApiError(401, "Requires authentication")
        scheme, _, value = authorization.partition(" ")
        token = self.tokens.get(value.strip()) if scheme.lower() in ("bearer", "token") else None
        if token is None or token.kind != "access" or not self._live(token):
            raise _ApiError(401, "Bad credentials")
        return token.grant.user

    def _spend(self, endpoint: Endpoint, user: FakeUser) -> _Window:
        window = self._window("search" if endpoint == "search_issues" else "core")
        if window.remaining <= 0:
            raise _ApiError(
                403,
                f"API rate limit exceeded for user ID {user.id}. If you reach out to GitHub "
                "Support for help, please include the request ID.",
                headers=_rate_headers(window, endpoint),
                docs="/rest/overview/rate-limits-for-the-rest-api",
            )
        window.remaining -= 1
        return window

    def _window(self, resource: str) -> _Window:
        limit, period = _RATE_LIMITS[resource]
        window = self._windows.get(resource)
        now = self.now()
        if window is None or now >= window.reset:
            window = _Window(limit, limit, int(now) + period)
            self._windows[resource] = window
        return window

    def _live(self, token: FakeToken) -> bool:
        return (
            not token.grant.revoked
            and not token.retired
            and (token.expires_at is None or self.now() < token.expires_at)
        )

    def _issued(self, value: str) -> FakeToken:
        token = self.tokens.get(value)
        if token is None:
            raise ValueError("the fake never issued that token")
        return token

    async def _no_route(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        return _error_response(_ApiError(404, "Not Found"))

    # ---- OAuth: authorize --------------------------------------------------------------

    async def _authorize(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        params = {k: v[-1] for k, v in recorded.query.items()}
        if params.get("client_id") != self.client_id:
            return web.Response(
                status=404, text="<html><body>Not Found</body></html>", content_type="text/html"
            )
        state = params.get("state")
        redirect_uri = params.get("redirect_uri")
        if not self.redirect_uris:
            raise AssertionError("the fake has no registered redirect URI; register one first")
        if redirect_uri is not None and redirect_uri not in self.redirect_uris:
            return _redirect(
                self.redirect_uris[0], _authorize_error("redirect_uri_mismatch"), state
            )
        target = redirect_uri or self.redirect_uris[0]
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if challenge is None and self.require_pkce:
            return _redirect(target, _invalid_request("code_challenge is required"), state)
        if challenge is not None:
            if method != "S256":
                return _redirect(
                    target, _invalid_request("code_challenge_method must be S256"), state
                )
            if not _CHALLENGE.fullmatch(challenge):
                return _redirect(
                    target,
                    _invalid_request("code_challenge must be 43 base64url characters"),
                    state,
                )
        login = request.cookies.get("dotcom_user") or self.signed_in
        user = self.users.get(login)
        if user is None:
            raise AssertionError(f"the signed-in user {login!r} does not exist")
        if self._decisions:
            self._decisions.popleft()
            return _redirect(target, _authorize_error("access_denied"), state)
        code = _Code(
            secrets.token_hex(10),
            user,
            redirect_uri,
            _scopes(params.get("scope", "")),
            challenge,
            self.now() + self.code_ttl,
        )
        self._codes[code.value] = code
        return _redirect(target, {"code": code.value}, state)

    # ---- OAuth: the token endpoint -------------------------------------------------------

    async def _access_token(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        params = recorded.params
        try:
            if (
                params.get("client_id") != self.client_id
                or params.get("client_secret") != self.client_secret
            ):
                raise _OAuthRefusal("incorrect_client_credentials")
            grant_type = params.get("grant_type", "authorization_code")
            if grant_type == "refresh_token":
                answer = self._refresh(params.get("refresh_token", ""))
            elif grant_type == "authorization_code":
                answer = self._exchange(params)
            else:
                raise _OAuthRefusal("unsupported_grant_type")
        except _OAuthRefusal as refusal:
            return _oauth_refusal(refusal.code, recorded.headers)
        self._notify()
        return _oauth_answer(answer, recorded.headers)

    def _exchange(self, params: Mapping[str, str]) -> dict[str, Any]:
        code = self._codes.get(params.get("code", ""))
        if code is None or code.used or self.now() >= code.expires_at:
            raise _OAuthRefusal("bad_verification_code")
        if code.redirect_uri is not None and params.get("redirect_uri") != code.redirect_uri:
            raise _OAuthRefusal("redirect_uri_mismatch")
        if code.challenge is not None:
            verifier = params.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != code.challenge:
                raise _OAuthRefusal("bad_code_verifier")
        code.used = True
        return self._issue(self._grant_for(code.user, code.scopes))

    def _refresh(self, value: str) -> dict[str, Any]:
        token = self.tokens.get(value)
        if token is None or token.kind != "refresh":
            raise _OAuthRefusal("bad_refresh_token")
        if token.retired:
            # A refresh token presented twice: someone else may hold the new pair,
            # so GitHub ends the whole authorization.
            token.grant.revoked = True
            raise _OAuthRefusal("bad_refresh_token")
        if not self._live(token):
            raise _OAuthRefusal("bad_refresh_token")
        token.retired = True
        if token.paired is not None:
            token.paired.retired = True
        return self._issue(token.grant)

    def _grant_for(self, user: FakeUser, scopes: list[str]) -> FakeGrant:
        for grant in self.grants:
            if grant.user is user and not grant.revoked:
                if self.app_kind == "oauth_app":
                    grant.scopes = sorted(set(grant.scopes) | set(scopes))
                return grant
        grant = FakeGrant(user, scopes if self.app_kind == "oauth_app" else [])
        self.grants.append(grant)
        return grant

    def _issue(self, grant: FakeGrant) -> dict[str, Any]:
        now = self.now()
        if self.app_kind == "oauth_app":
            access = FakeToken(_token("gho_"), "access", grant, None)
            self._keep(access)
            return {
                "access_token": access.value,
                "token_type": "bearer",
                "scope": ",".join(grant.scopes),
            }
        if not self.expiring:
            access = FakeToken(_token("ghu_"), "access", grant, None)
            self._keep(access)
            return {"access_token": access.value, "token_type": "bearer", "scope": ""}
        access = FakeToken(_token("ghu_"), "access", grant, now + self.access_token_ttl)
        refresh = FakeToken(
            _token("ghr_"), "refresh", grant, now + self.refresh_token_ttl, paired=access
        )
        self._keep(access)
        self._keep(refresh)
        return {
            "access_token": access.value,
            "expires_in": self.access_token_ttl,
            "refresh_token": refresh.value,
            "refresh_token_expires_in": self.refresh_token_ttl,
            "scope": "",
            "token_type": "bearer",
        }

    def _keep(self, token: FakeToken) -> None:
        self.tokens[token.value] = token
        token.grant.tokens.append(token)

    # ---- OAuth: revoking the grant (api host) ----------------------------------------------

    async def _revoke_grant(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if (
            request.match_info["client_id"] != self.client_id
            or recorded.headers.get("authorization") != f"Basic {expected}"
        ):
            raise _ApiError(404, "Not Found", docs="/rest/apps/oauth-applications")
        body = recorded.body
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise _ApiError(
                422,
                'Invalid request.\n\n"access_token" wasn\'t supplied.',
                docs="/rest/apps/oauth-applications#delete-an-app-authorization",
            )
        token = self.tokens.get(body["access_token"])
        if token is None or token.kind != "access" or not self._live(token):
            raise _ApiError(404, "Not Found", docs="/rest/apps/oauth-applications")
        token.grant.revoked = True
        self._notify()
        return web.Response(status=204)

    # ---- REST ---------------------------------------------------------------------------

    async def _user(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        user = request[_USER]
        api = self.base_url
        owned = [r for r in self.repos.values() if r.owner is user]
        out = {
            **user.simple(api),
            "name": user.name,
            "company": None,
            "blog": "",
            "location": None,
            "email": user.email,
            "hireable": None,
            "bio": None,
            "twitter_username": None,
            "public_repos": sum(1 for r in owned if not r.private),
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": user.created_at,
            "updated_at": user.created_at,
            "private_gists": 0,
            "total_private_repos": sum(1 for r in owned if r.private),
            "owned_private_repos": sum(1 for r in owned if r.private),
        }
        return _json(out, headers=self._scope_headers(recorded))

    def _scope_headers(self, recorded: RecordedRequest) -> dict[str, str]:
        if self.app_kind != "oauth_app":
            return {}
        value = recorded.headers["authorization"].partition(" ")[2].strip()
        return {"x-oauth-scopes": ", ".join(self.tokens[value].grant.scopes)}

    async def _user_repos(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        user = request[_USER]
        q = _single(recorded.query)
        visibility = _choice(q, "visibility", ("all", "public", "private"), "all")
        affiliation = set(q.get("affiliation", "owner,collaborator,organization_member").split(","))
        if unknown := affiliation - {"owner", "collaborator", "organization_member"}:
            raise _ApiError(422, f"Invalid affiliation: {sorted(unknown)[0]}")
        if "type" in q and ("visibility" in q or "affiliation" in q):
            raise _ApiError(
                422, "If you specify visibility or affiliation, you cannot specify type."
            )
        sort = _choice(q, "sort", ("created", "updated", "pushed", "full_name"), "full_name")
        default_direction = "asc" if sort == "full_name" else "desc"
        direction = _choice(q, "direction", ("asc", "desc"), default_direction)

        def affiliated(repo: FakeRepo) -> bool:
            return (
                ("owner" in affiliation and repo.owner is user)
                or ("collaborator" in affiliation and user.login in repo.collaborators)
                or (
                    "organization_member" in affiliation
                    and repo.owner.type == "Organization"
                    and user.login in repo.owner.members
                )
            )

        repos = [
            r
            for r in self.repos.values()
            if affiliated(r) and (visibility == "all" or (visibility == "private") == r.private)
        ]
        key: Callable[[FakeRepo], Any] = {
            "created": lambda r: (r.created_at, r.id),
            "updated": lambda r: (r.updated_at, r.id),
            "pushed": lambda r: (r.pushed_at, r.id),
            "full_name": lambda r: r.full_name.lower(),
        }[sort]
        repos.sort(key=key, reverse=direction == "desc")
        page, links = _paginate(request, repos, _single(recorded.query))
        api = self.base_url
        return _json([r.resource(api, user) for r in page], headers=links)

    async def _search_issues(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        user = request[_USER]
        params = _single(recorded.query)
        q = params.get("q", "")
        if not q.strip():
            raise _ApiError(
                422,
                "Validation Failed",
                errors=[{"resource": "Search", "field": "q", "code": "missing"}],
                docs="/v3/search",
            )
        try:
            terms = shlex.split(q)
        except ValueError:
            terms = q.split()
        match = _SearchQuery.parse(terms)
        if match.kinds is None:
            raise _ApiError(
                422,
                "Validation Failed",
                errors=[
                    {
                        "message": "Query must include 'is:issue' or 'is:pull-request'",
                        "resource": "Search",
                        "field": "q",
                        "code": "invalid",
                    }
                ],
                docs="/v3/search",
            )
        sort = params.get("sort")
        if sort is not None and sort not in ("comments", "created", "updated", "reactions"):
            raise _ApiError(
                422,
                "Validation Failed",
                errors=[{"resource": "Search", "field": "sort", "code": "invalid"}],
            )
        order = _choice(params, "order", ("asc", "desc"), "desc")
        found = [
            issue
            for repo in self.repos.values()
            if repo.can_see(user)
            for issue in repo.issues.values()
            if match.matches(issue)
        ]
        sort_key: Callable[[FakeIssue], Any] = {
            "comments": lambda i: (len(i.comments), i.id),
            "updated": lambda i: (i.updated_at, i.id),
        }.get(sort or "", lambda i: (i.created_at, i.id))
        found.sort(key=sort_key, reverse=order == "desc")
        per_page, number = _page_params(params)
        if (number - 1) * per_page >= 1000 and found:
            raise _ApiError(
                422, "Only the first 1000 search results are available", docs="/v3/search/"
            )
        page, links = _paginate(request, found[:1000], params)
        api = self.base_url
        items = [{**issue.resource(api), "score": 1.0} for issue in page]
        body = {"total_count": len(found), "incomplete_results": False, "items": items}
        return _json(body, headers=links)

    def _visible_repo(self, request: web.Request) -> FakeRepo:
        user = request[_USER]
        full_name = f"{request.match_info['owner']}/{request.match_info['repo']}"
        for name, repo in self.repos.items():
            if name.lower() == full_name.lower() and repo.can_see(user):
                return repo
        raise _ApiError(404, "Not Found", docs="/rest/repos/repos#get-a-repository")

    def _issue_of(self, request: web.Request) -> FakeIssue:
        repo = self._visible_repo(request)
        number = request.match_info["number"]
        issue = repo.issues.get(int(number)) if number.isdigit() else None
        if issue is None:
            raise _ApiError(404, "Not Found", docs="/rest/issues/issues#get-an-issue")
        return issue

    async def _get_issue(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        return _json(self._issue_of(request).resource(self.base_url))

    async def _list_comments(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        issue = self._issue_of(request)
        params = _single(recorded.query)
        comments = list(issue.comments)
        if "since" in params:
            comments = [c for c in comments if c.updated_at >= params["since"]]
        page, links = _paginate(request, comments, params)
        return _json([c.resource(self.base_url) for c in page], headers=links)

    def _writable_issues(self, repo: FakeRepo) -> None:
        if repo.archived:
            raise _ApiError(403, "Repository was archived so is read-only.")
        if not repo.has_issues:
            raise _ApiError(410, "Issues are disabled for this repo", docs="/v3/issues/")

    async def _create_issue(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        user = request[_USER]
        repo = self._visible_repo(request)
        body = _object_body(recorded.body)
        allowed = {"title", "body", "assignee", "milestone", "labels", "assignees", "type"}
        _permitted(body, allowed)
        if "title" not in body:
            raise _ApiError(422, 'Invalid request.\n\n"title" wasn\'t supplied.')
        title = body["title"]
        if isinstance(title, bool) or not isinstance(title, str | int):
            raise _ApiError(
                422,
                f"Invalid request.\n\nFor 'properties/title', {_dumps(title)} "
                "is not a string or integer.",
            )
        text = body.get("body")
        if text is not None and not isinstance(text, str):
            raise _ApiError(
                422,
                f"Invalid request.\n\nFor 'properties/body', {_dumps(text)} "
                "is not a string or null.",
            )
        labels = _string_list(body, "labels")
        assignees = _string_list(body, "assignees")
        self._writable_issues(repo)
        if not str(title).strip():
            raise _ApiError(
                422,
                "Validation Failed",
                errors=[{"resource": "Issue", "code": "missing_field", "field": "title"}],
                docs="/rest/issues/issues#create-an-issue",
            )
        people: list[FakeUser] = []
        for login in assignees:
            assignee = self.users.get(login)
            if assignee is None or not repo.can_push(assignee):
                raise _ApiError(
                    422,
                    "Validation Failed",
                    errors=[
                        {
                            "value": login,
                            "resource": "Issue",
                            "field": "assignees",
                            "code": "invalid",
                        }
                    ],
                    docs="/rest/issues/issues#create-an-issue",
                )
            people.append(assignee)
        pusher = repo.can_push(user)
        stamp = _iso(self.now())
        issue = FakeIssue(
            repo,
            len(repo.issues) + 1,
            next(self._ids),
            str(title),
            text,
            user,
            # Without push access labels and assignees are dropped silently, as on GitHub.
            labels=labels if pusher else [],
            assignees=people if pusher else [],
            created_at=stamp,
            updated_at=stamp,
        )
        repo.issues[issue.number] = issue
        repo.updated_at = stamp
        self.created_issues.append(issue)
        self._notify()
        resource = issue.resource(self.base_url)
        return _json(resource, status=201, headers={"location": resource["url"]})

    async def _create_comment(
        self, request: web.Request, recorded: RecordedRequest
    ) -> web.Response:
        user = request[_USER]
        issue = self._issue_of(request)
        body = _object_body(recorded.body)
        _permitted(body, {"body"})
        if "body" not in body:
            raise _ApiError(422, 'Invalid request.\n\n"body" wasn\'t supplied.')
        text = body["body"]
        if not isinstance(text, str):
            raise _ApiError(
                422, f"Invalid request.\n\nFor 'properties/body', {_dumps(text)} is not a string."
            )
        self._writable_issues(issue.repo)
        if issue.locked and not issue.repo.can_push(user):
            raise _ApiError(403, "Unable to create comment because issue is locked.")
        if not text.strip():
            raise _ApiError(
                422,
                "Validation Failed",
                errors=[{"resource": "IssueComment", "code": "missing_field", "field": "body"}],
                docs="/rest/issues/comments#create-an-issue-comment",
            )
        stamp = _iso(self.now())
        comment = FakeComment(issue, next(self._ids), text, user, stamp, stamp)
        issue.comments.append(comment)
        issue.updated_at = stamp
        self.created_comments.append(comment)
        self._notify()
        resource = comment.resource(self.base_url)
        return _json(resource, status=201, headers={"location": resource["url"]})

    async def _contents(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        repo = self._visible_repo(request)
        params = _single(recorded.query)
        ref = params.get("ref") or repo.default_branch
        tree = repo.files.get(ref)
        if tree is None:
            raise _ApiError(
                404,
                f"No commit found for the ref {ref}",
                docs="/rest/repos/contents#get-repository-content",
            )
        path = request.match_info.get("path", "").strip("/")
        api = self.base_url
        if path in tree:
            return _json(_file_resource(repo, ref, path, tree[path], api))
        prefix = f"{path}/" if path else ""
        children: dict[str, Literal["file", "dir"]] = {}
        for name in tree:
            if name.startswith(prefix):
                head, _, rest = name[len(prefix) :].partition("/")
                children[head] = "dir" if rest else "file"
        if not children:
            raise _ApiError(404, "Not Found", docs="/rest/repos/contents#get-repository-content")
        entries = []
        for name in sorted(children):
            child = f"{prefix}{name}"
            if children[name] == "file":
                entry = _file_resource(repo, ref, child, tree[child], api)
                del entry["content"], entry["encoding"]
            else:
                entry = _entry(repo, ref, child, "dir", _blob_sha(child.encode()), 0, api)
            entries.append(entry)
        return _json(entries)


_NOT_JSON = object()

_DEFAULT_MESSAGES = {
    400: "Bad Request",
    401: "Bad credentials",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    422: "Validation Failed",
    429: "Too Many Requests",
    500: "Server Error",
    502: "Server Error",
    503: "Service Unavailable",
}


def _all_endpoints() -> frozenset[str]:
    return frozenset(typing.get_args(Endpoint))


class _SearchQuery:
    """The part of GitHub's issue search syntax the fake understands."""

    def __init__(self) -> None:
        self.kinds: set[str] | None = None  # {"issue"}, {"pr"}; None: not said (refused)
        self.state: str | None = None
        self.repos: list[str] = []
        self.owners: list[str] = []
        self.authors: list[str] = []
        self.assignees: list[str] = []
        self.labels: list[str] = []
        self.fields: set[str] = set()  # in:title / in:body / in:comments
        self.words: list[str] = []

    @classmethod
    def parse(cls, terms: Sequence[str]) -> _SearchQuery:
        query = cls()
        for term in terms:
            key, sep, value = term.partition(":")
            key = key.lower()
            if not sep or not value:
                query.words.append(term.lower())
            elif key in ("is", "type") and value.lower() in ("issue", "pr", "pull-request"):
                kind = "issue" if value.lower() == "issue" else "pr"
                query.kinds = (query.kinds or set()) | {kind}
            elif (key == "is" or key == "state") and value.lower() in ("open", "closed"):
                query.state = value.lower()
            elif key == "repo":
                query.repos.append(value.lower())
            elif key in ("user", "org"):
                query.owners.append(value.lower())
            elif key == "author":
                query.authors.append(value.lower())
            elif key == "assignee":
                query.assignees.append(value.lower())
            elif key == "label":
                query.labels.append(value.lower())
            elif key == "in":
                query.fields.update(value.lower().split(","))
            else:
                query.words.append(term.lower())
        return query

    def matches(self, issue: FakeIssue) -> bool:
        kind = "pr" if issue.pull_request else "issue"
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.state is not None and issue.state != self.state:
            return False
        if self.repos and issue.repo.full_name.lower() not in self.repos:
            return False
        if self.owners and issue.repo.owner.login.lower() not in self.owners:
            return False
        if self.authors and issue.user.login.lower() not in self.authors:
            return False
        if self.assignees and not {a.login.lower() for a in issue.assignees} & set(self.assignees):
            return False
        if any(label not in {name.lower() for name in issue.labels} for label in self.labels):
            return False
        fields = self.fields or {"title", "body"}
        haystack = " ".join(
            [
                issue.title if "title" in fields else "",
                (issue.body or "") if "body" in fields else "",
            ]
            + ([c.body for c in issue.comments] if "comments" in fields else [])
        ).lower()
        return all(word in haystack for word in self.words)


def _scopes(scope: str) -> list[str]:
    return sorted({s for s in re.split(r"[\s,]+", scope) if s})


def _single(query: Mapping[str, list[str]]) -> dict[str, str]:
    return {k: v[-1] for k, v in query.items()}


def _choice(params: Mapping[str, str], name: str, allowed: Sequence[str], default: str) -> str:
    value = params.get(name, default)
    if value not in allowed:
        raise _ApiError(
            422,
            "Validation Failed",
            errors=[
                {
                    "resource": "Search" if name == "order" else "Repository",
                    "field": name,
                    "code": "invalid",
                }
            ],
        )
    return value


def _page_params(params: Mapping[str, str]) -> tuple[int, int]:
    values = []
    for name, default in (("per_page", 30), ("page", 1)):
        raw = params.get(name)
        if raw is None:
            values.append(default)
            continue
        if not raw.isdigit():
            raise _ApiError(400, f"fake: {name} must be a positive integer, not {raw!r}")
        values.append(int(raw))
    per_page, page = values
    # GitHub caps per_page at 100 and treats 0 as the default.
    return (min(per_page, 100) or 30), max(page, 1)


def _paginate(
    request: web.Request, items: Sequence[Any], params: Mapping[str, str]
) -> tuple[Sequence[Any], dict[str, str]]:
    """One page of ``items`` and the ``Link`` header pointing at the others."""
    per_page, page = _page_params(params)
    last = max(1, -(-len(items) // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]

    def link(number: int, rel: str) -> str:
        return f'<{request.url.update_query(page=str(number))}>; rel="{rel}"'

    links = []
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        links = [link(min(page - 1, last), "prev"), link(1, "first"), *links]
    return chunk, ({"link": ", ".join(links)} if links else {})


def _entry(
    repo: FakeRepo, ref: str, path: str, kind: str, sha: str, size: int, api: str
) -> dict[str, Any]:
    url = f"{api}/repos/{repo.full_name}/contents/{urllib.parse.quote(path)}?ref={ref}"
    html = (
        f"https://github.com/{repo.full_name}/{'blob' if kind == 'file' else 'tree'}/{ref}/{path}"
    )
    git = f"{api}/repos/{repo.full_name}/git/{'blobs' if kind == 'file' else 'trees'}/{sha}"
    return {
        "type": kind,
        "size": size,
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "sha": sha,
        "url": url,
        "git_url": git,
        "html_url": html,
        "download_url": (
            f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{path}"
            if kind == "file"
            else None
        ),
        "_links": {"self": url, "git": git, "html": html},
    }


def _file_resource(repo: FakeRepo, ref: str, path: str, content: bytes, api: str) -> dict[str, Any]:
    out = _entry(repo, ref, path, "file", _blob_sha(content), len(content), api)
    if len(content) > LARGE_FILE:
        # 1-100 MB: the contents API leaves the content out.
        out["content"], out["encoding"] = "", "none"
    else:
        encoded = base64.b64encode(content).decode()
        lines = [encoded[i : i + 60] for i in range(0, len(encoded), 60)]
        out["content"] = "".join(f"{line}\n" for line in lines)
        out["encoding"] = "base64"
    return out


def _object_body(body: Any) -> dict[str, Any]:
    if body is _NOT_JSON or body is None:
        raise _ApiError(400, "Problems parsing JSON")
    if not isinstance(body, dict):
        raise _ApiError(
            422, f"Invalid request.\n\nFor 'links/0/schema', {_dumps(body)} is not an object."
        )
    return body


def _permitted(body: Mapping[str, Any], allowed: set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise _ApiError(422, f'Invalid request.\n\n"{key}" is not a permitted key.')


def _string_list(body: Mapping[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _ApiError(
            422,
            f"Invalid request.\n\nFor 'properties/{name}', {_dumps(value)} "
            "is not an array of strings.",
        )
    return list(value)


def _json(
    value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    response = web.json_response(value, status=status, dumps=_dumps)
    response.content_type = "application/json"
    response.charset = "utf-8"
    response.headers.update(headers or {})
    response.headers["x-github-media-type"] = "github.v3; format=json"
    response.headers["x-github-api-version-selected"] = API_VERSION
    response.headers["x-github-request-id"] = secrets.token_hex(8).upper()
    return response


def _error_response(error: _ApiError) -> web.Response:
    body: dict[str, Any] = {"message": error.message}
    if error.errors is not None:
        body["errors"] = error.errors
    body["documentation_url"] = f"{_DOCS}{error.docs}"
    body["status"] = str(error.status)
    return _json(body, status=error.status, headers=error.headers)


def _rate_headers(window: _Window, endpoint: str | None) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(window.limit),
        "x-ratelimit-remaining": str(window.remaining),
        "x-ratelimit-used": str(window.limit - window.remaining),
        "x-ratelimit-reset": str(window.reset),
        "x-ratelimit-resource": "search" if endpoint == "search_issues" else "core",
    }


def _redirect(target: str, params: Mapping[str, str], state: str | None) -> web.Response:
    query = dict(params)
    if state is not None:
        query["state"] = state
    separator = "&" if urllib.parse.urlsplit(target).query else "?"
    location = f"{target}{separator}{urllib.parse.urlencode(query)}"
    return web.Response(status=302, headers={"location": location})


def _authorize_error(code: Literal["access_denied", "redirect_uri_mismatch"]) -> dict[str, str]:
    description = {
        "access_denied": "The user has denied your application access.",
        "redirect_uri_mismatch": (
            "The redirect_uri MUST match the registered callback URL for this application."
        ),
    }[code]
    anchor = code.replace("_", "-")
    return {
        "error": code,
        "error_description": description,
        "error_uri": _AUTHORIZE_ERRORS_URI + anchor,
    }


def _invalid_request(description: str) -> dict[str, str]:
    return {"error": "invalid_request", "error_description": description}


def _oauth_answer(answer: Mapping[str, Any], headers: Mapping[str, str]) -> web.Response:
    """The token endpoint's answer: JSON when asked for, else form-encoded (GitHub's default)."""
    if "application/json" in headers.get("accept", ""):
        return web.json_response(answer, dumps=_dumps)
    return web.Response(
        text=urllib.parse.urlencode({k: str(v) for k, v in answer.items()}),
        content_type="application/x-www-form-urlencoded",
    )


def _oauth_refusal(code: str, headers: Mapping[str, str]) -> web.Response:
    description, anchor = _OAUTH_ERRORS[code]
    return _oauth_answer(
        {"error": code, "error_description": description, "error_uri": _TOKEN_ERRORS_URI + anchor},
        headers,
    )

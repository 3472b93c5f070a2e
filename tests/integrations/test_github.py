"""The GitHub integration against the GitHub fake: connect, tools, token refresh, revoke.

Credentials live in a real SQLite store behind :class:`StoreCredentials`, as in
the daemon; the fake plays github.com and api.github.com on one loopback port.
"""

from __future__ import annotations

import asyncio
import base64
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from interlockd.ids import new_id
from interlockd.integrations.base import (
    Connection,
    ConnectionBroken,
    ExchangeResult,
    OAuthError,
)
from interlockd.integrations.connect import pkce_challenge
from interlockd.integrations.credentials import StoreCredentials
from interlockd.integrations.github import TOOL_SPECS, GitHubApp
from interlockd.integrations.github.tools import FILE_CHARS
from interlockd.store.base import Quotas
from interlockd.store.crypto import MasterKeyring
from interlockd.store.sqlite import SqliteStore
from interlockd.tools.base import Tool, ToolContext, ToolError
from tests.eventually import eventually
from tests.fakes.github import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, FakeGitHub

CALLBACK = "http://127.0.0.1:9/v1/integrations/callback"
VERIFIER = "v" * 43
USER = "u-1"
RECONNECT = f"interlock integrations connect github --end-user {USER}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "db", MasterKeyring.load_or_create(tmp_path / "key"))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(redirect_uris=[CALLBACK]) as fake:
        yield fake


def make_app(fake: FakeGitHub, **options: Any) -> GitHubApp:
    options.setdefault("client_secret", DEFAULT_CLIENT_SECRET)
    return GitHubApp(
        client_id=DEFAULT_CLIENT_ID,
        web_base_url=fake.base_url,
        api_base_url=fake.base_url,
        **options,
    )


@pytest.fixture
async def app(fake: FakeGitHub) -> AsyncIterator[GitHubApp]:
    app = make_app(fake)
    try:
        yield app
    finally:
        await app.aclose()


async def authorize(app: GitHubApp, fake: FakeGitHub, verifier: str = VERIFIER) -> str:
    """Send the user through the app's authorize URL; the code GitHub hands back."""
    url = app.authorize_url(
        state="state-1", code_challenge=pkce_challenge(verifier), redirect_uri=CALLBACK
    )
    callback = await fake.approve(url)
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))
    assert params["state"] == "state-1"
    return params["code"]


async def connect(app: GitHubApp, fake: FakeGitHub) -> ExchangeResult:
    code = await authorize(app, fake)
    return await app.exchange(code=code, code_verifier=VERIFIER, redirect_uri=CALLBACK)


class WatchedCredentials(StoreCredentials):
    """StoreCredentials that note each time a caller asks for the lock."""

    def __init__(self, *args: Any, asked: list[str]) -> None:
        super().__init__(*args)
        self.asked = asked

    def lock(self) -> AbstractAsyncContextManager[None]:
        self.asked.append("lock")
        return super().lock()


@dataclass
class Linked:
    """A stored GitHub connection and one run's view of it (credentials and tools)."""

    store: SqliteStore
    sandbox_id: str
    integration_id: str
    connection: Connection
    credentials: WatchedCredentials
    tools: dict[str, Tool]
    asked: list[str]

    def again(self, app: GitHubApp) -> Linked:
        """Another run's view of the same connection (its own credentials and tools)."""
        credentials = WatchedCredentials(
            self.store, self.sandbox_id, self.integration_id, "github", asked=self.asked
        )
        tools = {t.spec.name: t for t in app.tools(self.connection, credentials)}
        return Linked(
            self.store,
            self.sandbox_id,
            self.integration_id,
            self.connection,
            credentials,
            tools,
            self.asked,
        )

    async def call(self, name: str, **arguments: Any) -> Any:
        ctx = ToolContext(self.store, self.sandbox_id, USER, "conv-1", "run-1")
        return await self.tools[name].execute(ctx, arguments)

    async def stored(self) -> dict[str, Any]:
        return await self.store.read_integration_credentials(self.sandbox_id, self.integration_id)

    async def status(self) -> tuple[str, str]:
        integration = await self.store.get_integration(self.sandbox_id, self.integration_id)
        return integration.status, integration.status_reason


async def link(
    store: SqliteStore, app: GitHubApp, result: ExchangeResult, end_user_id: str = USER
) -> Linked:
    """Store the connection as the connect flow does and build its tools."""
    sandbox = await store.create_sandbox(new_id("sbx"), Quotas())
    integration = await store.create_integration(
        sandbox.id,
        kind="oauth",
        app="github",
        end_user_id=end_user_id,
        config=result.config,
        credentials=result.credentials,
    )
    connection = Connection(
        integration.id, sandbox.id, end_user_id, "oauth", "github", integration.config
    )
    asked: list[str] = []
    credentials = WatchedCredentials(store, sandbox.id, integration.id, "github", asked=asked)
    tools = {t.spec.name: t for t in app.tools(connection, credentials)}
    return Linked(store, sandbox.id, integration.id, connection, credentials, tools, asked)


@pytest.fixture
async def linked(store: SqliteStore, app: GitHubApp, fake: FakeGitHub) -> Linked:
    return await link(store, app, await connect(app, fake))


# ---- connecting ------------------------------------------------------------------------


async def test_exchange_with_pkce_stores_expiring_tokens_and_the_login(
    app: GitHubApp, fake: FakeGitHub
) -> None:
    """The authorize URL carries S256 PKCE, state and the callback; the exchange sends the
    verifier and yields the token pair with its deadlines and the account's login."""
    url = app.authorize_url(
        state="s", code_challenge=pkce_challenge(VERIFIER), redirect_uri=CALLBACK
    )
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert url.startswith(f"{fake.base_url}/login/oauth/authorize?")
    assert query == {
        "client_id": DEFAULT_CLIENT_ID,
        "redirect_uri": CALLBACK,
        "scope": "repo",
        "state": "s",
        "code_challenge": pkce_challenge(VERIFIER),
        "code_challenge_method": "S256",
    }
    result = await connect(app, fake)
    credentials = result.credentials
    assert set(credentials) == {
        "access_token",
        "refresh_token",
        "expires_at",
        "refresh_token_expires_at",
        "token_type",
        "scope",
    }
    assert credentials["access_token"].startswith("ghu_")
    assert credentials["refresh_token"].startswith("ghr_")
    assert credentials["refresh_token_expires_at"] > credentials["expires_at"]
    assert result.config == {"login": "octocat", "scopes": []}
    exchange = fake.code_exchanges[0]
    assert exchange.params["code_verifier"] == VERIFIER
    assert exchange.params["redirect_uri"] == CALLBACK
    assert exchange.headers["accept"] == "application/json"
    assert fake.requests_to("user")[0].headers["authorization"] == (
        f"Bearer {credentials['access_token']}"
    )


async def test_exchange_with_an_oauth_app_keeps_its_scopes() -> None:
    """An OAuth App's token has no expiry or refresh token; the granted scopes are kept."""
    async with FakeGitHub(redirect_uris=[CALLBACK], app_kind="oauth_app") as fake:
        app = make_app(fake, scopes=["repo", "read:user"])
        try:
            result = await connect(app, fake)
        finally:
            await app.aclose()
    assert set(result.credentials) == {"access_token", "token_type", "scope"}
    assert result.credentials["access_token"].startswith("gho_")
    assert result.config == {"login": "octocat", "scopes": ["read:user", "repo"]}


async def test_exchange_refusals_raise_oauth_errors(app: GitHubApp, fake: FakeGitHub) -> None:
    """A wrong verifier, an unknown code, another redirect URI and a wrong client secret are
    OAuthErrors with GitHub's codes, though GitHub answers them with HTTP 200."""
    code = await authorize(app, fake)
    with pytest.raises(OAuthError) as wrong_verifier:
        await app.exchange(code=code, code_verifier="w" * 43, redirect_uri=CALLBACK)
    assert wrong_verifier.value.code == "bad_code_verifier"
    with pytest.raises(OAuthError) as unknown_code:
        await app.exchange(code="0" * 20, code_verifier=VERIFIER, redirect_uri=CALLBACK)
    assert unknown_code.value.code == "bad_verification_code"
    assert unknown_code.value.message == "The code passed is incorrect or expired."
    with pytest.raises(OAuthError) as elsewhere:
        await app.exchange(code=code, code_verifier=VERIFIER, redirect_uri=CALLBACK + "/x")
    assert elsewhere.value.code == "redirect_uri_mismatch"
    wrong = make_app(fake, client_secret="not-the-secret")
    try:
        with pytest.raises(OAuthError) as secret:
            await wrong.exchange(code=code, code_verifier=VERIFIER, redirect_uri=CALLBACK)
    finally:
        await wrong.aclose()
    assert secret.value.code == "incorrect_client_credentials"
    await app.exchange(code=code, code_verifier=VERIFIER, redirect_uri=CALLBACK)
    with pytest.raises(OAuthError, match="bad_verification_code"):
        await app.exchange(code=code, code_verifier=VERIFIER, redirect_uri=CALLBACK)


# ---- the tools ---------------------------------------------------------------------------


async def test_tools_are_namespaced_schemad_and_flag_their_side_effects(
    app: GitHubApp, linked: Linked
) -> None:
    """Seven github__ tools in a stable order, object schemas, create_issue and comment_issue
    side-effecting; a connection's tools carry its integration id."""
    names = [spec.name for spec in app.tool_specs()]
    assert names == [
        "github__whoami",
        "github__list_repos",
        "github__search_issues",
        "github__get_issue",
        "github__get_file",
        "github__create_issue",
        "github__comment_issue",
    ]
    assert [s for s in app.tool_specs() if s.side_effecting] == [
        TOOL_SPECS[5],
        TOOL_SPECS[6],
    ]
    for spec in app.tool_specs():
        assert spec.parameters["type"] == "object"
        assert spec.parameters["additionalProperties"] is False
        assert set(spec.parameters.get("required", [])) <= set(spec.parameters["properties"])
    assert [t.spec for t in linked.tools.values()] == app.tool_specs()
    assert {t.source_id for t in linked.tools.values()} == {linked.integration_id}
    assert app.name == "github"
    assert app.kind == "oauth"


async def test_whoami_reports_the_account(linked: Linked) -> None:
    """whoami answers the account's login and profile in a few fields."""
    me = await linked.call("github__whoami")
    assert me["login"] == "octocat"
    assert me["name"] == "The Octocat"
    assert me["html_url"] == "https://github.com/octocat"
    assert "scopes" not in me  # a GitHub App's token has none


async def test_list_repos_pages_and_says_when_there_is_more(
    linked: Linked, fake: FakeGitHub
) -> None:
    """list_repos sends limit as per_page, returns compact repositories and the next page
    until the last one."""
    for n in range(5):
        fake.add_repo(f"octocat/r{n}", description="d" * 500, language="Python")
    first = await linked.call("github__list_repos", limit=2)
    assert [r["full_name"] for r in first["repositories"]] == ["octocat/r4", "octocat/r3"]
    assert first["has_more"] is True
    assert first["next_page"] == 2
    assert "page=2" in first["note"]
    repo = first["repositories"][0]
    assert set(repo) == {
        "full_name",
        "private",
        "description",
        "language",
        "default_branch",
        "stars",
        "open_issues",
        "archived",
        "updated_at",
        "html_url",
        "access",
    }
    assert len(repo["description"]) == 201  # cut at 200 characters, marked with an ellipsis
    assert repo["access"] == "admin"
    last = await linked.call("github__list_repos", limit=2, page=3)
    assert [r["full_name"] for r in last["repositories"]] == ["octocat/r0"]
    assert last["has_more"] is False
    assert "next_page" not in last
    assert fake.requests_to("user_repos")[0].query["per_page"] == ["2"]
    by_name = await linked.call("github__list_repos", sort="full_name", limit=100)
    assert by_name["repositories"][0]["full_name"] == "octocat/r0"


async def test_search_issues_always_searches_issues(linked: Linked, fake: FakeGitHub) -> None:
    """search_issues adds is:issue (and repo:/is:open when asked) to q, leaves pull requests
    out, and pages; a query asking for pull requests is refused before any request."""
    repo = fake.add_repo("octocat/hello")
    fake.add_issue(repo, "Crash on start", body="Segfault " * 100, labels=["bug"])
    fake.add_issue(repo, "Crash on exit", state="closed")
    fake.add_issue(repo, "Fix the crash", pull_request=True)
    found = await linked.call("github__search_issues", query="crash")
    assert found["query"] == "crash is:issue"
    assert found["total_count"] == 2
    assert [i["title"] for i in found["issues"]] == ["Crash on exit", "Crash on start"]
    hit = found["issues"][1]
    assert hit["repo"] == "octocat/hello"
    assert hit["labels"] == ["bug"]
    assert hit["excerpt"].endswith("…")
    assert fake.requests_to("search_issues")[0].query["q"] == ["crash is:issue"]
    narrowed = await linked.call(
        "github__search_issues", query="crash", repo="octocat/hello", state="open", limit=1
    )
    assert narrowed["query"] == "crash repo:octocat/hello is:open is:issue"
    assert [i["number"] for i in narrowed["issues"]] == [1]
    assert narrowed["has_more"] is False
    paged = await linked.call("github__search_issues", query="crash is:issue", limit=1)
    assert paged["query"] == "crash is:issue"
    assert paged["next_page"] == 2
    searches = len(fake.requests_to("search_issues"))
    with pytest.raises(ToolError, match="issues only"):
        await linked.call("github__search_issues", query="crash is:pr")
    assert len(fake.requests_to("search_issues")) == searches


async def test_get_issue_includes_comments_a_page_at_a_time(
    linked: Linked, fake: FakeGitHub
) -> None:
    """get_issue returns the issue with its first comments, the next comments page, and a
    long body cut and marked."""
    repo = fake.add_repo("octocat/hello")
    issue = fake.add_issue(repo, "Bug", body="x" * 9000, author="hubot", labels=["bug"])
    for n in range(3):
        fake.add_comment(issue, f"comment {n}", author="hubot")
    got = await linked.call("github__get_issue", repo="octocat/hello", number=1, comments=2)
    assert (got["title"], got["author"], got["labels"]) == ("Bug", "hubot", ["bug"])
    assert got["is_pull_request"] is False
    assert len(got["body"]) == 8000
    assert got["body_truncated"] is True
    assert got["comments_total"] == 3
    assert [c["body"] for c in got["comments"]] == ["comment 0", "comment 1"]
    assert got["comments_next_page"] == 2
    rest = await linked.call(
        "github__get_issue", repo="octocat/hello", number=1, comments=2, comments_page=2
    )
    assert [c["body"] for c in rest["comments"]] == ["comment 2"]
    assert "comments_next_page" not in rest
    quiet = await linked.call("github__get_issue", repo="octocat/hello", number=1, comments=0)
    assert "comments" not in quiet


async def test_get_file_reads_text_directories_and_more(linked: Linked, fake: FakeGitHub) -> None:
    """get_file decodes a text file, lists a directory, reads another ref, marks binary files,
    pages long text by offset, and refuses a file too large for the contents API."""
    long_text = "".join(f"line {n}\n" for n in range(8000))
    repo = fake.add_repo(
        "octocat/hello",
        files={
            "README.md": "# Hello\nWorld\n",
            "src/app.py": "print('hi')\n",
            "logo.png": b"\x89PNG\r\n\x1a\n\xff\xfe",
            "long.txt": long_text,
            "huge.bin": b"a" * (1024 * 1024 + 1),
        },
    )
    fake.add_file(repo, "README.md", "# Dev\n", ref="dev")
    readme = await linked.call("github__get_file", repo="octocat/hello", path="README.md")
    assert readme["content"] == "# Hello\nWorld\n"
    assert readme["type"] == "file"
    assert "truncated" not in readme
    top = await linked.call("github__get_file", repo="octocat/hello", path="")
    assert top["type"] == "dir"
    assert [(e["name"], e["type"]) for e in top["entries"]] == [
        ("README.md", "file"),
        ("huge.bin", "file"),
        ("logo.png", "file"),
        ("long.txt", "file"),
        ("src", "dir"),
    ]
    dev = await linked.call("github__get_file", repo="octocat/hello", path="/README.md", ref="dev")
    assert dev["content"] == "# Dev\n"
    logo = await linked.call("github__get_file", repo="octocat/hello", path="logo.png")
    assert logo["binary"] is True
    assert "content" not in logo
    first = await linked.call("github__get_file", repo="octocat/hello", path="long.txt")
    assert len(first["content"]) == FILE_CHARS
    assert first["truncated"] is True
    second = await linked.call(
        "github__get_file", repo="octocat/hello", path="long.txt", offset=first["next_offset"]
    )
    assert first["content"] + second["content"] == long_text
    assert "truncated" not in second
    with pytest.raises(ToolError, match="more than GitHub's contents API returns"):
        await linked.call("github__get_file", repo="octocat/hello", path="huge.bin")
    with pytest.raises(ToolError, match="No commit found for the ref nope"):
        await linked.call("github__get_file", repo="octocat/hello", path="README.md", ref="nope")


async def test_create_issue_and_comment_happen_once_each(linked: Linked, fake: FakeGitHub) -> None:
    """create_issue and comment_issue each make exactly one issue or comment upstream and
    answer its number, id and URL; labels GitHub did not apply are pointed out."""
    repo = fake.add_repo("octocat/hello")
    fake.add_issue(repo, "Existing")
    created = await linked.call(
        "github__create_issue",
        repo="octocat/hello",
        title="Broken link",
        body="The docs link 404s.",
        labels=["bug"],
    )
    assert created == {
        "created": True,
        "repo": "octocat/hello",
        "number": 2,
        "title": "Broken link",
        "state": "open",
        "html_url": "https://github.com/octocat/hello/issues/2",
        "labels": ["bug"],
        "assignees": [],
    }
    comment = await linked.call(
        "github__comment_issue", repo="octocat/hello", number=1, body="Looking into it."
    )
    assert comment["created"] is True
    assert comment["number"] == 1
    assert comment["html_url"].endswith(f"#issuecomment-{comment['comment_id']}")
    assert [i.body for i in fake.created_issues] == ["The docs link 404s."]
    assert [c.body for c in fake.created_comments] == ["Looking into it."]
    fake.add_repo("hubot/elsewhere")
    other = await linked.call(
        "github__create_issue", repo="hubot/elsewhere", title="Hi", labels=["bug"]
    )
    assert other["labels"] == []
    assert "did not apply bug" in other["note"]
    assert len(fake.created_issues) == 2


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("github__whoami", {"verbose": True}, "unknown argument(s) 'verbose'"),
        ("github__list_repos", {"limit": 0}, "'limit' must be from 1 to 100"),
        ("github__list_repos", {"limit": "5"}, "'limit' must be an integer, not a string"),
        ("github__list_repos", {"sort": "stars"}, "'sort' must be one of"),
        ("github__search_issues", {}, "'query' is required"),
        ("github__search_issues", {"query": "x", "repo": "nope"}, "'repo' must be owner/name"),
        ("github__search_issues", {"query": "x", "page": 11, "limit": 100}, "first 1000"),
        ("github__get_issue", {"repo": "octocat/hello"}, "'number' is required"),
        ("github__get_issue", {"repo": "octocat/hello", "number": True}, "must be an integer"),
        ("github__get_file", {"repo": "octocat/hello"}, "'path' is required"),
        ("github__get_file", {"repo": "octocat/hello", "path": "a/../b"}, "'..'"),
        ("github__create_issue", {"repo": "octocat/hello", "title": " "}, "must not be empty"),
        (
            "github__create_issue",
            {"repo": "octocat/hello", "title": "t", "labels": "bug"},
            "'labels' must be a list",
        ),
        ("github__comment_issue", {"repo": "octocat/hello", "number": 1}, "'body' is required"),
        ("github__comment_issue", {"repo": 7, "number": 1, "body": "b"}, "'repo' must be a string"),
    ],
)
async def test_bad_arguments_are_tool_errors_before_any_request(
    linked: Linked, fake: FakeGitHub, tool: str, arguments: dict[str, Any], message: str
) -> None:
    """Arguments that break a tool's schema are a ToolError naming the argument; GitHub is
    not called."""
    before = len(fake.requests)
    with pytest.raises(ToolError) as refused:
        await linked.call(tool, **arguments)
    assert message in str(refused.value)
    assert len(fake.requests) == before


async def test_github_errors_become_readable_tool_errors(linked: Linked, fake: FakeGitHub) -> None:
    """A 404 names what was missing, a 422 carries GitHub's validation details, a 410 its
    message, a 5xx on a write says the outcome is unknown."""
    fake.add_repo("octocat/hello")
    fake.add_repo("octocat/quiet", has_issues=False)
    with pytest.raises(ToolError) as missing:
        await linked.call("github__get_issue", repo="octocat/hello", number=9)
    assert str(missing.value) == (
        "issue octocat/hello#9 was not found, or the connected GitHub account cannot see it"
    )
    with pytest.raises(ToolError) as invalid:
        await linked.call(
            "github__create_issue", repo="octocat/hello", title="t", assignees=["ghost"]
        )
    assert str(invalid.value) == (
        "GitHub rejected a new issue in octocat/hello: Validation Failed: "
        "assignees 'ghost' is invalid"
    )
    with pytest.raises(ToolError, match="Issues are disabled for this repo"):
        await linked.call("github__create_issue", repo="octocat/quiet", title="t")
    fake.fail("create_comment", 502)
    fake.add_issue("octocat/hello", "Bug")
    with pytest.raises(ToolError, match="may or may not have happened"):
        await linked.call("github__comment_issue", repo="octocat/hello", number=1, body="b")
    assert fake.created_issues == []


async def test_an_exhausted_rate_limit_says_when_to_try_again(
    linked: Linked, fake: FakeGitHub
) -> None:
    """A 403 with x-ratelimit-remaining 0 far from its reset is a ToolError giving the reset
    time, without waiting or repeating the request."""
    fake.exhaust_rate_limit("search")
    with pytest.raises(ToolError) as limited:
        await linked.call("github__search_issues", query="crash")
    message = str(limited.value)
    assert message.startswith("GitHub's rate limit for the connected account is used up")
    assert "30 search requests" in message
    assert "resets at" in message
    assert message.endswith("Try again after that.")
    assert len(fake.requests_to("search_issues")) == 1


async def test_a_short_secondary_rate_limit_is_waited_out_once(
    linked: Linked, fake: FakeGitHub
) -> None:
    """A 429 with a short retry-after is repeated once and succeeds; a long one is a ToolError
    saying how long to wait."""
    fake.fail("user", 429, retry_after=0)
    assert (await linked.call("github__whoami"))["login"] == "octocat"
    assert len(fake.requests_to("user")) == 2 + 1  # the exchange's lookup, then two
    fake.fail("user", 403, retry_after=120)
    with pytest.raises(ToolError) as limited:
        await linked.call("github__whoami")
    assert str(limited.value) == (
        "GitHub asked to slow down (a secondary rate limit); try again in about 2 minutes."
    )


# ---- token life ------------------------------------------------------------------------------


async def test_a_token_near_its_expiry_is_refreshed_first(store: SqliteStore) -> None:
    """With less than five minutes left the token is refreshed before the call, the new pair
    is stored, and the call uses the new access token."""
    async with FakeGitHub(redirect_uris=[CALLBACK], access_token_ttl=120) as fake:
        app = make_app(fake)
        try:
            linked = await link(store, app, await connect(app, fake))
            old = await linked.stored()
            assert (await linked.call("github__whoami"))["login"] == "octocat"
            new = await linked.stored()
        finally:
            await app.aclose()
    assert len(fake.refresh_requests) == 1
    assert fake.refresh_requests[0].params["refresh_token"] == old["refresh_token"]
    assert new["access_token"] != old["access_token"]
    assert new["refresh_token"] != old["refresh_token"]
    assert fake.requests_to("user")[-1].headers["authorization"] == f"Bearer {new['access_token']}"


async def test_a_rejected_token_is_refreshed_and_the_call_repeated(
    linked: Linked, fake: FakeGitHub
) -> None:
    """A 401 for a token the router thinks valid gets one refresh and one retry, which works."""
    old = await linked.stored()
    fake.expire(old["access_token"])
    assert (await linked.call("github__whoami"))["login"] == "octocat"
    assert len(fake.refresh_requests) == 1
    assert (await linked.stored())["access_token"] != old["access_token"]
    assert [r.headers["authorization"] for r in fake.requests_to("user")[-2:]] == [
        f"Bearer {old['access_token']}",
        f"Bearer {(await linked.stored())['access_token']}",
    ]


async def test_two_concurrent_calls_refresh_once(store: SqliteStore) -> None:
    """Two runs calling tools on an expiring token at once cause exactly one refresh: the
    second waits on the connection's lock and then uses the first one's new token."""
    async with FakeGitHub(redirect_uris=[CALLBACK], access_token_ttl=120) as fake:
        app = make_app(fake)
        try:
            first = await link(store, app, await connect(app, fake))
            fake.access_token_ttl = 28_800  # the refreshed token is not due again
            second = first.again(app)
            fake.hold("access_token")
            calls = [
                asyncio.create_task(first.call("github__whoami")),
                asyncio.create_task(second.call("github__list_repos")),
            ]
            await fake.wait_for_requests(2, "access_token")  # the exchange, then one refresh

            async def both_at_the_lock() -> None:
                assert len(first.asked) == 2

            await eventually(both_at_the_lock)
            fake.release("access_token")
            me, repos = await asyncio.gather(*calls)
            stored = await first.stored()
        finally:
            await app.aclose()
    assert me["login"] == "octocat"
    assert repos["repositories"] == []
    assert len(fake.refresh_requests) == 1
    tokens = {r.headers["authorization"] for r in fake.requests_to("user")[1:]}
    tokens |= {r.headers["authorization"] for r in fake.requests_to("user_repos")}
    assert tokens == {f"Bearer {stored['access_token']}"}


async def test_a_cancelled_call_still_stores_the_refreshed_pair(store: SqliteStore) -> None:
    """A call cancelled while its refresh is in flight does not lose the rotated refresh
    token: the refresh completes and is stored, and the next call needs no refresh."""
    async with FakeGitHub(redirect_uris=[CALLBACK], access_token_ttl=120) as fake:
        app = make_app(fake)
        try:
            linked = await link(store, app, await connect(app, fake))
            fake.access_token_ttl = 28_800  # the refreshed token is not due again
            old = await linked.stored()
            fake.hold("access_token")
            call = asyncio.create_task(linked.call("github__whoami"))
            await fake.wait_for_requests(2, "access_token")
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            fake.release("access_token")

            async def stored_new_pair() -> dict[str, Any]:
                stored = await linked.stored()
                assert stored["refresh_token"] != old["refresh_token"]
                return stored

            await eventually(stored_new_pair)
            assert (await linked.call("github__whoami"))["login"] == "octocat"
        finally:
            await app.aclose()
    assert len(fake.refresh_requests) == 1
    assert fake.refresh_requests[0].params["refresh_token"] == old["refresh_token"]
    assert fake.live_tokens()  # no refresh token was ever presented twice


async def test_a_revoked_authorization_breaks_the_connection(
    linked: Linked, fake: FakeGitHub
) -> None:
    """After the user removes the app on GitHub, a call's 401 and refused refresh mark the
    connection broken and tell the model to have the user reconnect; later calls fail the
    same way without calling GitHub."""
    fake.revoke_authorization()
    with pytest.raises(ConnectionBroken) as broken:
        await linked.call("github__whoami")
    assert str(broken.value) == (
        "GitHub access was revoked or expired; the user must reconnect GitHub "
        f"({RECONNECT}) before GitHub tools work again"
    )
    assert await linked.status() == (
        "broken",
        "GitHub refused the refresh token (bad_refresh_token)",
    )
    requests = len(fake.requests)
    with pytest.raises(ConnectionBroken, match="connect github again"):
        await linked.call("github__whoami")
    assert len(fake.requests) == requests


async def test_a_rejected_oauth_app_token_breaks_without_a_refresh(store: SqliteStore) -> None:
    """An OAuth App token has nothing to refresh with: its 401 marks the connection broken."""
    async with FakeGitHub(redirect_uris=[CALLBACK], app_kind="oauth_app") as fake:
        app = make_app(fake)
        try:
            linked = await link(store, app, await connect(app, fake), end_user_id="")
            fake.revoke_authorization()
            with pytest.raises(ConnectionBroken) as broken:
                await linked.call("github__list_repos")
        finally:
            await app.aclose()
    assert "(interlock integrations connect github)" in str(broken.value)
    assert fake.refresh_requests == []
    status, reason = await linked.status()
    assert status == "broken"
    assert "no refresh token" in reason


async def test_a_refreshed_token_rejected_again_breaks_the_connection(
    linked: Linked, fake: FakeGitHub
) -> None:
    """If GitHub refuses the freshly refreshed token too, the connection is marked broken
    after exactly one refresh."""
    fake.fail("user", 401, times=2)
    with pytest.raises(ConnectionBroken):
        await linked.call("github__whoami")
    assert len(fake.refresh_requests) == 1
    assert await linked.status() == ("broken", "GitHub rejected a freshly refreshed access token")


async def test_an_expired_refresh_token_breaks_without_a_request(
    linked: Linked, fake: FakeGitHub
) -> None:
    """A refresh token past its own expiry is not sent: the connection is broken at once."""
    stored = await linked.stored()
    await linked.credentials.replace({**stored, "expires_at": 1, "refresh_token_expires_at": 2})
    with pytest.raises(ConnectionBroken):
        await linked.call("github__whoami")
    assert fake.refresh_requests == []
    assert await linked.status() == ("broken", "the GitHub refresh token expired")


# ---- revoking --------------------------------------------------------------------------------


async def test_revoke_deletes_the_grant_upstream(app: GitHubApp, fake: FakeGitHub) -> None:
    """revoke sends DELETE /applications/{client_id}/grant with Basic client auth and the
    token; afterwards no token of the grant works, and revoking again is not an error."""
    result = await connect(app, fake)
    await app.revoke(result.credentials)
    request = fake.requests_to("revoke_grant")[0]
    assert request.method == "DELETE"
    assert request.path == f"/applications/{DEFAULT_CLIENT_ID}/grant"
    basic = base64.b64encode(f"{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {basic}"
    assert request.body == {"access_token": result.credentials["access_token"]}
    assert fake.live_tokens() == []
    await app.revoke(result.credentials)  # already gone: nothing left to do


async def test_revoke_refreshes_an_expired_token_first(app: GitHubApp, fake: FakeGitHub) -> None:
    """GitHub revokes by a live access token: an expired one is refreshed, then revoked."""
    result = await connect(app, fake)
    fake.expire(result.credentials["access_token"])
    await app.revoke({**result.credentials, "expires_at": 1})
    assert len(fake.refresh_requests) == 1
    assert len(fake.requests_to("revoke_grant")) == 1
    assert fake.live_tokens() == []


async def test_revoke_with_wrong_client_credentials_is_refused(fake: FakeGitHub) -> None:
    """When GitHub will not revoke a token that still works, revoke raises OAuthError."""
    good = make_app(fake)
    wrong = make_app(fake, client_secret="not-the-secret")
    try:
        result = await connect(good, fake)
        with pytest.raises(OAuthError) as refused:
            await wrong.revoke(result.credentials)
    finally:
        await good.aclose()
        await wrong.aclose()
    assert refused.value.code == "revoke_refused"
    assert fake.live_tokens()

"""``client.integrations`` and ``interlock integrations`` against a real interlockd.

The daemon runs in this test's event loop; the blocking client runs in a
worker thread so the loop keeps serving it. Most tests run on a daemon with no
OAuth app, where the watch tests put connect flows in the daemon's store
directly, as the OAuth callback would; the last ones configure GitHub against
its loopback fake and connect through the daemon's HTTP callback.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from interlock import (
    Client,
    ConnectFailed,
    DeadlineExceeded,
    InvalidArgument,
    MissingCredentials,
    NotFound,
    SyncClient,
    Unauthenticated,
)
from interlock.cli import amain
from interlock.v1 import integrations_pb2 as pb
from interlockd.store.base import ConnectFlow
from tests.conftest import DaemonFactory, RunningDaemon
from tests.eventually import eventually
from tests.fakes.github import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, FakeGitHub

CLI = Callable[..., Awaitable[tuple[int, str, str]]]
README = Path(__file__).resolve().parents[2] / "clients" / "python" / "README.md"
MCP_URL = "http://127.0.0.1:9/mcp"  # stored, never called: no run lists its tools here
TOKEN = "mcp-token-" + "7f3a9c" * 6
T = TypeVar("T")


@pytest.fixture
async def client(daemon: RunningDaemon) -> AsyncIterator[Client]:
    async with Client(daemon.address, daemon.api_key) as c:
        yield c


@pytest.fixture
def cli(daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]) -> CLI:
    """Run `interlock <argv>` in-process against the daemon; return (code, stdout, stderr)."""

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await amain(["--address", daemon.address, "--api-key", daemon.api_key, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def in_thread(daemon: RunningDaemon, call: Callable[[SyncClient], T]) -> T:
    """Run ``call`` with a SyncClient on a worker thread while the loop serves the daemon."""

    def work() -> T:
        with SyncClient(daemon.address, daemon.api_key) as sync:
            return call(sync)

    return await asyncio.to_thread(work)


async def start_flow(daemon: RunningDaemon, *, expires_in: float = 600) -> ConnectFlow:
    """A pending GitHub connect flow of end user u-1, as Connect records it."""
    return await daemon.daemon.store.create_connect_flow(
        daemon.sandbox_id,
        app="github",
        end_user_id="u-1",
        for_end_user=True,
        state_hash=secrets.token_hex(32),
        code_verifier=secrets.token_urlsafe(64),
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
    )


async def complete_flow(daemon: RunningDaemon, flow: ConnectFlow) -> str:
    """Store a connection and end the flow connected, as the OAuth callback does; its id."""
    store = daemon.daemon.store
    integration = await store.create_integration(
        daemon.sandbox_id,
        kind="oauth",
        app="github",
        end_user_id="u-1",
        config={"login": "octocat"},
        credentials={"access_token": "gho_test"},
    )
    await store.finish_connect_flow(
        daemon.sandbox_id, flow.id, "connected", integration_id=integration.id
    )
    return integration.id


async def fail_flow(daemon: RunningDaemon, flow: ConnectFlow, reason: str) -> None:
    await daemon.daemon.store.finish_connect_flow(
        daemon.sandbox_id, flow.id, "failed", reason=reason
    )


def ids(found: Iterable[pb.Integration]) -> list[str]:
    return [i.integration_id for i in found]


async def sent_headers(daemon: RunningDaemon, integration_id: str) -> dict[str, str]:
    """The headers the daemon stored (sealed) to send the MCP server."""
    credentials = await daemon.daemon.store.read_integration_credentials(
        daemon.sandbox_id, integration_id
    )
    return dict(credentials["headers"])


# -- client ----------------------------------------------------------------


async def test_catalog_is_empty_without_configured_apps(
    daemon: RunningDaemon, client: Client
) -> None:
    """A daemon that configures no OAuth app has an empty catalog, through both clients."""
    assert await client.integrations.catalog() == []
    assert await in_thread(daemon, lambda c: c.integrations.catalog()) == []


async def test_add_list_disconnect_round_trip(daemon: RunningDaemon, client: Client) -> None:
    """An added MCP server is listed, keeps its token sealed, and disconnects into the archive."""
    added = await client.integrations.add_mcp_server(
        "docs",
        MCP_URL,
        end_user_id="u-1",
        bearer_token=TOKEN,
        headers={"X-Team": "core"},
    )
    assert added.integration_id.startswith("int_")
    assert (added.kind, added.app, added.end_user_id) == (pb.INTEGRATION_KIND_MCP, "docs", "u-1")
    assert (added.status, added.account) == (pb.INTEGRATION_STATUS_ACTIVE, MCP_URL)
    assert TOKEN not in str(added)
    assert await sent_headers(daemon, added.integration_id) == {
        "X-Team": "core",
        "Authorization": f"Bearer {TOKEN}",
    }
    assert await client.integrations.list(end_user_id="u-1") == [added]

    gone = await client.integrations.disconnect(added.integration_id)
    assert gone.status == pb.INTEGRATION_STATUS_DISCONNECTED
    assert gone.status_reason
    assert await client.integrations.list(end_user_id="u-1") == []
    archived = await client.integrations.list(end_user_id="u-1", include_disconnected=True)
    assert [i.integration_id for i in archived] == [added.integration_id]
    again = await client.integrations.disconnect(added.integration_id)
    assert again.status == pb.INTEGRATION_STATUS_DISCONNECTED


async def test_sync_client_round_trip(daemon: RunningDaemon) -> None:
    """SyncClient adds, lists and disconnects an MCP server the same way."""

    def round_trip(c: SyncClient) -> tuple[list[pb.Integration], pb.Integration, int]:
        added = c.integrations.add_mcp_server("docs", MCP_URL, bearer_token=TOKEN, timeout=10)
        listed = c.integrations.list(timeout=10)
        gone = c.integrations.disconnect(added.integration_id, timeout=10)
        return listed, added, gone.status

    listed, added, status = await in_thread(daemon, round_trip)
    assert listed == [added]
    assert added.end_user_id == ""
    assert status == pb.INTEGRATION_STATUS_DISCONNECTED


async def test_end_user_scoping(daemon: RunningDaemon, client: Client) -> None:
    """An end user's integration is theirs alone; a sandbox-wide one is everyone's."""
    shared = await client.integrations.add_mcp_server("shared", MCP_URL)
    mine = await client.integrations.add_mcp_server("mine", MCP_URL, end_user_id="u-1")
    assert ids(await client.integrations.list("u-1")) == [
        shared.integration_id,
        mine.integration_id,
    ]
    assert ids(await client.integrations.list("u-2")) == [shared.integration_id]
    assert ids(await client.integrations.list()) == [shared.integration_id, mine.integration_id]

    _, other_key = await daemon.new_sandbox("other")
    async with Client(daemon.address, other_key) as other:
        assert await other.integrations.list() == []
        with pytest.raises(NotFound):
            await other.integrations.disconnect(mine.integration_id)
    assert ids(await client.integrations.list("u-1")) == [
        shared.integration_id,
        mine.integration_id,
    ]


async def test_connect_without_a_configured_app_is_invalid_argument(
    daemon: RunningDaemon, client: Client
) -> None:
    """Connect to an app the daemon does not configure raises InvalidArgument naming the field."""
    with pytest.raises(InvalidArgument) as refused:
        await client.integrations.connect("github", end_user_id="u-1")
    assert "app" in refused.value.details
    with pytest.raises(InvalidArgument):
        await in_thread(
            daemon, lambda c: c.integrations.connect("github", end_user_id="u-1", scope="sandbox")
        )


async def test_bad_requests_are_refused_before_or_by_the_daemon(client: Client) -> None:
    """An unknown scope is a ValueError, unsent; plain http to a remote host is InvalidArgument."""
    with pytest.raises(ValueError, match="scope"):
        await client.integrations.connect("github", end_user_id="u-1", scope="everyone")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as refused:
        await client.integrations.add_mcp_server("docs", "http://example.com/mcp")
    assert "url" in refused.value.details


async def test_keys_are_required_and_checked(daemon: RunningDaemon) -> None:
    """No key raises MissingCredentials without a call; a wrong key is Unauthenticated."""
    async with Client(daemon.address) as keyless:
        with pytest.raises(MissingCredentials):
            await keyless.integrations.list()
    async with Client(daemon.address, "ilk_wrong") as wrong:
        with pytest.raises(Unauthenticated):
            await wrong.integrations.catalog()
        with pytest.raises(Unauthenticated):
            await wrong.integrations.wait_connected("flow_whatever")


async def test_watching_an_unknown_flow_is_not_found(daemon: RunningDaemon, client: Client) -> None:
    """WatchConnect on a flow that does not exist raises NotFound from both clients."""
    with pytest.raises(NotFound):
        async for _ in client.integrations.watch_connect("flow_doesnotexist"):
            pass
    with pytest.raises(NotFound):
        await client.integrations.wait_connected("flow_doesnotexist")
    with pytest.raises(NotFound):
        await in_thread(daemon, lambda c: list(c.integrations.watch_connect("flow_doesnotexist")))


async def test_watch_follows_a_flow_until_connected(daemon: RunningDaemon, client: Client) -> None:
    """watch_connect streams PENDING, then CONNECTED with the integration, then ends."""
    flow = await start_flow(daemon)
    updates = client.integrations.watch_connect(flow.id, timeout=30)
    first = await anext(updates)
    assert (first.flow_id, first.state) == (flow.id, pb.CONNECT_STATE_PENDING)
    integration_id = await complete_flow(daemon, flow)
    last = await anext(updates)
    assert last.state == pb.CONNECT_STATE_CONNECTED
    assert (last.integration.integration_id, last.integration.account) == (
        integration_id,
        "octocat",
    )
    with pytest.raises(StopAsyncIteration):
        await anext(updates)


async def test_wait_connected_returns_the_integration(
    daemon: RunningDaemon, client: Client
) -> None:
    """wait_connected returns the new integration, while pending or after the flow ended."""
    flow = await start_flow(daemon)
    waiting = asyncio.create_task(client.integrations.wait_connected(flow.id, timeout=30))
    integration_id = await complete_flow(daemon, flow)
    assert (await waiting).integration_id == integration_id
    again = await in_thread(daemon, lambda c: c.integrations.wait_connected(flow.id, timeout=30))
    assert again.integration_id == integration_id


async def test_wait_connected_raises_connect_failed(daemon: RunningDaemon, client: Client) -> None:
    """A failed or expired flow raises ConnectFailed with its state and the router's reason."""
    failed = await start_flow(daemon)
    await fail_flow(daemon, failed, "the provider answered access_denied")
    with pytest.raises(ConnectFailed) as raised:
        await client.integrations.wait_connected(failed.id)
    assert (raised.value.flow_id, raised.value.state) == (failed.id, "failed")
    assert raised.value.reason == "the provider answered access_denied"

    expired = await start_flow(daemon, expires_in=-1)
    with pytest.raises(ConnectFailed) as raised:
        await in_thread(daemon, lambda c: c.integrations.wait_connected(expired.id))
    assert raised.value.state == "expired"
    assert raised.value.reason


async def test_wait_connected_timeout_leaves_the_flow_open(
    daemon: RunningDaemon, client: Client
) -> None:
    """A timeout while the user has not finished raises DeadlineExceeded; the flow stays pending."""
    flow = await start_flow(daemon)
    with pytest.raises(DeadlineExceeded):
        await client.integrations.wait_connected(flow.id, timeout=0.3)
    assert (await daemon.daemon.store.get_connect_flow(daemon.sandbox_id, flow.id)).status == (
        "pending"
    )


def readme_example() -> dict[str, Any]:
    """The namespace of the README's integrations example (its one ```py block)."""
    (code,) = re.findall(r"```py\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


async def test_readme_example_adds_an_mcp_server(
    daemon: RunningDaemon, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's add_docs_server runs as written and stores the token it was given."""
    await readme_example()["add_docs_server"](client, "u-1", TOKEN)
    assert capsys.readouterr().out == "['docs']\n"
    (docs,) = await client.integrations.list("u-1")
    assert (await sent_headers(daemon, docs.integration_id))["Authorization"] == f"Bearer {TOKEN}"


# -- command line ------------------------------------------------------------


async def test_cli_missing_key_is_a_usage_error(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """`interlock integrations list` without an API key exits 2 naming INTERLOCK_API_KEY."""
    assert await amain(["--address", daemon.address, "integrations", "list"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "INTERLOCK_API_KEY" in err


async def test_cli_catalog(cli: CLI) -> None:
    """`integrations catalog` says nothing can be connected; with --json it prints nothing."""
    code, out, err = await cli("integrations", "catalog")
    assert (code, out) == (0, "")
    assert "no apps can be connected" in err
    assert await cli("integrations", "catalog", "--json") == (0, "", "")


async def test_cli_add_list_disconnect(cli: CLI) -> None:
    """add-mcp, list and disconnect print one line or a table, and JSON with --json."""
    code, out, err = await cli(
        "integrations", "add-mcp", "docs", MCP_URL, "--end-user", "u-1", "--header", "X-Team=core"
    )
    assert code == 0, err
    integration_id = out.split("(")[-1].rstrip(")\n")
    assert out == f"added MCP server docs at {MCP_URL} for end user u-1 ({integration_id})\n"

    code, out, err = await cli("integrations", "list", "--end-user", "u-1")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == [
        "ID", "APP", "KIND", "END", "USER", "STATUS", "CREATED", "LAST", "USED", "ACCOUNT"
    ]  # fmt: skip
    cells = row.split()
    assert cells[:5] == [integration_id, "docs", "mcp", "u-1", "active"]
    assert cells[-2:] == ["-", MCP_URL]

    code, out, err = await cli("integrations", "list", "--json")
    assert code == 0, err
    (listed,) = [json.loads(line) for line in out.splitlines()]
    assert listed["integration_id"] == integration_id
    assert listed["kind"] == "INTEGRATION_KIND_MCP"

    code, out, err = await cli("integrations", "disconnect", integration_id)
    assert (code, out) == (
        0,
        f"disconnected docs at {MCP_URL} for end user u-1 ({integration_id})\n",
    )
    code, out, err = await cli("integrations", "list", "--end-user", "u-1")
    assert (code, out, err) == (0, "", "no integrations for end user u-1\n")
    code, out, err = await cli("integrations", "list", "--all")
    assert code == 0, err
    assert "disconnected (disconnected by request)" in out
    code, out, err = await cli("integrations", "disconnect", integration_id, "--json")
    assert json.loads(out)["status"] == "INTEGRATION_STATUS_DISCONNECTED"


async def test_cli_end_user_scoping(cli: CLI) -> None:
    """`list --end-user` shows that end user's integrations and the sandbox-wide ones only."""
    assert (await cli("integrations", "add-mcp", "shared", MCP_URL))[0] == 0
    assert (await cli("integrations", "add-mcp", "mine", MCP_URL, "--end-user", "u-1"))[0] == 0

    async def apps(*argv: str) -> list[str]:
        code, out, err = await cli("integrations", "list", "--json", *argv)
        assert code == 0, err
        return [json.loads(line)["app"] for line in out.splitlines()]

    assert await apps("--end-user", "u-1") == ["shared", "mine"]
    assert await apps("--end-user", "u-2") == ["shared"]
    assert await apps() == ["shared", "mine"]


async def test_cli_connect_without_a_configured_app(cli: CLI) -> None:
    """`connect github` on a daemon without GitHub exits 1 with one INVALID_ARGUMENT line."""
    code, out, err = await cli("integrations", "connect", "github", "--end-user", "u-1")
    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1
    assert err.startswith("error: INVALID_ARGUMENT: app:")


async def test_cli_watch_unknown_flow(cli: CLI) -> None:
    """`watch` on a flow that does not exist exits 1 with one NOT_FOUND line."""
    code, out, err = await cli("integrations", "watch", "flow_doesnotexist")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1].startswith("error: NOT_FOUND:")


async def test_cli_watch_prints_the_connection(daemon: RunningDaemon, cli: CLI) -> None:
    """`watch` prints the connected integration; --json prints every update as it comes."""
    flow = await start_flow(daemon)
    integration_id = await complete_flow(daemon, flow)
    code, out, err = await cli("integrations", "watch", flow.id)
    assert code == 0, err
    assert out == f"connected github as octocat for end user u-1 ({integration_id})\n"
    code, out, err = await cli("integrations", "watch", flow.id, "--json")
    assert (code, err) == (0, "")
    (update,) = [json.loads(line) for line in out.splitlines()]
    assert update["state"] == "CONNECT_STATE_CONNECTED"
    assert update["integration"]["integration_id"] == integration_id


async def test_cli_watch_failed_and_expired_flows_exit_1(daemon: RunningDaemon, cli: CLI) -> None:
    """A flow that failed or expired exits 1 with one line giving the reason."""
    failed = await start_flow(daemon)
    await fail_flow(daemon, failed, "the provider answered access_denied")
    code, out, err = await cli("integrations", "watch", failed.id)
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        f"error: connect flow {failed.id} failed: the provider answered access_denied"
    )
    expired = await start_flow(daemon, expires_in=-1)
    code, out, err = await cli("integrations", "watch", expired.id, "--json")
    assert code == 1
    assert json.loads(out)["state"] == "CONNECT_STATE_EXPIRED"
    assert err.startswith(f"error: connect flow {expired.id} expired: ")
    assert len(err.splitlines()) == 1


async def test_cli_watch_timeout(daemon: RunningDaemon, cli: CLI) -> None:
    """`watch --timeout` on a pending flow stops waiting, says the flow stays open, exits 1."""
    flow = await start_flow(daemon)
    code, out, err = await cli("integrations", "watch", flow.id, "--timeout", "0.3")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1].startswith(
        "error: stopped waiting after 0.3 s; the flow stays open"
    )


async def test_cli_add_mcp_reads_secrets_without_echoing_them(
    daemon: RunningDaemon, cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """add-mcp takes the token from stdin or a variable, sends it, and never prints it."""
    monkeypatch.setattr("sys.stdin", io.StringIO(TOKEN + "\n"))
    code, out, err = await cli("integrations", "add-mcp", "docs", MCP_URL, "--bearer-token-stdin")
    assert code == 0, err
    assert TOKEN not in out + err
    integration_id = out.split("(")[-1].rstrip(")\n")
    assert (await sent_headers(daemon, integration_id))["Authorization"] == f"Bearer {TOKEN}"

    monkeypatch.setenv("DOCS_TOKEN", TOKEN + "-2")
    monkeypatch.setenv("DOCS_KEY", TOKEN + "-3")
    code, out, err = await cli(
        "integrations", "add-mcp", "wiki", MCP_URL, "--json",
        "--bearer-token-env", "DOCS_TOKEN", "--header-env", "X-Api-Key=DOCS_KEY",
    )  # fmt: skip
    assert code == 0, err
    assert TOKEN not in out + err
    assert await sent_headers(daemon, json.loads(out)["integration_id"]) == {
        "Authorization": f"Bearer {TOKEN}-2",
        "X-Api-Key": f"{TOKEN}-3",
    }

    # Refused by the daemon (plain http to a remote host): the error does not echo it either.
    monkeypatch.setattr("sys.stdin", io.StringIO(TOKEN))
    code, out, err = await cli(
        "integrations", "add-mcp", "docs", "http://example.com/mcp", "--bearer-token-stdin"
    )
    assert code == 1
    assert TOKEN not in out + err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bearer-token", TOKEN], "unrecognized arguments"),
        (["--bearer-token-env", "NOT_SET_ANYWHERE"], "NOT_SET_ANYWHERE is not set"),
        (["--bearer-token-stdin"], "empty token"),
        (["--header", "X-A=1", "--header-env", "X-A=HOME"], "X-A is given twice"),
    ],
)
async def test_cli_add_mcp_secret_usage_errors(
    cli: CLI, monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    """No flag takes a token as an argument; a missing variable or empty stdin exits 2."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = await cli("integrations", "add-mcp", "docs", MCP_URL, *argv)
    assert (code, out) == (2, "")
    assert message in err


# -- connecting GitHub end to end ------------------------------------------------

PUBLIC_URL = "https://router.example.test"  # the daemon's HTTP side, behind its TLS proxy
CALLBACK = PUBLIC_URL + "/v1/integrations/callback"


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(redirect_uris=[CALLBACK]) as fake:
        yield fake


@pytest.fixture
async def github_daemon(start_daemon: DaemonFactory, github: FakeGitHub) -> RunningDaemon:
    """A daemon configured with the fake's GitHub app and a public URL for the callback."""
    return await start_daemon(
        integrations={
            "public_url": PUBLIC_URL,
            "github": {
                "client_id": DEFAULT_CLIENT_ID,
                "client_secret": DEFAULT_CLIENT_SECRET,
                "web_base_url": github.base_url,
                "api_base_url": github.base_url,
            },
        }
    )


async def follow_redirect(daemon: RunningDaemon, location: str) -> httpx.Response:
    """The browser arriving at the callback GitHub redirected it to (the proxy's upstream)."""
    assert location.startswith(CALLBACK + "?")
    query = urlsplit(location).query
    async with httpx.AsyncClient(trust_env=False) as browser:
        return await browser.get(
            f"http://127.0.0.1:{daemon.daemon.http_port}/v1/integrations/callback?{query}"
        )


def connect_argv(daemon: RunningDaemon, *options: str) -> list[str]:
    """`interlock integrations connect github <options>` against ``daemon``."""
    connection = ["--address", daemon.address, "--api-key", daemon.api_key]
    return [*connection, "integrations", "connect", "github", *options]


class Printed:
    """What the code under test printed on stdout so far (the daemon logs there too)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self._seen: list[str] = []

    def line(self, prefix: str) -> Callable[[], Awaitable[str]]:
        """A probe for eventually(): the first printed line starting with ``prefix``."""

        async def probe() -> str:
            self._seen.append(self._capsys.readouterr().out)
            found = [x for x in "".join(self._seen).splitlines() if x.startswith(prefix)]
            assert found, f"nothing starting with {prefix!r} printed yet"
            return found[0]

        return probe


async def test_catalog_lists_a_configured_github(github_daemon: RunningDaemon) -> None:
    """With GitHub configured and a public URL, the catalog offers it with its tools."""
    async with Client(github_daemon.address, github_daemon.api_key) as c:
        (entry,) = await c.integrations.catalog()
    assert (entry.app, entry.kind, entry.available) == ("github", pb.INTEGRATION_KIND_OAUTH, True)
    side_effecting = {t.name for t in entry.tools if t.side_effecting}
    assert side_effecting == {"github__create_issue", "github__comment_issue"}


async def test_cli_connects_github(
    github_daemon: RunningDaemon, github: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    """`connect github` prints the URL, and once the user approves at GitHub prints connected."""
    connecting = asyncio.create_task(
        amain(connect_argv(github_daemon, "--end-user", "u-1", "--timeout", "30"))
    )
    printed = Printed(capsys)
    url = await eventually(printed.line(github.base_url))
    assert url.startswith(f"{github.base_url}/login/oauth/authorize?")
    page = await follow_redirect(github_daemon, await github.approve(url))
    assert page.status_code == 200
    assert await connecting == 0
    connected_line = await printed.line("connected ")()
    assert re.fullmatch(r"connected github as octocat for end user u-1 \(int_\w+\)", connected_line)
    async with Client(github_daemon.address, github_daemon.api_key) as c:
        (connected,) = await c.integrations.list("u-1")
    assert (connected.app, connected.account) == ("github", "octocat")


async def test_cli_connect_declined_exits_1(
    github_daemon: RunningDaemon, github: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user who declines at GitHub makes `connect` exit 1 with the reason on one line."""
    connecting = asyncio.create_task(
        amain(connect_argv(github_daemon, "--end-user", "u-1", "--sandbox-wide"))
    )
    url = await eventually(Printed(capsys).line(github.base_url))
    page = await follow_redirect(github_daemon, await github.deny(url))
    assert page.status_code == 400
    assert await connecting == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: connecting github failed: ")
    assert "access_denied" in err.splitlines()[-1]


async def test_readme_example_connects_github(
    github_daemon: RunningDaemon, github: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's connect_github prints the URL, then the account once the user approves."""
    async with Client(github_daemon.address, github_daemon.api_key) as c:
        connecting = asyncio.create_task(readme_example()["connect_github"](c, "u-1"))
        printed = Printed(capsys)
        url = (await eventually(printed.line("Open "))).removeprefix("Open ")
        await follow_redirect(github_daemon, await github.approve(url))
        await connecting
    assert await printed.line("connected")() == "connected octocat"

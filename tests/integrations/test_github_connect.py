"""GitHub connected once through the daemon's OAuth flow, then used from runs on any
provider: real daemon, real gRPC, the browser's redirect played against the GitHub fake
and the daemon's HTTP callback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from interlock.v1 import conversations_pb2 as cpb
from interlock.v1 import integrations_pb2 as ipb
from interlock.v1 import integrations_pb2_grpc
from tests.conftest import DaemonFactory, RunningDaemon
from tests.fakes.github import FakeGitHub
from tests.fakes.openai import FakeOpenAI, Reply


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub() as fake:
        repo = fake.add_repo("octocat/hello-world")
        fake.add_issue(repo, "Printer on fire", body="Smoke everywhere.")
        yield fake


def providers(fake_a: FakeOpenAI, fake_b: FakeOpenAI) -> dict[str, Any]:
    return {
        "fake": {"kind": "openai", "base_url": fake_a.base_url, "default_model": "fake-model"},
        "fake_b": {"kind": "openai", "base_url": fake_b.base_url, "default_model": "fake-model-b"},
    }


@pytest.fixture
async def daemon(
    start_daemon: DaemonFactory, github: FakeGitHub, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> RunningDaemon:
    # The public URL must be known before start: find a free port for the HTTP side.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    public = f"http://127.0.0.1:{port}"
    github.register_redirect_uri(f"{public}/v1/integrations/callback")
    return await start_daemon(
        http_listen=f"127.0.0.1:{port}",
        providers=providers(fake_a, fake_b),
        integrations={
            "public_url": public,
            "connect_flow_seconds": 5,
            "github": {
                "client_id": github.client_id,
                "client_secret": github.client_secret,
                "web_base_url": github.base_url,
                "api_base_url": github.base_url,
            },
        },
    )


def stub(daemon: RunningDaemon) -> integrations_pb2_grpc.IntegrationsStub:
    return integrations_pb2_grpc.IntegrationsStub(daemon.channel)


async def follow(url: str) -> httpx.Response:
    """The user's browser landing on the daemon's callback."""
    async with httpx.AsyncClient() as client:
        return await client.get(url, timeout=10)


async def connect(daemon: RunningDaemon, github: FakeGitHub, end_user: str = "u-1") -> str:
    """Connect GitHub for ``end_user`` the whole way; return the integration id."""
    started = await stub(daemon).Connect(
        ipb.ConnectRequest(app="github", end_user_id=end_user), metadata=daemon.auth()
    )
    watch = stub(daemon).WatchConnect(
        ipb.WatchConnectRequest(flow_id=started.flow_id), metadata=daemon.auth()
    )
    first = await anext(aiter(watch))
    assert first.state == ipb.CONNECT_STATE_PENDING
    page = await follow(await github.approve(started.authorize_url))
    assert page.status_code == 200
    assert "connected" in page.text
    last = [update async for update in watch][-1]
    assert last.state == ipb.CONNECT_STATE_CONNECTED
    return last.integration.integration_id


def tool_names(fake: FakeOpenAI, request: int = -1) -> list[str]:
    return [t["function"]["name"] for t in fake.requests[request].body.get("tools", [])]


async def test_connect_flow_through_the_callback(daemon: RunningDaemon, github: FakeGitHub) -> None:
    """Connect → authorize URL with state and PKCE S256 → callback → the integration is
    stored for the end user, with the account's login and no token in sight."""
    started = await stub(daemon).Connect(
        ipb.ConnectRequest(app="github", end_user_id="u-1"), metadata=daemon.auth()
    )
    query = httpx.URL(started.authorize_url).params
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"].endswith("/v1/integrations/callback")
    assert len(query["state"]) >= 32
    integration_id = await connect(daemon, github)
    listed = await stub(daemon).ListIntegrations(
        ipb.ListIntegrationsRequest(end_user_id="u-1"), metadata=daemon.auth()
    )
    (integration,) = listed.integrations
    assert integration.integration_id == integration_id
    assert (integration.app, integration.account) == ("github", "octocat")
    assert integration.status == ipb.INTEGRATION_STATUS_ACTIVE
    assert "ghu_" not in str(listed)
    (exchange,) = github.code_exchanges
    assert len(exchange.params["code_verifier"]) >= 43


async def test_callback_with_an_unknown_state_connects_nothing(
    daemon: RunningDaemon, github: FakeGitHub
) -> None:
    """A callback whose state no flow started (forged, or mixed up) is refused."""
    started = await stub(daemon).Connect(
        ipb.ConnectRequest(app="github", end_user_id="u-1"), metadata=daemon.auth()
    )
    callback = httpx.URL(await github.approve(started.authorize_url))
    forged = callback.copy_merge_params({"state": "not-the-state"})
    page = await follow(str(forged))
    assert page.status_code == 400
    assert github.code_exchanges == []
    listed = await stub(daemon).ListIntegrations(
        ipb.ListIntegrationsRequest(), metadata=daemon.auth()
    )
    assert list(listed.integrations) == []


async def test_bad_code_fails_the_flow_with_a_reason(
    daemon: RunningDaemon, github: FakeGitHub
) -> None:
    """A code GitHub refuses ends the flow FAILED, saying why."""
    started = await stub(daemon).Connect(
        ipb.ConnectRequest(app="github", end_user_id="u-1"), metadata=daemon.auth()
    )
    callback = httpx.URL(await github.approve(started.authorize_url))
    page = await follow(str(callback.copy_merge_params({"code": "bogus"})))
    assert page.status_code == 400
    updates = [
        u
        async for u in stub(daemon).WatchConnect(
            ipb.WatchConnectRequest(flow_id=started.flow_id), metadata=daemon.auth()
        )
    ]
    assert updates[-1].state == ipb.CONNECT_STATE_FAILED
    assert "bad_verification_code" in updates[-1].reason


async def test_denied_and_expired_flows(daemon: RunningDaemon, github: FakeGitHub) -> None:
    """A user who declines fails the flow; one who never comes back expires it."""
    denied = await stub(daemon).Connect(
        ipb.ConnectRequest(app="github", end_user_id="u-1"), metadata=daemon.auth()
    )
    await follow(await github.deny(denied.authorize_url))
    late = await stub(daemon).Connect(
        ipb.ConnectRequest(app="github", end_user_id="u-1"), metadata=daemon.auth()
    )
    states = {}
    for flow_id in (denied.flow_id, late.flow_id):
        updates = [
            u
            async for u in stub(daemon).WatchConnect(
                ipb.WatchConnectRequest(flow_id=flow_id), metadata=daemon.auth(), timeout=15
            )
        ]
        states[flow_id] = updates[-1]
    assert states[denied.flow_id].state == ipb.CONNECT_STATE_FAILED
    assert "access_denied" in states[denied.flow_id].reason
    assert states[late.flow_id].state == ipb.CONNECT_STATE_EXPIRED
    page = await follow(await github.approve(late.authorize_url))
    assert page.status_code == 400


async def test_github_tools_in_runs_of_two_providers(
    daemon: RunningDaemon, github: FakeGitHub, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """Connected once, GitHub's tools are offered on two providers and executed by the
    router with the stored token; another end user does not get them."""
    integration_id = await connect(daemon, github)
    fake_a.enqueue(
        Reply().tool_call("github__search_issues", '{"query": "printer"}'),
        Reply().text("There is a fire."),
    )
    events = await daemon.run("any printer issues?", provider="fake")
    assert "github__create_issue" in tool_names(fake_a, 0)
    result = next(e.tool_result for e in events if e.HasField("tool_result"))
    assert not result.error
    assert "Printer on fire" in result.result_json
    window = await daemon.window(events[0].run_started.session_id)
    (stored,) = [e for e in window if e.kind == cpb.ENTRY_KIND_TOOL_RESULT]
    assert stored.source_id == integration_id

    fake_b.enqueue(Reply().text("Yes."))
    await daemon.run("and?", provider="fake_b", session_id=events[0].run_started.session_id)
    assert "github__search_issues" in tool_names(fake_b)
    await daemon.run("hi", provider="fake", end_user_id="u-2")
    assert not [n for n in tool_names(fake_a) if n.startswith("github__")]


async def test_side_effecting_call_resent_runs_once(
    daemon: RunningDaemon, github: FakeGitHub, fake_a: FakeOpenAI
) -> None:
    """A provider re-sending the same create_issue call id creates one issue; the second
    result says it was reused."""
    await connect(daemon, github)
    call = '{"repo": "octocat/hello-world", "title": "Replace the printer"}'
    fake_a.enqueue(
        Reply().tool_call("github__create_issue", call, call_id="call_dup"),
        Reply().tool_call("github__create_issue", call, call_id="call_dup"),
        Reply().text("Filed."),
    )
    events = await daemon.run("file it", provider="fake")
    results = [e.tool_result for e in events if e.HasField("tool_result")]
    assert [r.reused for r in results] == [False, True]
    assert results[0].result_json == results[1].result_json
    assert len(github.created_issues) == 1


async def test_revoked_grant_breaks_the_connection(
    daemon: RunningDaemon, github: FakeGitHub, fake_a: FakeOpenAI
) -> None:
    """After the user revokes access at GitHub, a tool call reports that the user must
    reconnect and the integration is marked broken (its tools leave later runs)."""
    await connect(daemon, github)
    github.revoke_authorization()
    fake_a.enqueue(Reply().tool_call("github__whoami", "{}"), Reply().text("Hm."))
    events = await daemon.run("who am I on GitHub?", provider="fake")
    result = next(e.tool_result for e in events if e.HasField("tool_result"))
    assert "reconnect" in result.error.lower() or "connect github" in result.error.lower()
    listed = await stub(daemon).ListIntegrations(
        ipb.ListIntegrationsRequest(end_user_id="u-1"), metadata=daemon.auth()
    )
    assert listed.integrations[0].status == ipb.INTEGRATION_STATUS_BROKEN
    await daemon.run("hi", provider="fake")
    assert not [n for n in tool_names(fake_a) if n.startswith("github__")]


async def test_disconnect_revokes_upstream_then_archives(
    daemon: RunningDaemon, github: FakeGitHub
) -> None:
    """Disconnect revokes the grant at GitHub before archiving the integration."""
    integration_id = await connect(daemon, github)
    response = await stub(daemon).Disconnect(
        ipb.DisconnectRequest(integration_id=integration_id), metadata=daemon.auth()
    )
    assert response.integration.status == ipb.INTEGRATION_STATUS_DISCONNECTED
    assert github.live_tokens() == []


async def test_catalog_lists_github_and_its_tools(daemon: RunningDaemon) -> None:
    """The catalog shows GitHub as available, with its side-effecting tools marked."""
    catalog = await stub(daemon).Catalog(ipb.CatalogRequest(), metadata=daemon.auth())
    (entry,) = catalog.entries
    assert (entry.app, entry.available) == ("github", True)
    effects = {t.name: t.side_effecting for t in entry.tools}
    assert effects["github__create_issue"] is True
    assert effects["github__search_issues"] is False


async def test_other_sandbox_cannot_watch_or_disconnect(
    daemon: RunningDaemon, github: FakeGitHub
) -> None:
    """Another sandbox's key reaches neither the flow nor the integration."""
    started = await stub(daemon).Connect(
        ipb.ConnectRequest(app="github", end_user_id="u-1"), metadata=daemon.auth()
    )
    _, other_key = await daemon.new_sandbox("other")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stub(daemon).WatchConnect(
            ipb.WatchConnectRequest(flow_id=started.flow_id), metadata=daemon.auth(other_key)
        ):
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    await follow(await github.approve(started.authorize_url))
    listed = await stub(daemon).ListIntegrations(
        ipb.ListIntegrationsRequest(), metadata=daemon.auth()
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub(daemon).Disconnect(
            ipb.DisconnectRequest(integration_id=listed.integrations[0].integration_id),
            metadata=daemon.auth(other_key),
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND

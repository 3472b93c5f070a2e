"""A tenant cannot make the daemon connect where the tenant could not: the SSRF targets.

From sandbox B's key, on the daemon of :mod:`tests.security.world` (default
egress policy: public addresses only): every internal target of the issue is
refused at registration naming ``url`` and nothing is stored; and a public
name that resolves to loopback (DNS rebinding, through a resolver the test
controls) never gets a connection, whatever registration said.
(tests/integrations/test_mcp_egress.py pins the policy's details.)
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from interlock.v1 import integrations_pb2 as ipb
from interlock.v1 import integrations_pb2_grpc
from tests.security.world import World, metadata, run


class TcpCounter:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts, and closes them."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0

    async def __aenter__(self) -> TcpCounter:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.close()

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


@pytest_asyncio.fixture(loop_scope="module")
async def counter() -> AsyncIterator[TcpCounter]:
    async with TcpCounter() as listening:
        yield listening


async def add(w: World, url: str, name: str, **fields: object) -> str:
    """Register an MCP server with B's key; "" when stored, else why it was refused."""
    stub = integrations_pb2_grpc.IntegrationsStub(w.channel)
    try:
        await stub.AddMcpServer(
            ipb.AddMcpServerRequest(name=name, url=url, **fields),  # type: ignore[arg-type]
            metadata=metadata(w.key_b),
        )
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return ""


@pytest.mark.asyncio(loop_scope="module")
async def test_internal_targets_are_refused_at_registration(
    world: World, counter: TcpCounter
) -> None:
    """Loopback, localhost, the metadata service, private, link-local and CGNAT addresses,
    the daemon's own ports and a listener on loopback, over http and https, are
    INVALID_ARGUMENT naming url for a sandbox key; none is stored or contacted."""
    w = world
    d = w.daemon
    targets = [
        f"http://127.0.0.1:{counter.port}/mcp",
        f"https://127.0.0.1:{counter.port}/../../etc/passwd",
        f"http://localhost:{counter.port}/",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/mcp",
        "https://192.168.1.1/mcp",
        "https://100.64.0.1/mcp",
        "https://[::1]/mcp",
        "https://[fd00::1]/mcp",
        "https://[::ffff:127.0.0.1]/mcp",
        "https://0.0.0.0/mcp",
        f"http://127.0.0.1:{d.port}/",
        f"http://127.0.0.1:{d.http_port}/mcp/",
        "https://[::1/",
        "https://mcp.example.com:99999/mcp",
        "https://mcp.example.com:abc/mcp",
    ]
    stub = integrations_pb2_grpc.IntegrationsStub(w.channel)
    for i, url in enumerate(targets):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.AddMcpServer(
                ipb.AddMcpServerRequest(name=f"t{i}", url=url), metadata=metadata(w.key_b)
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, url
        assert (refused.value.details() or "").startswith("url"), (url, refused.value.details())
    for header in ("Host", "Content-Length"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.AddMcpServer(
                ipb.AddMcpServerRequest(
                    name="hdr", url="https://mcp.example.com/mcp", headers={header: "x"}
                ),
                metadata=metadata(w.key_b),
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, header
    listed = await stub.ListIntegrations(
        ipb.ListIntegrationsRequest(include_disconnected=True), metadata=metadata(w.key_b)
    )
    assert [i.app for i in listed.integrations if i.kind == ipb.INTEGRATION_KIND_MCP] == []
    assert counter.accepted == 0


@pytest.mark.asyncio(loop_scope="module")
async def test_a_name_rebound_to_loopback_is_never_connected(
    world: World, counter: TcpCounter
) -> None:
    """A public name the (test's) DNS answers with a public address, then with 127.0.0.1:
    the daemon never connects to loopback, the run finishes, and the integration's status
    says nothing of what is listening there."""
    w = world
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[ipaddress.IPv4Address]:
        asked.append(host)
        answer = "93.184.216.34" if len(asked) == 1 else "127.0.0.1"
        return [ipaddress.IPv4Address(answer)]

    original = w.daemon.egress.resolver
    w.daemon.egress.resolver = rebinding  # type: ignore[assignment]
    try:
        url = f"https://rebind.attacker.test:{counter.port}/mcp"
        refused = await add(w, url, "rebind", end_user_id="dave")
        # Registration may resolve the name (and refuse it) or leave it to connect time.
        assert refused in ("", f"INVALID_ARGUMENT: {refused.partition(': ')[2]}"), refused
        events = await run(w, w.key_b, end_user_id="dave", message="use your tools")
        assert events[-1].HasField("finish"), events[-1]
    finally:
        w.daemon.egress.resolver = original
    assert counter.accepted == 0
    listed = await integrations_pb2_grpc.IntegrationsStub(w.channel).ListIntegrations(
        ipb.ListIntegrationsRequest(end_user_id="dave"), metadata=metadata(w.key_b)
    )
    for integration in listed.integrations:
        assert "HTTP" not in integration.status_reason
        assert str(counter.port) not in integration.status_reason

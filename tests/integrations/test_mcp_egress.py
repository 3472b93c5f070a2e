"""Where MCP servers may be: refused at registration, checked again after DNS at connect."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.v1 import integrations_pb2 as ipb
from interlock.v1 import integrations_pb2_grpc
from interlockd.config import ConfigError, load_settings
from interlockd.integrations.egress import EgressPolicy, UrlRefused, refused_class
from interlockd.integrations.egress.policy import IPAddress
from interlockd.integrations.mcp.source import McpSource, McpUnavailable
from interlockd.tools.base import ToolError
from tests.conftest import DaemonFactory, RunningDaemon
from tests.fakes.mcp_server import FakeMcpServer
from tests.fakes.openai import FakeOpenAI
from tests.integrations.test_mcp_source import MemoryCredentials, connection

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


class Dns:
    """A resolver the test controls: each name answers its scripted addresses in turn."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self._answers = {name: [list(a) for a in seq] for name, seq in answers.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        queue = self._answers.get(host)
        if not queue:
            raise OSError(f"{host}: no such name")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return [ipaddress.ip_address(a) for a in answer]


class TcpCounter:
    """A TCP listener on 127.0.0.1 that only counts the connections it accepts."""

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


def source(url: str, policy: EgressPolicy, creds: dict[str, Any] | None = None) -> McpSource:
    return McpSource(
        connection("docs", transport="http", url=url),
        MemoryCredentials(creds or {}),
        allow_stdio=False,
        egress=policy,
        timeout=10,
    )


# ---- address classes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a00:1", "private"),
        ("2002:a9fe:a9fe::", "link-local"),
    ],
)
def test_non_public_addresses_are_classified(address: str, kind: str) -> None:
    """Every non-public class is named, IPv4 carried in IPv6 judged by its IPv4 address."""
    assert refused_class(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1", "64:ff9b::808:808"])
def test_public_addresses_are_not_refused(address: str) -> None:
    """Public addresses (and NAT64 forms of them, as DNS64 hands out) pass."""
    assert refused_class(ipaddress.ip_address(address)) is None


# ---- registration --------------------------------------------------------------------


def stub(daemon: RunningDaemon) -> integrations_pb2_grpc.IntegrationsStub:
    return integrations_pb2_grpc.IntegrationsStub(daemon.channel)


async def add(
    daemon: RunningDaemon, url: str, *, name: str = "docs", **fields: Any
) -> ipb.Integration:
    response = await stub(daemon).AddMcpServer(
        ipb.AddMcpServerRequest(name=name, url=url, **fields), metadata=daemon.auth()
    )
    return response.integration


async def refusals(daemon: RunningDaemon, urls: Sequence[str], **fields: Any) -> dict[str, str]:
    """For each URL the daemon did not refuse with INVALID_ARGUMENT: what happened instead."""
    wrong: dict[str, str] = {}
    for url in urls:
        try:
            await add(daemon, url, **fields)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.INVALID_ARGUMENT:
                wrong[url] = f"{exc.code().name}: {exc.details()}"
            elif not (exc.details() or "").startswith("url: "):
                wrong[url] = f"not naming url: {exc.details()}"
        else:
            wrong[url] = "accepted"
    return wrong


@pytest.fixture
async def public_only(start_daemon: DaemonFactory) -> RunningDaemon:
    """A daemon with the default policy: no network opened."""
    return await start_daemon(integrations={"mcp_allowed_networks": []})


async def test_registration_refuses_every_non_public_target(public_only: RunningDaemon) -> None:
    """Loopback, localhost, private, ULA, link-local, CGNAT, unspecified, multicast and mapped
    forms are INVALID_ARGUMENT naming url, over https and http alike."""
    hosts = [
        "127.0.0.1",
        "localhost",
        "api.localhost",
        "[::1]",
        "169.254.169.254",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.0.10",
        "100.64.0.1",
        "0.0.0.0",
        "[::]",
        "[fc00::1]",
        "[fe80::1]",
        "224.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:a9fe:a9fe]",
    ]
    urls = [f"{scheme}://{host}:8080/mcp" for host in hosts for scheme in ("https", "http")]
    assert await refusals(public_only, urls) == {}
    listed = await stub(public_only).ListIntegrations(
        ipb.ListIntegrationsRequest(), metadata=public_only.auth()
    )
    assert list(listed.integrations) == []


async def test_registration_accepts_public_https_only(public_only: RunningDaemon) -> None:
    """A public address or name over https is stored; plain http to one is refused."""
    await add(public_only, "https://8.8.8.8/mcp")
    await add(public_only, "https://mcp.example.com:8443/v1/mcp?team=core", name="named")
    await add(public_only, "https://[2606:4700::1]/mcp", name="six")
    assert await refusals(public_only, ["http://8.8.8.8/mcp", "http://mcp.example.com/mcp"]) == {}


async def test_registration_refuses_the_daemons_own_listeners(daemon: RunningDaemon) -> None:
    """Even with loopback opened, the daemon's gRPC and HTTP ports are refused."""
    ports = (daemon.daemon.port, daemon.daemon.http_port)
    urls = [
        f"{scheme}://{host}:{port}/mcp"
        for port in ports
        for host in ("127.0.0.1", "localhost", "0.0.0.0")
        for scheme in ("http", "https")
    ]
    assert await refusals(daemon, urls) == {}


@pytest.mark.parametrize(
    "url",
    [
        "",
        "https://[::1/",
        "https://mcp.example.com:99999/mcp",
        "https://mcp.example.com:abc/mcp",
        "https://mcp.example.com:0/mcp",
        "https://mcp.example.com:-1/mcp",
        "ftp://mcp.example.com/mcp",
        "file:///etc/passwd",
        "mcp.example.com/mcp",
        "https:///mcp",
        "https://user:pw@mcp.example.com/mcp",
        "https://mcp.example.com/mcp#frag",
        "https://mcp.example.com/mcp/../../etc/passwd",
        "https://mcp.example.com/%2e%2E/etc/passwd",
        "https://mcp.example.com/./mcp",
        "https://mcp example.com/mcp",
        "https://mcp.example.com/\nmcp",
        "https://mcp.example.com\\@8.8.8.8/",
        "https://bücher.example/mcp",
        "https://-bad-.example.com/",
        "https://127.1/",
        "https://2130706433/",
        "https://0x7f.0.0.1/",
        "https://[fe80::1%25eth0]/",
        "https://mcp.example.com/" + "a" * 2048,
    ],
)
async def test_malformed_urls_are_invalid_argument_naming_url(
    daemon: RunningDaemon, url: str
) -> None:
    """Bad scheme, host, port, userinfo, fragment, climbing paths, odd IPv4 spellings, length:
    every one INVALID_ARGUMENT naming url, never INTERNAL or stored."""
    assert await refusals(daemon, [url]) == {}


@pytest.mark.parametrize(
    "header",
    [
        "Host",
        "host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Upgrade",
        "TE",
        "Content-Type",
        "Accept",
        "Mcp-Session-Id",
        "Mcp-Protocol-Version",
        "Proxy-Authorization",
    ],
)
async def test_transport_headers_are_refused_at_registration(
    daemon: RunningDaemon, header: str
) -> None:
    """A header the transport sets is INVALID_ARGUMENT naming headers, not a failure at run time."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await add(daemon, "https://mcp.example.com/mcp", headers={header: "x"})
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("headers: ")
    assert header in (refused.value.details() or "")


@pytest.mark.parametrize(
    ("headers", "fields"),
    [
        ({"Authorization": "Bearer a"}, {"bearer_token": "b"}),
        ({"X-Key": "a\x00b"}, {}),
        ({"X-Key": "é"}, {}),
    ],
)
async def test_conflicting_or_unprintable_headers_are_refused(
    daemon: RunningDaemon, headers: dict[str, str], fields: dict[str, str]
) -> None:
    """Authorization beside bearer_token, or a value outside printable ASCII: INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await add(daemon, "https://mcp.example.com/mcp", headers=headers, **fields)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("headers: ")


async def test_allowed_networks_open_only_their_range(start_daemon: DaemonFactory) -> None:
    """mcp_allowed_networks opens its ranges (plain http included) and nothing beside them."""
    daemon = await start_daemon(integrations={"mcp_allowed_networks": ["10.1.0.0/16"]})
    await add(daemon, "https://10.1.2.3/mcp")
    await add(daemon, "http://10.1.200.7:8080/mcp", name="plain")
    assert (
        await refusals(
            daemon,
            ["https://10.2.0.1/mcp", "http://10.2.0.1/mcp", "https://127.0.0.1/mcp"],
        )
        == {}
    )


async def test_plain_http_names_must_resolve_into_an_allowed_network(
    start_daemon: DaemonFactory,
) -> None:
    """Registering plain http by name resolves it: into an allowed range it is stored, a public
    or unknown name is refused naming url."""
    daemon = await start_daemon(integrations={"mcp_allowed_networks": ["10.1.0.0/16"]})
    daemon.daemon.egress.resolver = Dns(
        {"tools.corp.test": [["10.1.0.9"]], "public.example.test": [["8.8.8.8"]]}
    )
    await add(daemon, "http://tools.corp.test:8080/mcp")
    assert (
        await refusals(daemon, ["http://public.example.test/mcp", "http://nowhere.test/mcp"]) == {}
    )


def test_allowed_networks_come_from_the_environment_as_json() -> None:
    """INTERLOCK_INTEGRATIONS__MCP_ALLOWED_NETWORKS is a JSON list of CIDRs; anything else is a
    ConfigError naming the key."""
    env = {"INTERLOCK_INTEGRATIONS__MCP_ALLOWED_NETWORKS": '["10.1.0.0/16", "fd00::/8"]'}
    loaded = load_settings(env=env)
    assert loaded.integrations.mcp_allowed_networks == [
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    ]
    for bad in ("10.1.0.0/16", '["10.1.0.1/16"]', '["not a network"]'):
        env = {"INTERLOCK_INTEGRATIONS__MCP_ALLOWED_NETWORKS": bad}
        with pytest.raises(ConfigError, match=r"integrations\.mcp_allowed_networks"):
            load_settings(env=env)


@settings(max_examples=300, deadline=None)
@given(
    url=st.one_of(
        st.text(max_size=300),
        st.builds(
            "{}://{}{}{}".format,
            st.sampled_from(["https", "http", "HTTPS", "ftp", ""]),
            st.text(max_size=40),
            st.sampled_from(["", ":443", ":0", ":99999", ":abc", ":-1", ":"]),
            st.text(max_size=40),
        ),
    )
)
def test_any_url_is_accepted_or_refused_never_an_error(url: str) -> None:
    """Whatever the text, checking it gives a Target or UrlRefused; an accepted one is http(s)
    with a host and a port in range."""
    try:
        target = EgressPolicy(LOOPBACK).check_url(url)
    except UrlRefused:
        return
    assert target.scheme in ("http", "https")
    assert target.host
    assert 1 <= target.port <= 65535


# ---- at connect time -----------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeMcpServer]:
    async with FakeMcpServer() as server:
        server.tool("lookup", text="found")
        yield server


async def test_a_name_rebound_to_loopback_is_refused_at_connect(fake: FakeMcpServer) -> None:
    """DNS rebinding: a name that resolves to 127.0.0.1 when connecting is refused; the server
    behind it sees no request."""
    dns = Dns({"mcp.rebind.test": [["127.0.0.1"]]})
    policy = EgressPolicy([ipaddress.ip_network("10.1.0.0/16")], resolver=dns)
    with pytest.raises(McpUnavailable, match="could not be connected to"):
        await source(f"http://mcp.rebind.test:{fake.port}/mcp", policy).tools()
    assert dns.asked == ["mcp.rebind.test"]
    assert fake.requests == []


async def test_https_to_a_rebound_name_opens_no_connection() -> None:
    """Over https too, the refused address is never connected to (not even for a handshake)."""
    async with TcpCounter() as counter:
        dns = Dns({"mcp.rebind.test": [["127.0.0.1"]]})
        policy = EgressPolicy(resolver=dns)
        with pytest.raises(McpUnavailable):
            await source(f"https://mcp.rebind.test:{counter.port}/mcp", policy).tools()
        assert dns.asked == ["mcp.rebind.test"]
        assert counter.accepted == 0


async def test_registration_then_rebinding_through_the_daemon(
    start_daemon: DaemonFactory, fake: FakeMcpServer, fake_a: FakeOpenAI
) -> None:
    """A name that resolved into the allowed range at registration and to loopback at run time
    loses its tools; the run goes on and the server is never reached."""
    daemon = await start_daemon(integrations={"mcp_allowed_networks": ["10.1.0.0/16"]})
    dns = Dns({"docs.corp.test": [["10.1.0.9"], ["127.0.0.1"]]})
    daemon.daemon.egress.resolver = dns
    await add(daemon, f"http://docs.corp.test:{fake.port}/mcp", end_user_id="u-1")
    events = await daemon.run("hi")
    assert events[-1].HasField("finish")
    offered = [t["function"]["name"] for t in fake_a.requests[-1].body.get("tools", [])]
    assert not [name for name in offered if name.startswith("mcp__docs")]
    assert dns.asked == ["docs.corp.test", "docs.corp.test"]
    assert fake.requests == []


async def test_an_allowed_name_connects_with_its_own_host_header() -> None:
    """Connecting by checked address keeps the URL's name: the server sees Host: <name>:<port>."""
    dns = Dns({"tools.corp.test": [["127.0.0.1"]]})
    policy = EgressPolicy(LOOPBACK, resolver=dns)
    async with FakeMcpServer(hosts=["tools.corp.test:*"]) as fake:
        fake.tool("lookup", text="found")
        tools = await source(f"http://tools.corp.test:{fake.port}/mcp", policy).tools()
    assert [t.spec.name for t in tools] == ["mcp__docs__lookup"]
    assert fake.requests
    assert {r["host"] for r in fake.requests} == {f"tools.corp.test:{fake.port}"}


async def test_only_allowed_addresses_of_a_name_are_used() -> None:
    """A name with refused and allowed records connects to an allowed one only."""
    dns = Dns({"mixed.corp.test": [["169.254.169.254", "127.0.0.1"]]})
    policy = EgressPolicy(LOOPBACK, resolver=dns)
    async with FakeMcpServer(hosts=["mixed.corp.test:*"]) as fake:
        await source(f"http://mixed.corp.test:{fake.port}/mcp", policy).tools()
    assert fake.listings == 1


async def test_the_daemons_own_port_is_refused_at_connect(fake: FakeMcpServer) -> None:
    """A listener of the daemon is never a target, even inside an allowed range."""
    dns = Dns({"self.corp.test": [["127.0.0.1"]]})
    policy = EgressPolicy(LOOPBACK, resolver=dns)
    policy.add_listener("0.0.0.0", fake.port)  # as if the daemon listened there
    for url in (f"http://self.corp.test:{fake.port}/mcp", f"http://127.0.0.1:{fake.port}/mcp"):
        with pytest.raises(McpUnavailable):
            await source(url, policy).tools()
    assert fake.requests == []


async def test_a_stored_url_the_policy_refuses_is_never_called(fake: FakeMcpServer) -> None:
    """A connection stored before the policy (http://127.0.0.1) is refused before connecting."""
    with pytest.raises(McpUnavailable, match=r"config\.url"):
        await source(fake.url, EgressPolicy()).tools()
    assert fake.requests == []


async def test_why_a_connect_failed_is_not_told(fake: FakeMcpServer) -> None:
    """Refused by the policy after DNS, a name that does not resolve, a closed port: one message,
    so a tenant cannot map the network through it."""
    dns = Dns({"inside.corp.test": [["10.9.9.9"]], "local.corp.test": [["127.0.0.1"]]})
    policy = EgressPolicy(LOOPBACK, resolver=dns)
    async with TcpCounter() as closed:
        port = closed.port
    messages = set()
    for url in (
        f"https://inside.corp.test:{fake.port}/mcp",
        f"https://unknown.corp.test:{fake.port}/mcp",
        f"http://local.corp.test:{port}/mcp",
    ):
        with pytest.raises(McpUnavailable) as failed:
            await source(url, policy).tools()
        messages.add(str(failed.value))
    assert messages == {
        "the MCP server 'docs' could not be connected to; check its URL, or try again later"
    }


class GarbageServer:
    """HTTP on 127.0.0.1 answering every request 200, "application/json", with a non-JSON body."""

    BODY = b"<html>internal admin SECRET-BODY-7f3a</html>"

    async def __aenter__(self) -> GarbageServer:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(self.BODY), self.BODY)
            )
            await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(answer, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/mcp"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


async def test_a_remote_body_reaches_neither_the_error_nor_the_log() -> None:
    """A server answering garbage yields a ToolError without its body; nothing logged quotes it."""
    async with GarbageServer() as garbage:
        with structlog.testing.capture_logs() as logged, pytest.raises(ToolError) as failed:
            await source(garbage.url, EgressPolicy(LOOPBACK)).tools()
    assert str(failed.value) == "docs: the server answered something that is not MCP"
    assert "SECRET-BODY" not in repr(logged)


async def test_a_listing_error_keeps_the_servers_words_out_a_call_error_hands_them_on(
    fake: FakeMcpServer,
) -> None:
    """A JSON-RPC error to tools/list (which only the log sees) is reported by code; one to a
    call (which the model reads) keeps the server's message."""
    docs = source(fake.url, EgressPolicy(LOOPBACK))
    fake.fail_listings("SECRET-LIST-7f3a backend at 10.0.0.7 down")
    with pytest.raises(ToolError) as listing:
        await docs.tools()
    assert str(listing.value) == "docs: the server answered JSON-RPC error -32603"
    with pytest.raises(ToolError, match="no tool named gone"):
        await docs.call("gone", {})


# ---- side effects ----------------------------------------------------------------------


async def test_only_read_only_tools_are_free_of_side_effects() -> None:
    """readOnlyHint: true makes a tool free of side effects; idempotentHint alone, readOnlyHint
    false or no annotations at all leave it side-effecting."""
    async with FakeMcpServer() as server:
        server.tool("read", annotations={"readOnlyHint": True})
        server.tool("read_idempotent", annotations={"readOnlyHint": True, "idempotentHint": True})
        server.tool("idempotent", annotations={"idempotentHint": True})
        server.tool("write", annotations={"readOnlyHint": False, "destructiveHint": True})
        server.tool("unannotated")
        tools = await source(server.url, EgressPolicy(LOOPBACK)).tools()
    assert {t.spec.name: t.spec.side_effecting for t in tools} == {
        "mcp__docs__idempotent": True,
        "mcp__docs__read": False,
        "mcp__docs__read_idempotent": False,
        "mcp__docs__unannotated": True,
        "mcp__docs__write": True,
    }


# ---- https by checked address ------------------------------------------------------------


def issue_certificate(directory: Path, name: str) -> tuple[ssl.SSLContext, tuple[str, str]]:
    """A throwaway CA (as a client trust store) and a certificate for ``name`` it signed."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: x509.Name, key: Any, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egress test CA")])
    ca = build("egress test CA", ca_name, ca_key, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = build(name, ca_name, key, ca_key, False)
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    trust = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return trust, (str(cert_file), str(key_file))


async def test_https_by_checked_address_keeps_the_name_for_sni_and_the_certificate(
    tmp_path: Path,
) -> None:
    """Connecting to the checked address over https still verifies the certificate against the
    URL's name (SNI and Host are the name), and a name the certificate does not cover fails."""
    trust, files = issue_certificate(tmp_path, "tools.corp.test")
    dns = Dns({"tools.corp.test": [["127.0.0.1"]], "other.corp.test": [["127.0.0.1"]]})
    policy = EgressPolicy(LOOPBACK, resolver=dns, tls=trust)
    async with FakeMcpServer(hosts=["tools.corp.test:*"], tls=files) as fake:
        fake.tool("lookup", text="found")
        tools = await source(f"https://tools.corp.test:{fake.port}/mcp", policy).tools()
        assert [t.spec.name for t in tools] == ["mcp__docs__lookup"]
        assert {r["host"] for r in fake.requests} == {f"tools.corp.test:{fake.port}"}
        seen = len(fake.requests)
        with pytest.raises(McpUnavailable):
            await source(f"https://other.corp.test:{fake.port}/mcp", policy).tools()
        assert len(fake.requests) == seen

"""Which addresses and URLs an outbound MCP connection may use.

A tenant types an MCP server's URL and the daemon POSTs to it with the
tenant's headers: left open, that is server-side request forgery into
whatever network the daemon sits in (cloud metadata at 169.254.169.254, the
database on 10.x, the daemon's own ports). So by default only public
addresses are reachable. The operator opens named ranges
(``[integrations] mcp_allowed_networks``) for MCP servers on a private
network; plain ``http://`` is allowed only into those ranges, since on the
open internet it would carry the tenant's credentials in clear.

This module decides; it never connects. :mod:`.transport` applies the same
decision after DNS resolution, at the moment of connecting, so a name that
resolves to a refused address (DNS rebinding) is refused too. It must never
resolve names itself except through :attr:`EgressPolicy.resolver`, so there
is one resolution per connection and tests can control it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: ``await resolver(host, port)``: the addresses a name stands for (OSError when none).
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]

MAX_URL = 2048
#: The longest a registration waits for a name to resolve.
_RESOLVE_SECONDS = 5.0

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
# LDH labels plus "_" (service names in private DNS use it); at most 63 each.
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# Path segments that climb ("..", ".", in any percent-encoded spelling).
_DOT_SEGMENT = re.compile(r"(?:\.|%2e){1,2}", re.IGNORECASE)


class UrlRefused(ValueError):
    """The URL is malformed or points where this daemon may not connect; says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: what to connect to and how."""

    url: str
    scheme: str  # "https" or "http"
    host: str  # a name (lower-case, no trailing dot) or an IP literal without brackets
    port: int


def refused_class(ip: IPAddress) -> str | None:
    """The kind of non-public address ``ip`` is ("loopback", "private", ...), None if public.

    IPv6 forms that carry an IPv4 address (mapped ``::ffff:a.b.c.d``, NAT64,
    6to4, the deprecated compatible form) are judged by that IPv4 address:
    connecting to them reaches it.
    """
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return refused_class(embedded)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip in _CGNAT:
        return "shared (CGNAT)"
    if ip.is_private:  # RFC 1918, ULA fc00::/7, documentation and benchmarking ranges, ...
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d (deprecated IPv4-compatible)
        return ipaddress.IPv4Address(int(ip))
    return None


def _plain(ip: IPAddress) -> IPAddress:
    """``ip`` with an IPv4-mapped IPv6 form unwrapped (so it compares with listeners)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The addresses the operating system resolves ``host`` to (TCP), in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


class EgressPolicy:
    """Where MCP connections may go: public addresses, plus the operator's allowed networks,
    never the daemon's own listeners.

    ``resolver`` turns names into addresses at connect time (the system's by
    default; a test replaces it to play DNS rebinding). ``tls`` is the trust
    store of outbound https (default: the CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR).
    """

    def __init__(
        self,
        allowed_networks: Iterable[IPNetwork] = (),
        *,
        resolver: Resolver | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(allowed_networks)
        self.resolver: Resolver = resolver or system_resolver
        self.tls = tls
        # (address, port) of each listener; None: bound to every address.
        self._listeners: set[tuple[IPAddress | None, int]] = set()

    def add_listener(self, host: str, port: int) -> None:
        """Mark ``host:port`` as one of the daemon's own listeners: never a target.

        A wildcard or named host counts as every local address; the transport
        also refuses any connection whose peer is this host at a listener port.
        """
        try:
            ip: IPAddress | None = _plain(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            ip = None  # a name ("localhost", the host's name): treat as every address
        if ip is not None and ip.is_unspecified:
            ip = None
        self._listeners.add((ip, port))

    @property
    def listener_ports(self) -> frozenset[int]:
        """The ports the daemon listens on."""
        return frozenset(port for _, port in self._listeners)

    def is_listener(self, ip: IPAddress, port: int) -> bool:
        """Whether ``ip:port`` is (as far as addresses alone tell) one of the daemon's listeners."""
        ip = _plain(ip)
        for bound, bound_port in self._listeners:
            if port != bound_port:
                continue
            if bound is None and (ip.is_loopback or ip.is_unspecified):
                return True
            if ip == bound or (ip.is_unspecified and bound is not None):
                return True  # 0.0.0.0 reaches the host's own addresses
        return False

    def allowed(self, ip: IPAddress) -> bool:
        """Whether ``ip`` is inside one of the operator's allowed networks."""
        candidates = {ip, _plain(ip)}
        return any(c in net for c in candidates for net in self.allowed_networks)

    def refusal(self, ip: IPAddress, port: int, *, plain_http: bool) -> str | None:
        """Why connecting to ``ip:port`` is refused, or None when it is allowed.

        ``plain_http``: the connection would carry plain HTTP, allowed only into
        the operator's networks.
        """
        if self.is_listener(ip, port):
            return "is this daemon's own listener"
        if self.allowed(ip):
            return None
        if plain_http:
            return (
                "takes plain http only inside the networks the operator opened "
                "(integrations.mcp_allowed_networks); use https"
            )
        kind = refused_class(ip)
        if kind is not None:
            return f"is not a public address ({kind}); only public addresses are allowed"
        return None

    async def addresses(self, host: str, port: int, *, plain_http: bool) -> list[IPAddress]:
        """The allowed addresses of ``host`` (resolved through :attr:`resolver`), in order.

        Addresses that are refused are left out; an empty list means none may
        be used. OSError when the name does not resolve.
        """
        try:
            resolved: Sequence[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            resolved = await self.resolver(host, port)
        return [ip for ip in resolved if self.refusal(ip, port, plain_http=plain_http) is None]

    def check_url(self, url: str) -> Target:
        """``url`` checked as an MCP server's URL: well-formed, and not aimed anywhere refused.

        UrlRefused saying what is wrong. Names are not resolved here (that
        happens at each connect, where it counts); ``localhost`` names and IP
        literals are judged now.
        """
        target = parse_url(url)
        plain_http = target.scheme == "http"
        literal = _literal(target.host)
        if literal is None and target.host.split(".")[-1] == "localhost":
            literal = ipaddress.IPv4Address("127.0.0.1")  # RFC 6761: always loopback
        if literal is not None:
            why = self.refusal(literal, target.port, plain_http=plain_http)
            if why is not None:
                raise UrlRefused(f"{target.host} {why}")
        elif plain_http and not self.allowed_networks:
            raise UrlRefused(
                "plain http is allowed only into networks the operator opened "
                "(integrations.mcp_allowed_networks, none here); use https"
            )
        return target

    async def check_new_url(self, url: str) -> Target:
        """:meth:`check_url`, and a plain-http name resolved: it must lead into an allowed network.

        Only plain http is resolved here: its answer says no more than a call
        would (the networks it may reach are the operator's). An https name is
        judged at each connect, where a refusal reads like any other failure
        to connect, so registration tells nothing about names inside the network.
        """
        target = self.check_url(url)
        if target.scheme == "http" and _literal(target.host) is None:
            try:
                async with asyncio.timeout(_RESOLVE_SECONDS):
                    usable = await self.addresses(target.host, target.port, plain_http=True)
            except (OSError, TimeoutError):
                usable = []
            if not usable:
                raise UrlRefused(
                    f"{target.host} does not resolve into the networks the operator opened "
                    "to plain http (integrations.mcp_allowed_networks); use https"
                )
        return target


def parse_url(url: str) -> Target:
    """``url`` as an http(s) URL with a host, a valid port, no credentials, no fragment and
    no climbing path segments; UrlRefused saying what is wrong.
    """
    if not url:
        raise UrlRefused("is required")
    if len(url) > MAX_URL:
        raise UrlRefused(f"exceeds {MAX_URL} characters")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise UrlRefused(
            "must be ASCII without spaces or control characters "
            "(percent-encode them; write international names in their xn-- form)"
        )
    if "\\" in url:
        raise UrlRefused("must not contain a backslash")
    if "#" in url:
        raise UrlRefused("must not have a fragment (#...)")
    try:
        parts = urlsplit(url)
        port = parts.port
        parsed = httpx2.URL(url)
    except (ValueError, httpx2.InvalidURL) as exc:
        raise UrlRefused(f"is not a valid URL ({_reason(exc)})") from None
    if parts.scheme not in ("https", "http"):
        raise UrlRefused("must be an https URL (http only inside operator-allowed networks)")
    if "@" in parts.netloc:
        raise UrlRefused("must not carry credentials (user@); send them as bearer_token or headers")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused("has no host")
    if "%" in host:
        raise UrlRefused("IPv6 zone identifiers (%...) are not allowed")
    # The client that connects parses the URL itself: it must see the same host and port.
    if parsed.raw_host.decode("ascii").rstrip(".").lower() != host or parsed.port != port:
        raise UrlRefused("is ambiguous (its host or port reads differently to different parsers)")
    if port is not None and not 1 <= port <= 65535:
        raise UrlRefused("port must be 1-65535")
    _check_host(host)
    for segment in parts.path.split("/"):
        if _DOT_SEGMENT.fullmatch(segment):
            raise UrlRefused("path must not contain '.' or '..' segments")
    return Target(url, parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


def _check_host(host: str) -> None:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UrlRefused(f"host {host!r} is not a valid IPv6 address") from None
        return
    labels = host.split(".")
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        # Numeric final label: an IPv4 address, accepted only as a plain dotted quad
        # (resolvers read 127.1, 0x7f.1 and 2130706433 as 127.0.0.1 too).
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise UrlRefused(f"host {host!r} is not a dotted-quad IPv4 address (a.b.c.d)") from None
        return
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UrlRefused(f"host {host!r} is not a valid host name")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _reason(exc: Exception) -> str:
    # Both parsers' messages are short and quote nothing but the URL part at fault.
    return str(exc)[:120] or type(exc).__name__

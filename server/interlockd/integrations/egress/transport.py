"""An httpx2 transport that connects only where the :class:`EgressPolicy` allows.

The check happens where the socket is opened: the network backend under the
connection pool resolves the name once (through the policy's resolver),
drops every refused address, and connects to one of the remaining addresses
by number. There is no second resolution between the check and the connect
for a rebinding DNS server to answer differently. The request itself still
names the host, so ``Host`` and TLS SNI (and certificate checks) are those
of the URL.

After connecting, a connection whose peer is this very host at one of the
daemon's listener ports is closed again: a daemon bound to ``0.0.0.0`` is
reachable at addresses the policy cannot list in advance (its public IP).

Never honours proxy variables or ``.netrc``: a proxy would make the
connection on our behalf, past the check.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore2
import httpx2

from interlockd.integrations.egress.policy import EgressPolicy


class EgressRefused(httpcore2.ConnectError):
    """No address of the target may be connected to under the policy."""


class _GuardedBackend(httpcore2.AsyncNetworkBackend):
    """Resolves, checks every address, connects to an allowed one."""

    def __init__(self, policy: EgressPolicy, *, plain_http: bool) -> None:
        self._policy = policy
        self._plain_http = plain_http
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._policy.addresses(host, port, plain_http=self._plain_http)
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore2.ConnectError(f"{host} does not resolve") from exc
        if not addresses:
            raise EgressRefused(f"{host}: no address this daemon may connect to")
        last: Exception | None = None
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                last = exc
                continue
            if self._to_own_listener(stream):
                await stream.aclose()
                raise EgressRefused(f"{host}: this daemon's own listener")
            return stream
        assert last is not None
        raise last

    def _to_own_listener(self, stream: httpcore2.AsyncNetworkStream) -> bool:
        peer, local = stream.get_extra_info("server_addr"), stream.get_extra_info("client_addr")
        if not peer or not local:
            return False
        same_host = ipaddress.ip_address(str(peer[0]).split("%")[0]) == ipaddress.ip_address(
            str(local[0]).split("%")[0]
        )
        return same_host and int(peer[1]) in self._policy.listener_ports

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise EgressRefused("unix sockets are not an MCP transport")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def _tls() -> ssl.SSLContext:
    # One context for every connection: building one loads the CA bundle, too slow
    # for each call. SSL_CERT_FILE / SSL_CERT_DIR are honoured (an operator's own
    # CA for servers on their network).
    return httpx2.create_ssl_context(trust_env=True)


class _Pooled(httpx2.AsyncHTTPTransport):
    """httpx2's own transport over a pool that connects through ``backend``."""

    def __init__(self, backend: httpcore2.AsyncNetworkBackend, tls: ssl.SSLContext) -> None:
        super().__init__(verify=tls, trust_env=False)
        # AsyncHTTPTransport takes no network backend, but its pool does: keep
        # its request/response mapping and give it a pool that connects through ours.
        self._pool = httpcore2.AsyncConnectionPool(ssl_context=tls, network_backend=backend)


class GuardedTransport(httpx2.AsyncBaseTransport):
    """HTTP(S) to where ``policy`` allows: plain http only into the operator's networks."""

    def __init__(self, policy: EgressPolicy) -> None:
        tls = policy.tls or _tls()
        self._https = _Pooled(_GuardedBackend(policy, plain_http=False), tls)
        self._http = _Pooled(_GuardedBackend(policy, plain_http=True), tls)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        scheme = request.url.scheme
        if scheme == "https":
            return await self._https.handle_async_request(request)
        if scheme == "http":
            return await self._http.handle_async_request(request)
        raise httpx2.UnsupportedProtocol(f"{scheme!r} is not http or https")

    async def aclose(self) -> None:
        await self._https.aclose()
        await self._http.aclose()

"""What the asyncio and the blocking client share, so they cannot drift apart.

Where to connect by default, which key a call carries (and the error when
it is missing), the request messages built from keyword arguments, and what
a connect flow's update means. No I/O happens here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Literal

from interlock.errors import ConnectFailed, MissingCredentials
from interlock.v1 import compute_pb2, integrations_pb2, router_pb2

__all__ = [
    "COMPUTE_STATUSES",
    "DEFAULT_ADDRESS",
    "ENV_ADDRESS",
    "ENV_API_KEY",
    "ENV_OPERATOR_KEY",
    "PAUSE_SCOPES",
    "ComputeOptionsLike",
    "ConnectScope",
    "Metadata",
    "add_mcp_server_request",
    "api_key_metadata",
    "api_key_or_operator_metadata",
    "compute_status",
    "connect_request",
    "connect_result",
    "from_env",
    "list_compute_sessions_request",
    "operator_metadata",
    "pause_scope",
    "run_request",
]

DEFAULT_ADDRESS = "127.0.0.1:7600"
ENV_ADDRESS = "INTERLOCK_ADDRESS"
ENV_API_KEY = "INTERLOCK_API_KEY"
ENV_OPERATOR_KEY = "INTERLOCK_OPERATOR_KEY"

Metadata = tuple[tuple[str, str], ...]

#: A run's compute placement: the message, or its fields by name
#: (``{"provider": "daytona", "policy": "cost-aware", "region": "us"}``).
ComputeOptionsLike = router_pb2.ComputeOptions | Mapping[str, str]

#: Who a connection is for: the end user who connects it, or the whole sandbox.
ConnectScope = Literal["end_user", "sandbox"]
_SCOPES: dict[str, integrations_pb2.ConnectScope.ValueType] = {
    "end_user": integrations_pb2.CONNECT_SCOPE_END_USER,
    "sandbox": integrations_pb2.CONNECT_SCOPE_SANDBOX,
}
_ENDED = {
    integrations_pb2.CONNECT_STATE_FAILED: "failed",
    integrations_pb2.CONNECT_STATE_EXPIRED: "expired",
}


def from_env(value: str | None, variable: str) -> str | None:
    """``value`` if given, else the environment ``variable``; empty counts as unset."""
    if value:
        return value
    return os.environ.get(variable) or None


def _bearer(key: str | None, what: str, hint: str) -> Metadata:
    if not key:
        raise MissingCredentials(f"no {what} configured: {hint}")
    return (("authorization", f"Bearer {key}"),)


def api_key_metadata(key: str | None) -> Metadata:
    """Metadata of a call made with a sandbox API key; MissingCredentials without one."""
    return _bearer(key, "sandbox API key", f"pass api_key= or set {ENV_API_KEY}")


def operator_metadata(key: str | None) -> Metadata:
    """Metadata of a call made with the operator key; MissingCredentials without one."""
    return _bearer(key, "operator key", f"pass operator_key= or set {ENV_OPERATOR_KEY}")


def api_key_or_operator_metadata(api_key: str | None, operator_key: str | None) -> Metadata:
    """Metadata of a call either key may make: the sandbox API key when there is one
    (the call is confined to its sandbox), else the operator key (every sandbox);
    MissingCredentials without either."""
    if api_key:
        return api_key_metadata(api_key)
    if operator_key:
        return operator_metadata(operator_key)
    raise MissingCredentials(
        "no sandbox API key or operator key configured: pass api_key= or operator_key=, "
        f"or set {ENV_API_KEY} or {ENV_OPERATOR_KEY}"
    )


def run_request(
    message: str,
    *,
    end_user_id: str,
    session_id: str = "",
    provider: str = "",
    model: str = "",
    system: str = "",
    tools: Iterable[str] = (),
    request_id: str = "",
    labels: Mapping[str, str] | None = None,
    max_output_tokens: int = 0,
    google_engine: str = "",
    google_location: str = "",
    agent: str = "",
    compute: ComputeOptionsLike | None = None,
) -> router_pb2.RunRequest:
    """The RunRequest for one turn (see ``Client.run`` for what each field does)."""
    if compute is not None and not isinstance(compute, router_pb2.ComputeOptions):
        compute = router_pb2.ComputeOptions(**compute)
    return router_pb2.RunRequest(
        end_user_id=end_user_id,
        session_id=session_id,
        provider=provider,
        model=model,
        system=system,
        message=message,
        tools=list(tools),
        request_id=request_id,
        labels=dict(labels or {}),
        max_output_tokens=max_output_tokens,
        google=(
            router_pb2.GoogleRunOptions(reasoning_engine_id=google_engine, location=google_location)
            if google_engine or google_location
            else None
        ),
        agent=agent,
        compute=compute,
    )


def connect_request(
    app: str, *, end_user_id: str, scope: ConnectScope = "end_user"
) -> integrations_pb2.ConnectRequest:
    """The ConnectRequest for ``app``; ValueError for a scope that is not one of ConnectScope."""
    if scope not in _SCOPES:
        raise ValueError(f"scope must be 'end_user' or 'sandbox', not {scope!r}")
    return integrations_pb2.ConnectRequest(app=app, end_user_id=end_user_id, scope=_SCOPES[scope])


def add_mcp_server_request(
    name: str,
    url: str,
    *,
    end_user_id: str = "",
    bearer_token: str = "",
    headers: Mapping[str, str] | None = None,
) -> integrations_pb2.AddMcpServerRequest:
    """The AddMcpServerRequest registering one MCP server (see ``Integrations.add_mcp_server``)."""
    return integrations_pb2.AddMcpServerRequest(
        name=name,
        url=url,
        end_user_id=end_user_id,
        bearer_token=bearer_token,
        headers=dict(headers or {}),
    )


def connect_result(
    update: integrations_pb2.WatchConnectResponse,
) -> integrations_pb2.Integration | None:
    """What one update of a connect flow means for someone waiting on it.

    The new integration once connected; None while the flow is pending (or in
    a state added to the API after this client was built); ConnectFailed when
    it failed or expired.
    """
    if update.state == integrations_pb2.CONNECT_STATE_CONNECTED:
        return update.integration
    ended = _ENDED.get(update.state)
    if ended is not None:
        raise ConnectFailed(update.flow_id, ended, update.reason)
    return None


#: Pause scopes by the names the clients and CLI take.
PAUSE_SCOPES = {
    "global": compute_pb2.PAUSE_SCOPE_GLOBAL,
    "end_user": compute_pb2.PAUSE_SCOPE_END_USER,
    "agent_provider": compute_pb2.PAUSE_SCOPE_AGENT_PROVIDER,
    "compute_provider": compute_pb2.PAUSE_SCOPE_COMPUTE_PROVIDER,
}


def pause_scope(scope: str) -> compute_pb2.PauseScope.ValueType:
    """The proto value of a pause scope name; ValueError for an unknown one."""
    try:
        return PAUSE_SCOPES[scope]
    except KeyError:
        raise ValueError(
            f"unknown pause scope {scope!r}; one of {', '.join(PAUSE_SCOPES)}"
        ) from None


#: Compute session statuses by the names the clients and CLI take.
COMPUTE_STATUSES: dict[str, compute_pb2.ComputeSessionStatus.ValueType] = {
    "creating": compute_pb2.COMPUTE_SESSION_STATUS_CREATING,
    "running": compute_pb2.COMPUTE_SESSION_STATUS_RUNNING,
    "suspended": compute_pb2.COMPUTE_SESSION_STATUS_SUSPENDED,
    "archived": compute_pb2.COMPUTE_SESSION_STATUS_ARCHIVED,
    "failed": compute_pb2.COMPUTE_SESSION_STATUS_FAILED,
    "destroyed": compute_pb2.COMPUTE_SESSION_STATUS_DESTROYED,
}


def compute_status(status: str) -> compute_pb2.ComputeSessionStatus.ValueType:
    """The proto value of a session status name ("" for any but destroyed); ValueError for
    an unknown one."""
    if not status:
        return compute_pb2.COMPUTE_SESSION_STATUS_UNSPECIFIED
    try:
        return COMPUTE_STATUSES[status]
    except KeyError:
        raise ValueError(
            f"unknown compute session status {status!r}; one of {', '.join(COMPUTE_STATUSES)}"
        ) from None


def list_compute_sessions_request(
    *,
    sandbox_id: str = "",
    end_user_id: str = "",
    agent: str = "",
    status: str = "",
    provider: str = "",
) -> compute_pb2.ListComputeSessionsRequest:
    """The ListComputeSessionsRequest of ``Compute.sessions`` (ValueError for a bad status)."""
    return compute_pb2.ListComputeSessionsRequest(
        sandbox_id=sandbox_id,
        end_user_id=end_user_id,
        agent=agent,
        status=compute_status(status),
        provider=provider,
    )

"""Bad input: INVALID_ARGUMENT naming the field, and nothing stored half-way."""

from __future__ import annotations

import grpc
import pytest

from interlock.v1 import conversations_pb2, router_pb2
from tests.conftest import RunningDaemon


async def _invalid(daemon: RunningDaemon, request: router_pb2.RunRequest) -> str:
    call = daemon.router.Run(request, metadata=daemon.auth(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [e async for e in call]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value.details() or ""


async def _nothing_stored(daemon: RunningDaemon, end_user_id: str = "u-1") -> None:
    listed = await daemon.conversations.ListConversations(
        conversations_pb2.ListConversationsRequest(end_user_id=end_user_id), metadata=daemon.auth()
    )
    assert list(listed.conversations) == []


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"message": ""}, "message"),
        ({"message": "   \n"}, "message"),
        ({"end_user_id": ""}, "end_user_id"),
        ({"end_user_id": "has space"}, "end_user_id"),
        ({"provider": "no-such-provider"}, "provider"),
        ({"session_id": "../etc/passwd"}, "session_id"),
        ({"tools": ["not a tool!"]}, "tools[0]"),
        ({"tools": ["no_such_tool"]}, "tools"),
        ({"labels": {f"k{i}": "v" for i in range(17)}}, "labels"),
        ({"labels": {"k": "v" * 300}}, "labels[k]"),
        ({"max_output_tokens": -1}, "max_output_tokens"),
        ({"request_id": "x" * 129}, "request_id"),
    ],
)
async def test_bad_run_request_names_the_field(
    daemon: RunningDaemon, fields: dict[str, object], field_name: str
) -> None:
    """Each malformed RunRequest field is INVALID_ARGUMENT naming it; nothing is stored."""
    request = router_pb2.RunRequest(end_user_id="u-1", message="hello")
    for key, value in fields.items():
        if isinstance(value, dict):
            getattr(request, key).update(value)
        elif isinstance(value, list):
            getattr(request, key).extend(value)
        else:
            setattr(request, key, value)
    details = await _invalid(daemon, request)
    assert details.startswith(f"{field_name}:"), details
    await _nothing_stored(daemon)


async def test_oversized_message_is_refused(start_daemon) -> None:  # type: ignore[no-untyped-def]
    """A message over the configured byte limit is INVALID_ARGUMENT naming message and the limit."""
    daemon = await start_daemon(runs={"max_message_bytes": 1000})
    details = await _invalid(daemon, router_pb2.RunRequest(end_user_id="u-1", message="x" * 1001))
    assert details.startswith("message:")
    assert "1000" in details
    await _nothing_stored(daemon)


async def test_invalid_utf8_names_the_field(daemon: RunningDaemon) -> None:
    """A string field carrying invalid UTF-8 is INVALID_ARGUMENT naming that field."""
    good = router_pb2.RunRequest(end_user_id="u-1", message="hello").SerializeToString()
    # Field 6 (message), wire type 2, 2 bytes of invalid UTF-8.
    bad = router_pb2.RunRequest(end_user_id="u-1").SerializeToString() + b"\x32\x02\xff\xfe"
    assert good != bad
    call = daemon.channel.unary_stream(
        "/interlock.v1.AgentRouter/Run",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )(bad, metadata=daemon.auth(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [e async for e in call]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("message:")
    await _nothing_stored(daemon)


async def test_unknown_session_is_not_found(daemon: RunningDaemon) -> None:
    """A well-formed session id that doesn't exist is NOT_FOUND and nothing is stored."""
    call = daemon.router.Run(
        router_pb2.RunRequest(end_user_id="u-1", message="hi", session_id="conv_nope"),
        metadata=daemon.auth(),
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [e async for e in call]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    await _nothing_stored(daemon)

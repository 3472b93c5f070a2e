"""Every error status carries google.rpc details a client can act on: ErrorInfo with a
stable reason, BadRequest naming the field, RetryInfo when a retry may succeed."""

from __future__ import annotations

import google.rpc.error_details_pb2 as edpb
import google.rpc.status_pb2 as spb
import grpc
import pytest
from google.protobuf import message

from interlock.v1 import conversations_pb2 as cpb
from interlock.v1 import router_pb2
from tests.conftest import RunningDaemon
from tests.fakes.openai import FakeOpenAI, Reply


def details(error: grpc.aio.AioRpcError) -> tuple[spb.Status, dict[str, message.Message]]:
    """The status in the details trailer and its details by type name."""
    trailer = dict(error.trailing_metadata() or ())
    status = spb.Status.FromString(trailer["grpc-status-details-bin"])
    found: dict[str, message.Message] = {}
    for any_ in status.details:
        for cls in (edpb.ErrorInfo, edpb.BadRequest, edpb.RetryInfo):
            if any_.Is(cls.DESCRIPTOR):
                found[cls.DESCRIPTOR.name] = cls()
                any_.Unpack(found[cls.DESCRIPTOR.name])
    return status, found


async def status_of(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_invalid_argument_names_the_field_in_a_bad_request(daemon: RunningDaemon) -> None:
    """A bad field gets BadRequest{field, description} and ErrorInfo{INVALID_ARGUMENT}."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("hi", end_user_id="")
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status, found = details(error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == error.details()
    bad = found["BadRequest"]
    assert isinstance(bad, edpb.BadRequest)
    (violation,) = bad.field_violations
    assert violation.field == "end_user_id"
    assert violation.description
    assert error.details() == f"end_user_id: {violation.description}"
    info_ = found["ErrorInfo"]
    assert isinstance(info_, edpb.ErrorInfo)
    assert (info_.reason, info_.domain) == ("INVALID_ARGUMENT", "interlock.dev")
    assert dict(info_.metadata) == {"field": "end_user_id"}
    assert "RetryInfo" not in found


async def test_provider_unavailable_says_retry_and_names_the_provider(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A provider down before the first event: ErrorInfo{PROVIDER_UNAVAILABLE, provider}
    and a RetryInfo with the delay to wait."""
    attempts = daemon.daemon.settings.providers["fake"].max_attempts
    fake_a.enqueue(*[Reply.error(503, "down", type="server_error")] * attempts)
    call = daemon.router.Run(
        router_pb2.RunRequest(message="hi", end_user_id="u-1"), metadata=daemon.auth()
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    _, found = details(info.value)
    info_ = found["ErrorInfo"]
    assert isinstance(info_, edpb.ErrorInfo)
    assert info_.reason == "PROVIDER_UNAVAILABLE"
    assert dict(info_.metadata) == {"provider": "fake"}
    retry = found["RetryInfo"]
    assert isinstance(retry, edpb.RetryInfo)
    assert retry.retry_delay.seconds >= 1
    assert "BadRequest" not in found


async def test_not_found_and_unauthenticated_carry_their_reason(daemon: RunningDaemon) -> None:
    """Every status the daemon sends on purpose carries ErrorInfo with its reason."""
    error = await status_of(
        daemon.conversations.GetConversation(
            cpb.GetConversationRequest(end_user_id="u-1", session_id="conv_nope"),
            metadata=daemon.auth(),
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert details(error)[1]["ErrorInfo"].reason == "NOT_FOUND"  # type: ignore[attr-defined]
    error = await status_of(
        daemon.conversations.GetConversation(
            cpb.GetConversationRequest(end_user_id="u-1", session_id="conv_nope"),
            metadata=daemon.auth("ilk_forged"),
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(error)[1]["ErrorInfo"].reason == "UNAUTHENTICATED"  # type: ignore[attr-defined]

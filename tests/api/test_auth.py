"""Authentication and tenancy through the real gRPC API."""

from __future__ import annotations

import grpc
import pytest

from interlock.v1 import conversations_pb2, router_pb2, sandboxes_pb2
from tests.conftest import RunningDaemon


async def _status(awaitable) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    return info.value.code()


async def test_missing_key_is_unauthenticated(daemon: RunningDaemon) -> None:
    """A Run without authorization metadata is refused with UNAUTHENTICATED."""
    call = daemon.router.Run(router_pb2.RunRequest(end_user_id="u-1", message="hi"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [e async for e in call]
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization" in (info.value.details() or "")


async def test_wrong_key_is_unauthenticated(daemon: RunningDaemon) -> None:
    """An unknown API key is refused with UNAUTHENTICATED and nothing is stored."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("hi", key="ilk_not-a-real-key")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = await daemon.conversations.ListConversations(
        conversations_pb2.ListConversationsRequest(end_user_id="u-1"), metadata=daemon.auth()
    )
    assert list(listed.conversations) == []


async def test_revoked_key_is_refused_at_once(daemon: RunningDaemon) -> None:
    """A key stops working as soon as it is revoked, even if it was just used."""
    sandbox_id, key = await daemon.new_sandbox("other")
    events = await daemon.run("hi", key=key)
    assert events[-1].HasField("finish")
    keys = await daemon.sandboxes.ListApiKeys(
        sandboxes_pb2.ListApiKeysRequest(sandbox_id=sandbox_id), metadata=daemon.operator()
    )
    await daemon.sandboxes.RevokeApiKey(
        sandboxes_pb2.RevokeApiKeyRequest(sandbox_id=sandbox_id, key_id=keys.api_keys[0].key_id),
        metadata=daemon.operator(),
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("again", key=key)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_sandbox_key_cannot_administer(daemon: RunningDaemon) -> None:
    """A sandbox API key can't call the operator-only Sandboxes service."""
    code = await _status(
        daemon.sandboxes.ListSandboxes(sandboxes_pb2.ListSandboxesRequest(), metadata=daemon.auth())
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_operator_key_cannot_run(daemon: RunningDaemon) -> None:
    """The operator key is not a sandbox key: Run refuses it, saying which key is needed."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("hi", key=daemon.operator_key)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "sandbox API key" in (info.value.details() or "")


async def test_other_sandbox_session_is_not_found(daemon: RunningDaemon) -> None:
    """Another sandbox's session id is NOT_FOUND for Run and for reading, revealing nothing."""
    events = await daemon.run("secret plans", end_user_id="u-1")
    session = events[0].run_started.session_id
    _, other_key = await daemon.new_sandbox("intruder")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("continue", key=other_key, session_id=session)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    code = await _status(
        daemon.conversations.GetConversation(
            conversations_pb2.GetConversationRequest(end_user_id="u-1", session_id=session),
            metadata=daemon.auth(other_key),
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_other_end_user_session_is_not_found(daemon: RunningDaemon) -> None:
    """One end user can't continue, read, list or delete another end user's conversation."""
    events = await daemon.run("mine", end_user_id="alice")
    session = events[0].run_started.session_id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("hijack", end_user_id="bob", session_id=session)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    for call in (
        daemon.conversations.GetConversation(
            conversations_pb2.GetConversationRequest(end_user_id="bob", session_id=session),
            metadata=daemon.auth(),
        ),
        daemon.conversations.DeleteConversation(
            conversations_pb2.DeleteConversationRequest(end_user_id="bob", session_id=session),
            metadata=daemon.auth(),
        ),
    ):
        assert await _status(call) == grpc.StatusCode.NOT_FOUND
    listed = await daemon.conversations.ListConversations(
        conversations_pb2.ListConversationsRequest(end_user_id="bob"), metadata=daemon.auth()
    )
    assert list(listed.conversations) == []
    window = await daemon.window(session, end_user_id="alice")
    assert window[0].text == "mine"

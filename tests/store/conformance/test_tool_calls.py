"""The ``ToolCallStore`` contract: a conversation's tool calls and their results, found by
call id (what the runner asks before it runs a call again)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.store.conformance.helpers import entry, new_sandbox

if TYPE_CHECKING:
    from interlockd.store.base import Store


async def test_find_tool_result(store: Store) -> None:
    """The stored tool_result answering a call id is found in its conversation only."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    other = await store.create_conversation(sandbox.id, "alice")
    await store.append_entries(
        sandbox.id,
        conversation.id,
        [
            entry("{}", "tool_call", tool_call_id="call_1", tool_name="weather"),
            entry('{"temp": 21}', "tool_result", tool_call_id="call_1", tool_name="weather"),
        ],
    )
    found = await store.find_tool_result(sandbox.id, conversation.id, "call_1")
    assert found is not None
    assert (found.kind, found.text, found.seq) == ("tool_result", '{"temp": 21}', 2)
    assert await store.find_tool_result(sandbox.id, conversation.id, "call_2") is None
    assert await store.find_tool_result(sandbox.id, other.id, "call_1") is None


async def test_find_tool_call(store: Store) -> None:
    """The stored tool_call of a call id is found, answered or not, in its conversation only;
    an empty call id finds nothing."""
    sandbox, other_sandbox = await new_sandbox(store), await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    other = await store.create_conversation(sandbox.id, "alice")
    await store.append_entries(
        sandbox.id,
        conversation.id,
        [
            entry("hi"),
            entry('{"city": "Oslo"}', "tool_call", tool_call_id="call_1", tool_name="weather"),
        ],
    )
    started = await store.find_tool_call(sandbox.id, conversation.id, "call_1")
    assert started is not None
    assert (started.kind, started.text, started.seq, started.tool_name) == (
        "tool_call",
        '{"city": "Oslo"}',
        2,
        "weather",
    )
    assert await store.find_tool_result(sandbox.id, conversation.id, "call_1") is None
    await store.append_entries(
        sandbox.id,
        conversation.id,
        [entry('{"temp": 21}', "tool_result", tool_call_id="call_1", tool_name="weather")],
    )
    assert await store.find_tool_call(sandbox.id, conversation.id, "call_1") == started
    assert await store.find_tool_call(sandbox.id, conversation.id, "call_2") is None
    assert await store.find_tool_call(sandbox.id, conversation.id, "") is None
    assert await store.find_tool_call(sandbox.id, other.id, "call_1") is None
    assert await store.find_tool_call(other_sandbox.id, conversation.id, "call_1") is None

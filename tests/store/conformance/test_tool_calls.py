"""The ``ToolCallStore`` contract: a conversation's tool calls and results found by call id."""

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

"""The handover of missed turns to a runtime that keeps its own session."""

from __future__ import annotations

import pytest

from interlockd.backends.handover import split
from interlockd.vocabulary import Message, ToolCallPart


def test_in_sync_session_gets_only_the_message() -> None:
    """System prompt + new message: no transcript at all."""
    handover = split([Message("system", "Be brief."), Message("user", "hi")], "Be brief.")
    assert (handover.transcript, handover.message) == ("", "hi")


def test_missed_turns_become_one_transcript_in_order() -> None:
    """User, assistant, tool call and result of missed turns appear in order, then the message."""
    messages = [
        Message("system", "Be brief."),
        Message("user", "find my order"),
        Message("assistant", "", tool_calls=(ToolCallPart("c1", "lookup", '{"id": 42}'),)),
        Message("tool", '{"status": "shipped"}', tool_call_id="c1", name="lookup"),
        Message("assistant", "It shipped."),
        Message("user", "when?"),
    ]
    handover = split(messages, "Be brief.")
    assert handover.message == "when?"
    lines = handover.transcript.splitlines()
    assert lines[0] == "<conversation_so_far>"
    assert lines[-1] == "</conversation_so_far>"
    assert lines[2:-1] == [
        "[user]: find my order",
        '[assistant called tool lookup with {"id": 42}]',
        '[tool lookup returned {"status": "shipped"}]',
        "[assistant]: It shipped.",
    ]
    assert "Be brief." not in handover.transcript


def test_note_added_to_the_system_prompt_goes_into_the_transcript() -> None:
    """The dropped-turns note appended to the system message is handed over, not the prompt."""
    messages = [
        Message("system", "Be brief.\n\n[Earlier turns are not shown.]"),
        Message("user", "x"),
    ]
    handover = split(messages, "Be brief.")
    assert "[Earlier turns are not shown.]" in handover.transcript
    assert "Be brief." not in handover.transcript


def test_context_must_end_with_the_user_message() -> None:
    """A context that does not end with the user's message is a bug, not a turn."""
    with pytest.raises(ValueError, match="user message"):
        split([Message("assistant", "hi")], "")

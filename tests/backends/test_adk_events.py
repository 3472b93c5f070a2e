"""ADK events of Vertex AI Agent Engine translated into neutral backend events."""

from __future__ import annotations

from typing import Any

from interlockd.backends.google.adk import AdkTranslator, StreamError
from interlockd.vocabulary import TextDelta, ThinkingDelta, ToolCall, ToolResult, Usage, UsageReport


def model(*parts: dict[str, Any], id: str = "e1", partial: bool = False, **extra: Any) -> Any:
    event: dict[str, Any] = {
        "id": id,
        "author": "agent",
        "content": {"role": "model", "parts": list(parts)},
    }
    if partial:
        event["partial"] = True
    event.update(extra)
    return event


def tool_results(*parts: dict[str, Any], id: str = "e2") -> Any:
    """The event ADK emits with a tool's result: role "user", author the agent."""
    return {"id": id, "author": "agent", "content": {"role": "user", "parts": list(parts)}}


def test_partial_chunks_stream_and_the_aggregate_is_not_repeated() -> None:
    """Partial text chunks stream; the final repeat under the same id adds only what is new."""
    t = AdkTranslator()
    assert t.translate(model({"text": "Hel"}, partial=True)) == [TextDelta("Hel")]
    assert t.translate(model({"text": "lo"}, partial=True)) == [TextDelta("lo")]
    assert t.translate(model({"text": "Hello!"}, finish_reason="STOP")) == [TextDelta("!")]
    assert t.stop_reason == "end_turn"


def test_non_streamed_text_is_emitted_whole() -> None:
    """A text part never previewed by partial chunks is emitted once, whole."""
    t = AdkTranslator()
    assert t.translate(model({"text": "All at once."})) == [TextDelta("All at once.")]


def test_thought_parts_are_thinking() -> None:
    """Parts marked thought are reasoning, streamed and deduplicated apart from answer text."""
    t = AdkTranslator()
    assert t.translate(model({"text": "hmm", "thought": True}, partial=True)) == [
        ThinkingDelta("hmm")
    ]
    out = t.translate(model({"text": "hmm", "thought": True}, {"text": "Yes."}))
    assert out == [TextDelta("Yes.")]


def test_agent_tools_are_provider_executed_and_dispatch_is_skipped() -> None:
    """The agent's own tools are reported; its dispatch proxy calls are not (the router
    reports the real call it dispatched)."""
    t = AdkTranslator()
    out = t.translate(
        model(
            {"function_call": {"id": "f1", "name": "google_search", "args": {"q": "x"}}},
            {"function_call": {"id": "f2", "name": "dispatch", "args": {"tool_name": "t"}}},
        )
    )
    assert out == [ToolCall("f1", "google_search", '{"q":"x"}', provider_executed=True)]
    out = t.translate(
        tool_results(
            {"function_response": {"id": "f1", "name": "google_search", "response": {"r": 1}}},
            {"function_response": {"id": "f2", "name": "dispatch", "response": {"result": 2}}},
        )
    )
    assert out == [ToolResult("f1", "google_search", '{"r":1}', provider_executed=True)]


def test_tool_results_in_role_user_events_of_the_agent_are_kept() -> None:
    """ADK puts a tool's function_response in an event whose role is "user" but whose author
    is the agent: its results are the agent's own, not an echo of the caller's message."""
    t = AdkTranslator()
    response = {"id": "adk-1", "name": "google_search", "response": {"hits": ["a"]}}
    assert t.translate(tool_results({"function_response": response})) == [
        ToolResult("adk-1", "google_search", '{"hits":["a"]}', provider_executed=True)
    ]


def test_only_tool_results_of_role_user_events_are_kept() -> None:
    """Text in a role-"user" event of the agent is model input, not answer text."""
    t = AdkTranslator()
    event = tool_results(
        {"text": "for the model"},
        {"function_response": {"id": "f1", "name": "lookup", "response": {}}},
    )
    assert t.translate(event) == [ToolResult("f1", "lookup", "{}", provider_executed=True)]


def test_usage_keeps_thoughts_and_cached_tokens() -> None:
    """usage_metadata of a complete response becomes usage; thoughts count as output."""
    t = AdkTranslator()
    usage = {
        "prompt_token_count": 100,
        "candidates_token_count": 20,
        "thoughts_token_count": 7,
        "cached_content_token_count": 40,
        "total_token_count": 127,
    }
    assert t.translate(model({"text": "x"}, usage_metadata=usage)) == [
        TextDelta("x"),
        UsageReport(
            Usage(input_tokens=100, output_tokens=27, cache_read_tokens=40, reasoning_tokens=7)
        ),
    ]
    assert t.translate(model({"text": "y"}, partial=True, id="e2", usage_metadata=usage)) == [
        TextDelta("y")
    ]


def test_finish_reasons_map_to_stop_reasons() -> None:
    """MAX_TOKENS and safety finishes map to max_tokens and content_filter."""
    t = AdkTranslator()
    t.translate(model({"text": "a"}, finish_reason="MAX_TOKENS"))
    assert t.stop_reason == "max_tokens"
    t.translate(model({"text": "b"}, id="e2", finish_reason="SAFETY"))
    assert t.stop_reason == "content_filter"


def test_in_stream_error_object() -> None:
    """A top-level {code, message} without content is an in-stream error."""
    t = AdkTranslator()
    assert t.translate({"code": 429, "message": "quota"}) == StreamError(429, "quota")
    assert t.translate({"error": {"code": "INTERNAL", "message": "boom"}}) == StreamError(
        "INTERNAL", "boom"
    )


def test_user_events_are_not_echoed() -> None:
    """The user's own message, if the engine streams it, yields nothing (its author is
    "user"), whatever its parts."""
    t = AdkTranslator()
    event = {"id": "u", "author": "user", "content": {"role": "user", "parts": [{"text": "hi"}]}}
    assert t.translate(event) == []
    response = {"function_response": {"id": "f1", "name": "lookup", "response": {}}}
    echoed = {"id": "u2", "author": "user", "content": {"role": "user", "parts": [response]}}
    assert t.translate(echoed) == []

"""Rendering of runs, tool lines and records into plain text streams."""

from __future__ import annotations

import io
import json

from interlock.render import (
    RunRenderer,
    Style,
    format_tool_call,
    format_tool_result,
    format_usd,
    render_conversation_entries,
    to_json,
)
from interlock.v1 import conversations_pb2, events_pb2


def _render(
    events: list[events_pb2.AgentEvent], *, same_terminal: bool = False
) -> tuple[str, str, RunRenderer]:
    out, err = io.StringIO(), io.StringIO()
    renderer = RunRenderer(out, err, same_terminal=same_terminal)
    for event in events:
        renderer.event(event)
    renderer.end()
    return out.getvalue(), err.getvalue(), renderer


SUMMARY = (
    "end_turn · tokens: 12 in, 34 out, 5 cache read, 0 cache write · $0.000123 · local/smollm2\n"
    "session ses_01test (continue with --session ses_01test)\n"
)


def test_answer_on_stdout_everything_else_on_stderr(weather_events):
    """stdout holds exactly the concatenated text deltas; tool lines and summary go to stderr."""
    out, err, renderer = _render(weather_events)
    assert out == "Let me check. It is 21 °C in Paris.\n"
    assert err == ('→ get_weather({"city":"Paris"})\n← get_weather: {"temp_c":21}\n' + SUMMARY)
    assert renderer.outcome.ok
    assert renderer.outcome.session_id == "ses_01test"


def test_shared_terminal_starts_tool_lines_on_a_fresh_line(weather_events):
    """On one screen, a tool line after a half-written sentence starts on a new line."""
    out, err, _ = _render(weather_events, same_terminal=True)
    assert out == "Let me check. It is 21 °C in Paris.\n"
    assert err.startswith('\n→ get_weather({"city":"Paris"})\n')
    assert err.endswith(SUMMARY)


def test_shared_terminal_adds_no_blank_line_after_a_tool_line(events):
    """When stderr already ended the line on a shared screen, stdout gets no extra newline."""
    run = events(
        events_pb2.RunStarted(session_id="ses_1"),
        events_pb2.TextDelta(text="Checking"),
        events_pb2.ToolCall(name="ping", arguments_json="{}"),
        events_pb2.ToolResult(name="ping", result_json='"pong"'),
        events_pb2.Finish(session_id="ses_1"),
    )
    out, err, _ = _render(run, same_terminal=True)
    assert out == "Checking"
    assert err.startswith('\n→ ping({})\n← ping: "pong"\n')


def test_error_event_is_reported_with_code_and_session(events):
    """An error event prints `error: CODE: message`, the retry hint and the session to continue."""
    run = events(
        events_pb2.RunStarted(session_id="ses_1", provider="openai", model="gpt"),
        events_pb2.TextDelta(text="Partial"),
        events_pb2.Error(
            code="UNAVAILABLE", message="provider went away", retryable=True, provider="openai"
        ),
    )
    out, err, renderer = _render(run)
    assert out == "Partial\n"
    assert err == (
        "error: UNAVAILABLE: provider went away\n"
        "running the same turn again may succeed\n"
        "session ses_1 (continue with --session ses_1)\n"
    )
    assert not renderer.outcome.ok


def test_thinking_is_prefixed_per_line_on_stderr(events):
    """Reasoning deltas go to stderr, every line prefixed, and the block ends before the answer."""
    run = events(
        events_pb2.RunStarted(session_id="ses_1"),
        events_pb2.ThinkingDelta(text="first line\nsecond"),
        events_pb2.ThinkingDelta(text=" part"),
        events_pb2.TextDelta(text="Answer"),
        events_pb2.Finish(session_id="ses_1"),
    )
    out, err, renderer = _render(run)
    assert out == "Answer\n"
    assert err.startswith("┊ first line\n┊ second part\n")
    assert renderer.outcome.thinking == "first line\nsecond part"


def test_thinking_is_dimmed_when_colour_is_on(events):
    """With colour on, reasoning is wrapped in the ANSI dim attribute."""
    err = io.StringIO()
    renderer = RunRenderer(io.StringIO(), err, style=Style(enabled=True))
    renderer.event(events(events_pb2.ThinkingDelta(text="hmm"))[0])
    assert "\x1b[2mhmm\x1b[0m" in err.getvalue()


def test_stream_without_terminal_event_is_reported(events):
    """A stream that stops before finish or error says so on stderr."""
    out, err, renderer = _render(events(events_pb2.RunStarted(), events_pb2.TextDelta(text="Hi")))
    assert out == "Hi\n"
    assert err == "error: the stream ended before the run finished\n"
    assert not renderer.outcome.ok


def test_end_with_a_transport_error_prints_it_once(events):
    """A failure passed to end() is printed instead of the incomplete-stream notice."""
    out, err = io.StringIO(), io.StringIO()
    renderer = RunRenderer(out, err)
    renderer.event(events(events_pb2.TextDelta(text="Hi"))[0])
    renderer.end(error="UNAVAILABLE: connection reset")
    assert out.getvalue() == "Hi\n"
    assert err.getvalue() == "error: UNAVAILABLE: connection reset\n"


def test_tool_lines_are_single_compact_truncated_lines():
    """Pretty JSON is compacted, other whitespace collapsed, long text cut with an ellipsis."""
    assert format_tool_call("f", '{\n  "a": 1,\n  "b": [1, 2]\n}') == '→ f({"a":1,"b":[1,2]})'
    assert format_tool_result("f", "", "not\nJSON  at all") == "← f failed: not JSON at all"
    assert format_tool_result("f", '"ok"', "", reused=True) == '← f: "ok" (reused)'
    long = format_tool_result("f", json.dumps("x" * 1000), "", limit=50)
    assert "\n" not in long
    assert long == "← f: " + '"' + "x" * 48 + "…"


def test_usd_formatting_keeps_small_costs_visible():
    """Costs under a cent keep six decimals; larger ones four; zero is $0."""
    assert format_usd(0) == "$0"
    assert format_usd(0.000123) == "$0.000123"
    assert format_usd(1.5) == "$1.5000"


def test_conversation_entries_are_role_prefixed():
    """Stored entries render as role-prefixed lines, tool entries like a live run."""
    k = conversations_pb2
    entries = [
        k.WindowEntry(kind=k.ENTRY_KIND_USER, text="weather in Paris?"),
        k.WindowEntry(
            kind=k.ENTRY_KIND_TOOL_CALL, tool_name="get_weather", text='{"city": "Paris"}'
        ),
        k.WindowEntry(
            kind=k.ENTRY_KIND_TOOL_RESULT, tool_name="get_weather", text="timeout", is_error=True
        ),
        k.WindowEntry(
            kind=k.ENTRY_KIND_ASSISTANT, text="Sorry,\nno data.", provider="local", model="m"
        ),
        k.WindowEntry(kind=k.ENTRY_KIND_SUMMARY, text="asked about weather"),
    ]
    out = io.StringIO()
    render_conversation_entries(entries, out)
    assert out.getvalue() == (
        "user: weather in Paris?\n"
        '→ get_weather({"city":"Paris"})\n'
        "← get_weather failed: timeout\n"
        "assistant (local/m): Sorry,\n"
        "  no data.\n"
        "summary: asked about weather\n"
    )


def test_to_json_is_one_line_with_proto_field_names(weather_events):
    """to_json gives single-line JSON that keeps the .proto field names."""
    line = to_json(weather_events[2])
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["run_id"] == "run_01test"
    assert parsed["tool_call"]["arguments_json"] == '{"city": "Paris"}'

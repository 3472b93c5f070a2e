"""The stream parser sees the same events however the network splits the bytes.

TCP decides where one read ends and the next begins; over loopback that is
hard to steer, so these properties feed the parser the byte stream cut at
arbitrary points, as the backend feeds it each read.
"""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlockd.backends.base import StepEnd
from interlockd.backends.chat_stream import ChatStreamParser, StepEvent
from interlockd.errors import ProviderProtocolError
from interlockd.vocabulary import TextDelta, ThinkingDelta, ToolCall, Usage, UsageReport

texts = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=8)


def encode(chunks: list[dict[str, object]], *, crlf: bool, comments: bool) -> bytes:
    newline = b"\r\n" if crlf else b"\n"
    out = b""
    for chunk in chunks:
        if comments:
            out += b": keep-alive" + newline + newline
        out += b"data: " + orjson.dumps(chunk) + newline + newline
    return out + b"data: [DONE]" + newline + newline


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def parse(pieces: list[bytes]) -> list[StepEvent]:
    parser = ChatStreamParser("p")
    events: list[StepEvent] = []
    for piece in pieces:
        events += parser.feed(piece)
        parser.check()
    assert parser.done
    return [*events, parser.end()]


@settings(max_examples=60, deadline=None)
@given(
    pieces=texts,
    thinking=texts,
    points=st.lists(st.integers(min_value=0), max_size=12),
    crlf=st.booleans(),
    comments=st.booleans(),
)
def test_text_survives_any_split(
    pieces: list[str], thinking: list[str], points: list[int], crlf: bool, comments: bool
) -> None:
    """Text, thinking and usage come out whole and in order for every cut of the stream."""
    chunks: list[dict[str, object]] = [
        {"choices": [{"index": 0, "delta": {"reasoning_content": t}}]} for t in thinking
    ]
    chunks += [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}})

    events = parse(cut(encode(chunks, crlf=crlf, comments=comments), points))

    assert events == [
        *(ThinkingDelta(t) for t in thinking),
        *(TextDelta(p) for p in pieces),
        UsageReport(Usage(input_tokens=5, output_tokens=7)),
        StepEnd("stop"),
    ]


@settings(max_examples=60, deadline=None)
@given(
    arguments=st.lists(st.text(max_size=6), min_size=1, max_size=8),
    points=st.lists(st.integers(min_value=0), max_size=12),
)
def test_tool_arguments_survive_any_split(arguments: list[str], points: list[int]) -> None:
    """Tool-call fragments joined from any cut of the stream give the arguments as sent."""
    first = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    chunks: list[dict[str, object]] = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [first]}}]}
    ]
    chunks += [
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]}}
            ]
        }
        for a in arguments
    ]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})

    events = parse(cut(encode(chunks, crlf=False, comments=False), points))

    assert events == [StepEnd("tool_calls", (ToolCall("c1", "f", "".join(arguments) or "{}"),))]


def test_events_before_a_malformed_chunk_come_out_first() -> None:
    """A bad chunk in one read keeps the deltas before it; check() then raises."""
    parser = ChatStreamParser("p")
    events = parser.feed(
        b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\ndata: {not json\n\n'
    )

    assert events == [TextDelta("ok")]
    with pytest.raises(ProviderProtocolError):
        parser.check()
    assert parser.feed(b'data: {"choices":[]}\n\n') == []

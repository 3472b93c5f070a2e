"""The stream parser sees the same events however the network splits the bytes.

TCP decides where one read ends and the next begins; over loopback that is
hard to steer, so these properties feed the byte stream through httpx's own
transport seam (:class:`httpx.MockTransport`) cut at arbitrary points.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from interlockd.backends.base import (
    Message,
    StepEnd,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    TurnRequest,
    Usage,
    UsageReport,
)
from interlockd.backends.openai_compat import OpenAICompatibleBackend, StepEvent

REQUEST = TurnRequest(model="m", messages=[Message("user", "hi")])

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


async def parse(pieces: list[bytes]) -> list[StepEvent]:
    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        backend = OpenAICompatibleBackend("p", "http://provider.test/v1", http=http)
        return [event async for event in backend.step(REQUEST)]


@settings(max_examples=60, deadline=None)
@given(
    pieces=texts,
    thinking=texts,
    points=st.lists(st.integers(min_value=0), max_size=12),
    crlf=st.booleans(),
    comments=st.booleans(),
)
async def test_text_survives_any_split(
    pieces: list[str], thinking: list[str], points: list[int], crlf: bool, comments: bool
) -> None:
    """Text, thinking and usage come out whole and in order for every cut of the stream."""
    chunks: list[dict[str, object]] = [
        {"choices": [{"index": 0, "delta": {"reasoning_content": t}}]} for t in thinking
    ]
    chunks += [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}})

    events = await parse(cut(encode(chunks, crlf=crlf, comments=comments), points))

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
async def test_tool_arguments_survive_any_split(arguments: list[str], points: list[int]) -> None:
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

    events = await parse(cut(encode(chunks, crlf=False, comments=False), points))

    assert events == [StepEnd("tool_calls", (ToolCall("c1", "f", "".join(arguments) or "{}"),))]

"""Delta coalescing: merges only what queued up, keeps order, errors and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from interlockd.api.coalesce import coalesced
from interlockd.runs.events import RunEvent
from interlockd.vocabulary import TextDelta, ToolCall


async def burst(events: list[RunEvent], fail: Exception | None = None) -> AsyncIterator[RunEvent]:
    for event in events:
        yield event
    if fail is not None:
        raise fail


async def test_queued_deltas_merge_and_order_is_kept() -> None:
    """Deltas produced while the consumer was busy merge; other events keep their place."""
    call = ToolCall("c1", "t", "{}")
    source = burst([TextDelta("a"), TextDelta("b"), call, TextDelta("c"), TextDelta("d")])
    out = [event async for event in coalesced(source)]
    assert out == [TextDelta("ab"), call, TextDelta("cd")]


async def test_a_consumer_that_keeps_up_gets_every_delta_alone() -> None:
    """When each delta is consumed before the next is produced, nothing is merged or delayed."""
    step = asyncio.Event()

    async def paced() -> AsyncIterator[RunEvent]:
        for text in ("a", "b", "c"):
            yield TextDelta(text)
            await step.wait()
            step.clear()

    received = []
    async for event in coalesced(paced()):
        received.append(event)
        step.set()
    assert received == [TextDelta("a"), TextDelta("b"), TextDelta("c")]


async def test_errors_come_after_the_events_before_them() -> None:
    """An exception of the source is raised to the consumer after the events that preceded it."""
    stream = coalesced(burst([TextDelta("x")], fail=ValueError("boom")))
    assert await anext(stream) == TextDelta("x")
    with pytest.raises(ValueError, match="boom"):
        await anext(stream)


async def test_closing_the_consumer_cancels_the_producer() -> None:
    """Closing the coalesced stream cancels the source and lets its cleanup finish."""
    cleaned = asyncio.Event()

    async def endless() -> AsyncIterator[RunEvent]:
        try:
            while True:
                yield TextDelta("x")
                await asyncio.sleep(0)
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits, like recording a turn
            cleaned.set()

    stream = coalesced(endless())
    await anext(stream)
    await stream.aclose()
    assert cleaned.is_set()


async def test_producer_stays_within_the_limit() -> None:
    """A stalled consumer holds the producer to about two batches of `limit` events ahead."""
    produced = 0

    async def counting() -> AsyncIterator[RunEvent]:
        nonlocal produced
        for i in range(1000):
            produced += 1
            yield ToolCall(str(i), "t", "{}")

    stream = coalesced(counting(), limit=10)
    await anext(stream)
    for _ in range(20):
        await asyncio.sleep(0)
    # One batch being handed out, one buffered, one event waiting for room.
    assert produced <= 2 * 10 + 1
    with contextlib.suppress(StopAsyncIteration):
        await stream.aclose()


async def test_a_window_merges_deltas_that_arrive_within_it() -> None:
    """With a window, deltas spaced closer than it merge; a later one starts a new message."""

    async def spaced() -> AsyncIterator[RunEvent]:
        yield TextDelta("a")
        await asyncio.sleep(0.01)
        yield TextDelta("b")
        await asyncio.sleep(0.3)
        yield TextDelta("c")

    out = [event async for event in coalesced(spaced(), window=0.15)]
    assert out == [TextDelta("ab"), TextDelta("c")]


async def test_a_window_never_holds_text_past_another_event() -> None:
    """A non-text event sends the held text at once, in order, however long the window."""
    call = ToolCall("c1", "t", "{}")
    gate = asyncio.Event()

    async def source() -> AsyncIterator[RunEvent]:
        yield TextDelta("a")
        yield call
        await gate.wait()

    stream = coalesced(source(), window=60.0)
    assert await asyncio.wait_for(anext(stream), 5) == TextDelta("a")
    assert await asyncio.wait_for(anext(stream), 5) == call
    gate.set()
    assert [event async for event in stream] == []


async def test_a_window_sends_held_text_when_it_closes() -> None:
    """Text with nothing after it goes out once the window has passed, not at the run's end."""
    gate = asyncio.Event()

    async def source() -> AsyncIterator[RunEvent]:
        yield TextDelta("a")
        await gate.wait()

    stream = coalesced(source(), window=0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await asyncio.wait_for(anext(stream), 5) == TextDelta("a")
    assert loop.time() - start >= 0.04
    gate.set()
    assert [event async for event in stream] == []

"""Delta coalescing: fewer, larger stream messages when the client side is the bottleneck.

gRPC's Python layer costs tens of microseconds per message whatever its size,
so a router that forwards every provider delta as its own message spends most
of its CPU on framing. :func:`coalesced` runs the event source in its own task
and hands the consumer everything produced since its last turn at once, with
consecutive text deltas merged into one. Nothing ever waits for more input:
when the consumer keeps up, each delta still goes out alone, immediately; only
deltas that queued up while the previous message was being written are merged.

With a ``window`` (seconds, opt-in) a text delta also waits up to that long
from its arrival for more text to join it: deltas arriving within ``window``
of each other's first go out as one message, at most ``window`` late. Any
other event, or the end of the run, sends the text at once.

The producer runs at most about two batches of ``limit`` events ahead of the
consumer (one being handed out, one buffered), so a slow
client applies backpressure to the provider stream instead of growing memory.
Closing the consumer cancels the producer and waits for it, so the run's own
cancellation handling (recording what was produced) completes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

from interlockd.runs.events import RunEvent
from interlockd.vocabulary import TextDelta

_DONE = object()
_CONSUMER, _PRODUCER = 0, 1


async def coalesced(
    source: AsyncIterator[RunEvent], *, limit: int = 256, window: float = 0.0
) -> AsyncGenerator[RunEvent, None]:
    """Yield ``source``'s events, merging consecutive TextDeltas that queued up.

    With ``window`` > 0, text is also held up to ``window`` seconds from its
    first delta for more to join it. Exceptions raised by ``source`` are
    re-raised here after the events that preceded them.
    """
    loop = asyncio.get_running_loop()
    # Lists and futures made on demand, not deques and Events: each of those
    # allocates a block up front, and every open stream holds this state.
    buffer: list[object] = []
    #: What the consumer waits on for the buffer to fill, and the producer for room.
    wakes: list[asyncio.Future[None] | None] = [None, None]
    failure: list[BaseException] = []

    def wake(side: int) -> None:
        waiter = wakes[side]
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def produce() -> None:
        try:
            async for event in source:
                if len(buffer) >= limit:
                    wakes[_PRODUCER] = room = loop.create_future()
                    await room
                buffer.append(event)
                wake(_CONSUMER)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, re-raised there
            failure.append(exc)
        finally:
            buffer.append(_DONE)
            wake(_CONSUMER)

    async def filled(within: float | None = None) -> None:
        """Wait until the buffer has something (at most ``within`` seconds)."""
        if buffer:
            return
        wakes[_CONSUMER] = waiter = loop.create_future()
        if within is None:
            await waiter
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await waiter

    producer = asyncio.create_task(produce())
    text: list[TextDelta] = []  # held for the window (only when window > 0)
    due = 0.0  # when the held text goes out
    try:
        while True:
            if text and not buffer:
                remaining = due - loop.time()
                if remaining > 0:
                    await filled(remaining)
                if not buffer:  # the window closed with nothing new
                    yield _merge(text)
                    text = []
                    continue
            await filled()
            batch = buffer[:]
            buffer.clear()
            wake(_PRODUCER)
            for item in batch:
                if isinstance(item, TextDelta):
                    if not text:
                        due = loop.time() + window
                    text.append(item)
                    continue
                if text:
                    yield _merge(text)
                    text = []
                if item is _DONE:
                    if failure:
                        raise failure[0]
                    return
                yield item  # type: ignore[misc]
            if text and (window <= 0 or loop.time() >= due):
                yield _merge(text)
                text = []
    finally:
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


def _merge(deltas: list[TextDelta]) -> TextDelta:
    return deltas[0] if len(deltas) == 1 else TextDelta("".join(d.text for d in deltas))

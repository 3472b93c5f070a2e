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
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator

from interlockd.runs.events import RunEvent
from interlockd.vocabulary import TextDelta

_DONE = object()


async def coalesced(
    source: AsyncIterator[RunEvent], *, limit: int = 256, window: float = 0.0
) -> AsyncGenerator[RunEvent, None]:
    """Yield ``source``'s events, merging consecutive TextDeltas that queued up.

    With ``window`` > 0, text is also held up to ``window`` seconds from its
    first delta for more to join it. Exceptions raised by ``source`` are
    re-raised here after the events that preceded them.
    """
    loop = asyncio.get_running_loop()
    buffer: deque[object] = deque()
    ready = asyncio.Event()  # the buffer has something for the consumer
    room = asyncio.Event()  # the buffer has room for the producer
    room.set()
    failure: list[BaseException] = []

    async def produce() -> None:
        try:
            async for event in source:
                if len(buffer) >= limit:
                    room.clear()
                    await room.wait()
                buffer.append(event)
                ready.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, re-raised there
            failure.append(exc)
        finally:
            buffer.append(_DONE)
            ready.set()

    producer = asyncio.create_task(produce())
    text: list[TextDelta] = []  # held for the window (only when window > 0)
    due = 0.0  # when the held text goes out
    try:
        while True:
            if text and not ready.is_set():
                remaining = due - loop.time()
                if remaining > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await ready.wait()
                if not ready.is_set():  # the window closed with nothing new
                    yield _merge(text)
                    text = []
                    continue
            await ready.wait()
            ready.clear()
            batch = list(buffer)
            buffer.clear()
            room.set()
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

"""Delta coalescing: fewer, larger stream messages when the client side is the bottleneck.

gRPC's Python layer costs tens of microseconds per message whatever its size,
so a router that forwards every provider delta as its own message spends most
of its CPU on framing. :func:`coalesced` runs the event source in its own task
and hands the consumer everything produced since its last turn at once, with
consecutive text deltas merged into one. Nothing ever waits for more input:
when the consumer keeps up, each delta still goes out alone, immediately; only
deltas that queued up while the previous message was being written are merged.

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

from interlockd.backends.base import TextDelta
from interlockd.runs.events import RunEvent

_DONE = object()


async def coalesced(
    source: AsyncIterator[RunEvent], *, limit: int = 256
) -> AsyncGenerator[RunEvent, None]:
    """Yield ``source``'s events, merging consecutive TextDeltas that queued up.

    Exceptions raised by ``source`` are re-raised here after the events that
    preceded them.
    """
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
    try:
        while True:
            await ready.wait()
            ready.clear()
            batch = list(buffer)
            buffer.clear()
            room.set()
            text: list[TextDelta] = []
            for item in batch:
                if isinstance(item, TextDelta):
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
            if text:
                yield _merge(text)
    finally:
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


def _merge(deltas: list[TextDelta]) -> TextDelta:
    return deltas[0] if len(deltas) == 1 else TextDelta("".join(d.text for d in deltas))

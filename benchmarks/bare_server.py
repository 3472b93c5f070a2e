"""The floor: a bare ``grpc.aio`` AgentRouter that streams pre-built AgentEvents.

``Run`` does no work but yielding messages built in advance, shaped like the
router's: a ``run_started``, K ``text_delta`` events of the same token as the
fake upstream (``"tok "``), then a ``finish`` — each with a 30-character
``run_id``, its ``seq`` and a ``time``, so every message is the same size as
interlockd's. K comes from the request's model name (``"bench-k2000"`` streams
2000 deltas) or else from ``--deltas``. The handler is an async generator,
like interlockd's, so both pay the same grpc per-message cost.

A model name with ``-pMms`` (``"bench-p20ms-k64"``) paces the deltas as
``upstream.py`` does: the ``run_started`` and the first delta at once, then one
delta every M milliseconds (delta i is due at i x M from the call, so no
drift), the ``finish`` right after the last. That is the floor of a paced
stream: what grpc alone adds to the provider's schedule, measured by
``paced.py`` in the same run as interlockd.

    python benchmarks/bare_server.py [--port 0] [--deltas 2000]

prints ``bare listening on 127.0.0.1:PORT`` once it serves and runs until
SIGTERM/SIGINT (or, with ``--exit-on-stdin-eof``, until stdin closes).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import signal
import threading
from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from interlock.v1 import events_pb2 as ev
from interlock.v1 import router_pb2, router_pb2_grpc

TOKEN = "tok "
MAX_DELTAS = 1_000_000
RUN_ID = "run_" + "0" * 26
SESSION_ID = "ses_" + "0" * 26
_MODEL_DELTAS = re.compile(r"-k(\d+)$")
_MODEL_PACE = re.compile(r"-p(\d+(?:\.\d+)?)ms")
MAX_PACE_MS = 60_000.0


def deltas_for(model: str, default: int) -> int:
    """K from a model name ending in ``-kK``, else ``default``."""
    match = _MODEL_DELTAS.search(model)
    return min(int(match.group(1)), MAX_DELTAS) if match else default


def _event(seq: int, **fields: object) -> ev.AgentEvent:
    time = Timestamp()
    time.GetCurrentTime()
    return ev.AgentEvent(run_id=RUN_ID, seq=seq, time=time, **fields)  # type: ignore[arg-type]


def pace_for(model: str) -> float | None:
    """Seconds between deltas from a model name with ``-pMms``, else None (unpaced)."""
    match = _MODEL_PACE.search(model)
    return min(float(match.group(1)), MAX_PACE_MS) / 1000 if match else None


@functools.lru_cache(maxsize=16)
def prebuilt_events(deltas: int) -> tuple[ev.AgentEvent, ...]:
    """run_started, ``deltas`` text deltas and a finish, numbered from 1."""
    started = ev.RunStarted(session_id=SESSION_ID, provider="bare", model="bench")
    finish = ev.Finish(
        stop_reason=ev.STOP_REASON_END_TURN,
        usage=ev.Usage(input_tokens=12, output_tokens=deltas),
        session_id=SESSION_ID,
    )
    events = [_event(1, run_started=started)]
    events += [_event(seq, text_delta=ev.TextDelta(text=TOKEN)) for seq in range(2, deltas + 2)]
    events.append(_event(deltas + 2, finish=finish))
    return tuple(events)


class BareRouter(router_pb2_grpc.AgentRouterServicer):
    def __init__(self, default_deltas: int) -> None:
        self._default = default_deltas

    async def Run(
        self,
        request: router_pb2.RunRequest,
        context: grpc.aio.ServicerContext[router_pb2.RunRequest, ev.AgentEvent],
    ) -> AsyncIterator[ev.AgentEvent]:
        events = prebuilt_events(deltas_for(request.model, self._default))
        pace = pace_for(request.model)
        if pace is None:
            for event in events:
                yield event
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        yield events[0]  # run_started, with the first delta as interlockd sends it
        for i, event in enumerate(events[1:-1]):  # delta i is due at start + i * pace
            if (delay := start + i * pace - loop.time()) > 0:
                await asyncio.sleep(delay)
            yield event
        yield events[-1]


def _wait_for_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set ``stop`` once stdin, a pipe from the parent, closes: the parent is gone."""
    while os.read(0, 4096):
        pass
    loop.call_soon_threadsafe(stop.set)


async def serve(host: str, port: int, deltas: int, exit_on_stdin_eof: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_on_stdin_eof:
        threading.Thread(target=_wait_for_eof, args=(loop, stop), daemon=True).start()
    server = grpc.aio.server()
    router_pb2_grpc.add_AgentRouterServicer_to_server(BareRouter(deltas), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"bare listening on {host}:{bound}", flush=True)
    await stop.wait()
    await server.stop(grace=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--deltas", type=int, default=2000, help="K when the model names none")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.deltas, args.exit_on_stdin_eof))


if __name__ == "__main__":
    main()

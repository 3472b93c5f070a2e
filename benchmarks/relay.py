"""The relay: a bare ``grpc.aio`` AgentRouter that only forwards the upstream's deltas.

What a router that does nothing but relay costs on the critical path, so that
``side_by_side.py`` can tell interlockd's own work from the price of being a
gRPC server in front of an HTTP provider at all. ``Run`` opens the fake
upstream's stream (``upstream.py``) with the HTTP client interlockd's
OpenAI-compatible backend uses (one pooled ``aiohttp.ClientSession``, the same
connector settings) and forwards what each read of the stream brings as one
``text_delta`` ``AgentEvent`` (interlockd, coalescing, also sends one event for
the deltas of one read; a paced stream brings one delta a read): a
``run_started`` just before the first, a ``finish`` after the last. Events
carry a ``run_id``, ``seq`` and ``time`` as interlockd's do, so messages are
the same size. Nothing else: no auth, no store, no context, no ledger.

It must stay that thin: every line added here is a line the comparison stops
measuring.

    python benchmarks/relay.py --upstream http://127.0.0.1:PORT/v1

prints ``relay listening on 127.0.0.1:PORT`` once it serves and runs until
SIGTERM/SIGINT (or, with ``--exit-on-stdin-eof``, until stdin closes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator

import aiohttp
import grpc
import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from interlock.v1 import events_pb2 as ev
from interlock.v1 import router_pb2, router_pb2_grpc

RUN_ID = "run_" + "0" * 26
SESSION_ID = "ses_" + "0" * 26


def _event(seq: int, **fields: object) -> ev.AgentEvent:
    time = Timestamp()
    time.GetCurrentTime()
    return ev.AgentEvent(run_id=RUN_ID, seq=seq, time=time, **fields)  # type: ignore[arg-type]


def delta_texts(events: list[bytes]) -> tuple[str, bool]:
    """The text the SSE events carry, and whether ``[DONE]`` was among them."""
    text, done = [], False
    for event in events:
        data = event.removeprefix(b"data: ")
        if data == b"[DONE]":
            done = True
            continue
        for choice in orjson.loads(data).get("choices", ()):
            if content := choice.get("delta", {}).get("content"):
                text.append(content)
    return "".join(text), done


class Relay(router_pb2_grpc.AgentRouterServicer):
    def __init__(self, upstream: str) -> None:
        self._url = upstream.rstrip("/") + "/chat/completions"
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # as interlockd's OpenAI-compatible backend makes it
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=1000, limit_per_host=0, keepalive_timeout=30.0
                ),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=300.0),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def Run(
        self,
        request: router_pb2.RunRequest,
        context: grpc.aio.ServicerContext[router_pb2.RunRequest, ev.AgentEvent],
    ) -> AsyncIterator[ev.AgentEvent]:
        body = orjson.dumps(
            {
                "model": request.model,
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": request.message}],
            }
        )
        seq, buf = 0, b""
        headers = {"content-type": "application/json"}
        async with self._http().post(self._url, data=body, headers=headers) as response:
            if response.status != 200:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"upstream {response.status}")
            while raw := await response.content.readany():
                buf += raw
                *events, buf = buf.split(b"\n\n")  # whole SSE events; the rest waits
                text, done = delta_texts(events)
                if text:
                    if seq == 0:
                        seq += 1
                        started = ev.RunStarted(session_id=SESSION_ID, provider="relay")
                        yield _event(seq, run_started=started)
                    seq += 1
                    yield _event(seq, text_delta=ev.TextDelta(text=text))
                if done:
                    break
        finish = ev.Finish(stop_reason=ev.STOP_REASON_END_TURN, session_id=SESSION_ID)
        yield _event(seq + 1, finish=finish)


def _wait_for_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set ``stop`` once stdin, a pipe from the parent, closes: the parent is gone."""
    while os.read(0, 4096):
        pass
    loop.call_soon_threadsafe(stop.set)


async def serve(host: str, port: int, upstream: str, exit_on_stdin_eof: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_on_stdin_eof:
        threading.Thread(target=_wait_for_eof, args=(loop, stop), daemon=True).start()
    relay = Relay(upstream)
    server = grpc.aio.server()
    router_pb2_grpc.add_AgentRouterServicer_to_server(relay, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"relay listening on {host}:{bound}", flush=True)
    await stop.wait()
    await server.stop(grace=1.0)
    await relay.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:PORT/v1")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.upstream, args.exit_on_stdin_eof))


if __name__ == "__main__":
    main()

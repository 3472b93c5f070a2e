"""A zero-latency OpenAI-compatible upstream for the benchmarks.

``POST .../chat/completions`` answers at once with a streamed chat completion:
K text deltas (``data: {"choices":[{"index":0,"delta":{"content":"tok "}}]}``),
a finish chunk, a usage chunk and ``data: [DONE]``. K comes from the request's
model name (``"bench-k2000"`` streams 2000 deltas) or else from ``--deltas``.
A model name with ``-pMms`` (``"bench-p20ms-k64"``) paces them instead: the
first delta at once, then one every M milliseconds (from the response's start,
so no drift), the finish, usage and ``[DONE]`` chunks with the last delta.
Without it the whole response is written at once, as before.
``GET .../models`` lists one model; anything else is a 404.

Built to stay out of the way of what it feeds: a raw asyncio HTTP/1.1 server
(keep-alive, pipelining, chunked transfer encoding with one HTTP chunk per SSE
event) whose response bodies are pre-built bytes, cached per K and written with
one ``transport.write``, so it does no per-delta work at all.

    python benchmarks/upstream.py [--port 0] [--deltas 2000]

prints ``upstream listening on 127.0.0.1:PORT`` once it accepts connections
and runs until SIGTERM/SIGINT (or, with ``--exit-on-stdin-eof``, until its
parent goes away and stdin closes).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import signal
import threading

TOKEN = "tok "
MAX_DELTAS = 1_000_000
PROMPT_TOKENS = 12
_MODEL_DELTAS = re.compile(rb'"model"\s*:\s*"[^"]*?-k(\d+)"')
_MODEL_PACE = re.compile(rb'"model"\s*:\s*"[^"]*?-p(\d+(?:\.\d+)?)ms[^"]*"')
MAX_PACE_MS = 60_000.0
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_MODELS_BODY = b'{"object":"list","data":[{"id":"bench","object":"model","owned_by":"bench"}]}'


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(payload: object) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return _chunk(f"data: {data}\n\n".encode())


def _delta(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, object]:
    choice: dict[str, object] = {"index": 0, "delta": delta}
    if finish_reason:
        choice["finish_reason"] = finish_reason
    return {"choices": [choice]}


@functools.lru_cache(maxsize=64)
def stream_response(deltas: int) -> bytes:
    """The whole HTTP response streaming ``deltas`` text deltas, built once per K."""
    first = _sse(_delta({"role": "assistant", "content": TOKEN}))
    usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": deltas}
    usage["total_tokens"] = PROMPT_TOKENS + deltas
    body = [first] if deltas else []
    body += [_sse(_delta({"content": TOKEN}))] * max(deltas - 1, 0)
    body += [_sse(_delta({}, "stop")), _sse({"choices": [], "usage": usage}), _sse("[DONE]")]
    return _SSE_HEAD + b"".join(body) + b"0\r\n\r\n"


@functools.lru_cache(maxsize=64)
def paced_pieces(deltas: int) -> tuple[bytes, bytes, bytes]:
    """(head + first delta, one more delta, finish + usage + [DONE] + end) of a paced stream."""
    first = _sse(_delta({"role": "assistant", "content": TOKEN}))
    usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": deltas}
    usage["total_tokens"] = PROMPT_TOKENS + deltas
    tail = _sse(_delta({}, "stop")) + _sse({"choices": [], "usage": usage}) + _sse("[DONE]")
    return _SSE_HEAD + first, _sse(_delta({"content": TOKEN})), tail + b"0\r\n\r\n"


def pace_for(body: bytes) -> float | None:
    """Seconds between deltas from a ``"model": "...-pMms..."``, else None (unpaced)."""
    match = _MODEL_PACE.search(body)
    return min(float(match.group(1)), MAX_PACE_MS) / 1000 if match else None


def _plain_response(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


def deltas_for(body: bytes, default: int) -> int:
    """K from a ``"model": "...-kK"`` in the request body, else ``default``."""
    match = _MODEL_DELTAS.search(body)
    return min(int(match.group(1)), MAX_DELTAS) if match else default


def _chunked_body(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """Decode a chunked request body starting at ``pos``; None while incomplete."""
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        start, end = eol + 2, eol + 2 + size
        if len(buf) < end + 2:
            return None
        if size == 0:  # no trailers are expected
            return b"".join(parts), end + 2
        parts.append(bytes(buf[start:end]))
        pos = end + 2


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse requests as they arrive, answer each at once."""

    def __init__(self, default_deltas: int) -> None:
        self._default = default_deltas
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._paced: asyncio.TimerHandle | None = None  # the next delta of a paced response

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._serve_buffered()

    def _serve_buffered(self) -> None:
        # A paced response in flight holds back pipelined requests until it ends.
        while (
            self._transport is not None
            and self._paced is None
            and (request := self._next_request())
        ):
            method, path, headers, body = request
            pace = pace_for(body) if method == "POST" else None
            if pace is not None and path.split("?", 1)[0].endswith("/chat/completions"):
                close = headers.get("connection", "").lower() == "close"
                self._start_paced(deltas_for(body, self._default), pace, close)
                continue
            self._transport.write(self._respond(method, path, body))
            if headers.get("connection", "").lower() == "close":
                self._transport.close()
                self._transport = None

    def _start_paced(self, deltas: int, pace: float, close: bool) -> None:
        assert self._transport is not None
        first, delta, tail = paced_pieces(deltas)
        loop = asyncio.get_running_loop()
        start = loop.time()
        if deltas <= 1:  # nothing to pace
            self._transport.write(stream_response(deltas))
            if close:
                self._transport.close()
                self._transport = None
            return
        self._transport.write(first)

        def send(i: int) -> None:  # delta i (0-based) is due at start + i * pace
            self._paced = None
            if self._transport is None:
                return
            last = i == deltas - 1
            self._transport.write(delta + tail if last else delta)
            if not last:
                self._paced = loop.call_at(start + (i + 1) * pace, send, i + 1)
            elif close:
                self._transport.close()
                self._transport = None
            else:
                self._serve_buffered()

        self._paced = loop.call_at(start + pace, send, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._paced is not None:
            self._paced.cancel()
            self._paced = None

    def _next_request(self) -> tuple[str, str, dict[str, str], bytes] | None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            decoded = _chunked_body(self._buf, end + 4)
            if decoded is None:
                return None
            body, consumed = decoded
        else:
            consumed = end + 4 + int(headers.get("content-length", "0"))
            if len(self._buf) < consumed:
                return None
            body = bytes(self._buf[end + 4 : consumed])
        del self._buf[:consumed]
        return method, path, headers, body

    def _respond(self, method: str, path: str, body: bytes) -> bytes:
        path = path.split("?", 1)[0]
        if method == "POST" and path.endswith("/chat/completions"):
            return stream_response(deltas_for(body, self._default))
        if method == "GET" and path.endswith("/models"):
            return _plain_response("200 OK", _MODELS_BODY)
        return _plain_response("404 Not Found", b'{"error":{"message":"not found"}}')


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
    server = await loop.create_server(
        lambda: UpstreamProtocol(deltas), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"upstream listening on {host}:{bound}", flush=True)
    async with server:
        await stop.wait()


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

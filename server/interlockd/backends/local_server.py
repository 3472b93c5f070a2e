"""Launcher of the local model server: llama.cpp's ``llama-server`` embedded in xllamacpp.

Run as a child process by :class:`interlockd.backends.local.LocalModelServer`::

    python -m interlockd.backends.local_server --model PATH --host 127.0.0.1 \\
        --port 0 --ctx 2048 --threads 1

It owns nothing but the server's parameters and lifetime. The protocol with
its parent:

- once the model is loaded and the server listens, one line on stdout:
  ``listening http://HOST:PORT`` (``--port 0`` lets the OS pick a free port,
  so no other process can take it between choosing and binding);
- it exits on SIGTERM or SIGINT, and when its stdin reaches end-of-file —
  which happens when the parent dies, so a killed daemon leaves no orphan;
- llama.cpp logs to stderr; a failure to start exits with status 2.

It must stay light: it imports neither the daemon nor anything the daemon
configures, only xllamacpp.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m interlockd.backends.local_server",
        description="Serve one GGUF model over an OpenAI-compatible HTTP API.",
    )
    parser.add_argument("--model", required=True, help="path of the .gguf file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ctx", type=int, default=2048, help="context size in tokens")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for inference")
    parser.add_argument("--parallel", type=int, default=1, help="requests decoded at once")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before the (slow) model load so an early SIGTERM is honoured.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def watch_parent() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside the buffered
        # reader holds its lock, and interpreter shutdown then aborts.
        while os.read(0, 4096):
            pass  # EOF: the parent closed the pipe or died
        stop.set()

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx * args.parallel  # llama.cpp splits n_ctx between the slots
    params.n_parallel = args.parallel
    # One thread is fastest on small machines: more contend with the daemon.
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.n_gpu_layers = 0
    params.use_jinja = True  # the model's own chat template, from the GGUF
    params.ui = False
    params.cache_ram_mib = 256  # the prompt cache; the default (8 GiB) is sized for big models
    try:
        server = xllamacpp.Server(params)  # returns once loaded and listening
    except RuntimeError as exc:
        print(f"local model server failed to start: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"listening {server.listening_address}", flush=True)
    stop.wait()
    del server  # stops llama.cpp's threads and closes the socket
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A tiny runtime server for the local compute provider's tests.

Run as ``python runtime.py --port PORT [--unhealthy] [--ignore-term] [--spawn-child]
[--start-delay SECONDS]``. It serves, on 127.0.0.1:

- ``GET /health``: 200 (503 with ``--unhealthy`` or after ``POST /freeze``);
- ``GET /counter`` and ``POST /counter`` (increment): a count kept in the file
  ``counter`` of its working directory, so kept state is observable;
- ``GET /info``: its pid, working directory, HOME, PORT, ``RUNTIME_TOKEN``, the
  names of its environment variables, ``config.json``'s text and its child's pid.

It writes its pid to ``runtime.pid`` in its working directory, and refuses to
start (status 3, a message on stderr) while a file ``crash-on-start`` is there.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

lock = threading.Lock()
frozen = threading.Event()
state: dict[str, Any] = {"child_pid": None, "unhealthy": False}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            healthy = not state["unhealthy"] and not frozen.is_set()
            self.reply(200 if healthy else 503, {"ok": healthy})
        elif self.path == "/counter":
            with lock:
                self.reply(200, {"count": read_count()})
        elif self.path == "/info":
            config = Path("config.json")
            self.reply(
                200,
                {
                    "pid": os.getpid(),
                    "cwd": os.getcwd(),
                    "home": os.environ.get("HOME"),
                    "port": os.environ.get("PORT"),
                    "token": os.environ.get("RUNTIME_TOKEN"),
                    "env_keys": sorted(os.environ),
                    "config": config.read_text() if config.exists() else None,
                    "child_pid": state["child_pid"],
                },
            )
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path == "/counter":
            with lock:
                count = read_count() + 1
                Path("counter").write_text(str(count))
            self.reply(200, {"count": count})
        elif self.path == "/freeze":
            frozen.set()
            self.reply(200, {"frozen": True})
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests read this process's output for errors only


def read_count() -> int:
    counter = Path("counter")
    return int(counter.read_text()) if counter.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--unhealthy", action="store_true")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--spawn-child", action="store_true")
    parser.add_argument("--start-delay", type=float, default=0.0)
    args = parser.parse_args()
    if Path("crash-on-start").exists():
        print("refusing to start: crash-on-start is present", file=sys.stderr, flush=True)
        return 3
    Path("runtime.pid").write_text(str(os.getpid()))
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        state["child_pid"] = child.pid
    state["unhealthy"] = args.unhealthy
    time.sleep(args.start_delay)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"serving on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A real ``interlockd serve`` child process to fuzz, in front of the OpenAI fake.

Synchronous on purpose (Hypothesis drives plain functions): the fake runs on
an event loop of its own in a thread, the daemon in a child process whose log
(stderr, JSON lines) goes to a file. :meth:`ChildDaemon.problems` reads what
the daemon logged since the last look and returns every line that shows a
defect: a traceback, an error-level line, or a line that is not structured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from tests.daemon.process import write_config
from tests.fakes.openai import FakeOpenAI

_START_SECONDS = 60


class FakeInThread:
    """The OpenAI fake served by an event loop in a background thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.fake = FakeOpenAI()

    def start(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.__aenter__(), self._loop).result(30)
        return self.fake.base_url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.__aexit__(None, None, None), self._loop).result(
            30
        )
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


class ChildDaemon:
    """``interlockd serve --bootstrap`` as a child process; its log in ``log_path``."""

    def __init__(self, directory: Path, providers: dict[str, dict[str, Any]], **top: Any) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.config = write_config(
            directory / "interlockd.toml", directory / "data", providers, **top
        )
        self.data_dir = directory / "data"
        self.log_path = directory / "interlockd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.api_key = ""
        self.operator_key = ""
        self._log_offset = 0
        self._drain: threading.Thread | None = None

    def start(self) -> ChildDaemon:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "interlockd.cli", "serve", "--config", str(self.config)),
                    "--bootstrap",
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                # The daemon reads INTERLOCK_* as settings: the fuzz's own knobs and a
                # developer's shell must not configure it.
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")},
                    "PYTHONUNBUFFERED": "1",
                },
            )
        ready: Future[None] = Future()

        def read_stdout() -> None:
            assert self.proc is not None
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:  # drained to the end: a full pipe would block the child
                line = raw.decode(errors="replace")
                if "INTERLOCK_API_KEY=" in line:
                    self.api_key = line.split("=", 1)[1].split()[0]
                elif "INTERLOCK_OPERATOR_KEY=" in line:
                    self.operator_key = line.split("=", 1)[1].split()[0]
                elif line.startswith("interlockd listening on") and not ready.done():
                    self.port = int(line.rsplit(":", 1)[1])
                    ready.set_result(None)
            if not ready.done():
                ready.set_exception(RuntimeError(f"interlockd exited: {self.logs()[-3000:]}"))

        self._drain = threading.Thread(target=read_stdout, daemon=True)
        self._drain.start()
        ready.result(_START_SECONDS)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def problems(self) -> list[str]:
        """Lines logged since the last call that show a defect."""
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            chunk = f.read()
        # Only whole lines: a line being written is read next time.
        end = chunk.rfind(b"\n") + 1
        self._log_offset += end
        return [
            line
            for line in chunk[:end].decode(errors="replace").splitlines()
            if line.strip() and log_problem(line)
        ]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._drain is not None:
            self._drain.join(10)
        with contextlib.suppress(Exception):
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        return self.proc.returncode


def log_problem(line: str) -> bool:
    """True if a line of the daemon's log shows a defect."""
    if "Traceback (most recent call last)" in line:
        return True
    try:
        record = json.loads(line)
    except ValueError:
        return True  # every line the daemon writes is a JSON object
    if not isinstance(record, dict):
        return True
    return (
        record.get("level") in ("error", "critical")
        or "exception" in record
        or record.get("event") == "handler_crashed"
    )

"""A live interlockd for the client test suites written in other languages.

The TypeScript and Go suites start this script as a subprocess (with the
project's virtualenv Python, from any working directory). It starts the
scriptable OpenAI-compatible fake of ``tests/fakes/openai.py``, the GitHub fake
of ``tests/fakes/github.py`` and a real interlockd using both, all on 127.0.0.1
with free ports and a temporary data directory. The daemon's ``github`` app
points at the GitHub fake and its public URL is its own HTTP side, so a connect
flow completes through its real callback. The harness bootstraps an operator
key and a sandbox with an API key, and prints one JSON line describing them::

    {"address": "127.0.0.1:PORT", "base_url": "http://127.0.0.1:PORT",
     "api_key": "...", "operator_key": "...", "sandbox_id": "sbx_...",
     "provider": "fake", "model": "fake-model",
     "public_url": "http://127.0.0.1:HTTP_PORT", "github_url": "http://127.0.0.1:PORT"}

Then it answers commands, one JSON object per line on stdin, with one JSON
line each on stdout (``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``):

``{"op": "enqueue", "replies": [REPLY, ...]}``
    Script the fake's next answers. A reply is a list of steps named after
    the :class:`~tests.fakes.openai.Reply` builder methods, with their
    arguments: ``["text", "Hello ", "there."]``, ``["tool_call", "name",
    "{\\"q\\": 1}"]``, ``["usage", 30, 2]``, ``["delay", 0.1]``, ``["stall"]``,
    ... A reply whose first step is ``["error", 503, "message"]`` is an HTTP
    error. Unscripted requests get the fake's default answer, the four text
    deltas "Hello", " from", " the", " fake.".
``{"op": "stats"}``
    ``{"requests": N, "disconnects": N}``: what the fake has seen so far.
``{"op": "requests"}``
    ``{"requests": [BODY, ...]}``: the JSON bodies the daemon sent upstream.
``{"op": "wait_disconnects", "count": N}``
    Answers once N upstream calls were abandoned by the daemon mid-answer.
``{"op": "wait_run", "request_id": ID}``
    Answers once the run started with that ``request_id`` (in the bootstrap
    sandbox, or ``"sandbox_id"``) has ended, with its stored ``status``
    (``finished``, ``failed``, ``cancelled``) and ``error_code``.
``{"op": "approve", "authorize_url": URL}``, ``{"op": "deny", "authorize_url": URL}``
    The end user's browser: opens a Connect response's authorize URL at the
    GitHub fake, where the signed-in user (``octocat``) grants or declines
    access, then follows the redirect to the daemon's callback. Answers with
    the callback page's HTTP ``status`` (200 connected, 400 refused) once the
    daemon has handled it.
``{"op": "stop"}``, ``{"op": "start"}``
    Stop the daemon as a shutdown past its grace does (runs in flight end
    with an ``error`` event, ``UNAVAILABLE``, retryable), then start it again
    on the same data directory and the same ports, so a client keeps its
    address and a retry with a run's ``request_id`` resumes it. Commands that
    read the daemon (``wait_run``) need it started.

It exits when stdin closes, so it never outlives the suite that started it.
Logs (errors only) go to stderr; stdout carries only the protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
# gRPC's C core logs connection-level notices (a client's GOAWAY) at its
# default verbosity; the suites' output should show only their own failures.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from interlockd import logs  # noqa: E402  (needs the repository on sys.path first)
from interlockd.config import load_settings  # noqa: E402
from interlockd.daemon import Daemon, bootstrap  # noqa: E402
from tests.fakes.github import FakeGitHub  # noqa: E402
from tests.fakes.openai import FakeOpenAI, Reply  # noqa: E402

PROVIDER = "fake"
MODEL = "fake-model"
# How long a wait_* command waits before answering that it did not happen.
WAIT_SECONDS = 10.0
CALLBACK_PATH = "/v1/integrations/callback"
# Reply builder methods a script may call; anything else is refused.
STEPS = frozenset(
    {"text", "reasoning", "tool_call", "usage", "finish", "delay", "stall", "disconnect", "eof"}
)


def build_reply(steps: list[list[Any]]) -> Reply:
    """A fake Reply from its JSON description (see the module docstring)."""
    if steps and steps[0][0] == "error":
        _, status, message = steps[0]
        return Reply.error(int(status), str(message))
    reply = Reply()
    for name, *args in steps:
        if name not in STEPS:
            raise ValueError(f"unknown reply step {name!r}; one of {sorted(STEPS)}")
        getattr(reply, name)(*args)
    return reply


def free_port() -> int:
    """A port free on 127.0.0.1 now: the daemon's public URL must be known before it starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Harness:
    """The fakes, the daemon and the answers to commands."""

    def __init__(
        self,
        fake: FakeOpenAI,
        github: FakeGitHub,
        daemon: Daemon,
        sandbox_id: str,
        public_url: str,
        restart: Callable[[], Daemon] | None = None,
    ) -> None:
        self.fake = fake
        self.github = github
        self.daemon = daemon
        # Builds the daemon anew on the same data directory and ports (stop/start).
        self.restart = restart
        self.sandbox_id = sandbox_id
        self.callback_url = public_url + CALLBACK_PATH

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "enqueue":
            self.fake.enqueue(*(build_reply(r) for r in command["replies"]))
            return {}
        if op == "stats":
            return {"requests": len(self.fake.requests), "disconnects": self.fake.disconnects}
        if op == "requests":
            return {"requests": [r.body for r in self.fake.requests]}
        if op == "wait_disconnects":
            await self.fake.wait_for_disconnects(int(command["count"]))
            return {"disconnects": self.fake.disconnects}
        if op == "wait_run":
            return await self._wait_run(
                str(command["request_id"]), str(command.get("sandbox_id") or self.sandbox_id)
            )
        if op in ("approve", "deny"):
            return await self._authorize(str(command["authorize_url"]), approve=op == "approve")
        if op == "stop":
            await self.daemon.stop(grace=0, announce=0)
            return {}
        if op == "start":
            if self.restart is None:
                raise ValueError("this harness cannot restart its daemon")
            daemon = self.restart()
            await daemon.start()
            self.daemon = daemon
            return {}
        raise ValueError(f"unknown op {op!r}")

    async def _authorize(self, authorize_url: str, *, approve: bool) -> dict[str, Any]:
        decide = self.github.approve if approve else self.github.deny
        location = await decide(authorize_url)
        if not location.startswith(self.callback_url + "?"):
            raise ValueError(f"GitHub redirected to {location!r}, not the daemon's callback")
        async with httpx.AsyncClient(trust_env=False, timeout=WAIT_SECONDS) as browser:
            page = await browser.get(location)
        return {"status": page.status_code}

    async def _wait_run(self, request_id: str, sandbox_id: str) -> dict[str, Any]:
        store = self.daemon.store
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                run = await store.find_run_by_request_id(sandbox_id, request_id)
                if run is not None and run.status != "running":
                    return {"status": run.status, "error_code": run.error_code}
                await asyncio.sleep(0.02)


async def serve(out: TextIO) -> None:
    def send(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    with tempfile.TemporaryDirectory(prefix="interlock-live-") as tmp:
        async with FakeOpenAI() as fake, FakeGitHub() as github:
            http_port = free_port()
            public_url = f"http://127.0.0.1:{http_port}"
            github.register_redirect_uri(public_url + CALLBACK_PATH)
            overrides: dict[str, Any] = {
                "listen": "127.0.0.1:0",
                "http_listen": f"127.0.0.1:{http_port}",
                "data_dir": tmp,
                "default_provider": PROVIDER,
                "log_level": "error",
                "shutdown_announce_seconds": 0,
                "shutdown_grace_seconds": 0,
                # One event per upstream delta, so suites can count them.
                "runs": {"coalesce_deltas": False},
                "providers": {
                    PROVIDER: {
                        "kind": "openai",
                        "base_url": fake.base_url,
                        "default_model": MODEL,
                        "api_key": "sk-fake",
                    }
                },
                "integrations": {
                    # The suites register MCP servers on 127.0.0.1 (refused by default).
                    "mcp_allowed_networks": ["127.0.0.0/8"],
                    "public_url": public_url,
                    "github": {
                        "client_id": github.client_id,
                        "client_secret": github.client_secret,
                        "web_base_url": github.base_url,
                        "api_base_url": github.base_url,
                    },
                },
            }
            settings = load_settings(env={}, overrides=overrides)
            logs.configure(settings.log_level, settings.log_format)
            daemon = Daemon(settings)
            port = await daemon.start()

            def restart() -> Daemon:
                """The daemon again, on the port its first start bound."""
                again = {**overrides, "listen": f"127.0.0.1:{port}"}
                return Daemon(load_settings(env={}, overrides=again))

            harness: Harness | None = None
            try:
                creds = await bootstrap(daemon.store)
                if not (creds.sandbox_id and creds.api_key and creds.operator_key):
                    raise RuntimeError("bootstrap found a store that was not empty")
                harness = Harness(fake, github, daemon, creds.sandbox_id, public_url, restart)
                send(
                    {
                        "address": f"127.0.0.1:{port}",
                        "base_url": f"http://127.0.0.1:{port}",
                        "api_key": creds.api_key,
                        "operator_key": creds.operator_key,
                        "sandbox_id": creds.sandbox_id,
                        "provider": PROVIDER,
                        "model": MODEL,
                        "public_url": public_url,
                        "github_url": github.base_url,
                    }
                )
                while line := await asyncio.to_thread(sys.stdin.readline):
                    if not line.strip():
                        continue
                    try:
                        answer = {"ok": True, **await harness.handle(json.loads(line))}
                    except Exception as exc:
                        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    send(answer)
            finally:
                await (harness.daemon if harness else daemon).stop(grace=0, announce=0)


def main() -> None:
    # The protocol gets its own copy of stdout; anything else that writes to
    # stdout (a library's print) lands on stderr instead of corrupting it.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    asyncio.run(serve(out))


if __name__ == "__main__":
    main()

"""Logs never print secrets, and every line the daemon's process writes is structured."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from aiohttp import web

from interlock.v1 import integrations_pb2 as ipb
from interlock.v1 import integrations_pb2_grpc, router_pb2, router_pb2_grpc
from interlockd import logs
from tests.daemon.process import DaemonProcess, write_config
from tests.fakes.openai import FakeOpenAI, Reply


@pytest.fixture
def configured() -> Iterator[None]:
    """Undo what logs.configure does to this process (pytest's own handlers, the hooks)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook
    libraries = {name: logging.getLogger(name).level for name in logs.LIBRARY_LOGGERS}
    try:
        yield
    finally:
        for name, library_level in libraries.items():
            logging.getLogger(name).setLevel(library_level)
        structlog.reset_defaults()
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.excepthook, threading.excepthook = hooks


@pytest.mark.usefixtures("configured")
def test_secret_fields_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """Fields named like secrets are redacted in rendered log lines; ids and counts are not."""
    logs.configure("info", "json")
    structlog.get_logger("t").info(
        "event", api_key="ilk_abc", authorization="Bearer x", key_id="key_1", input_tokens=3
    )
    line = capsys.readouterr().err
    assert "ilk_abc" not in line
    assert "Bearer x" not in line
    assert '"key_id": "key_1"' in line
    assert '"input_tokens": 3' in line


# ---- the daemon process: every line it writes ------------------------------------

#: A string only the garbage MCP server sends: it must never reach the log.
REMOTE_MARKER = "remote-body-7f3a9c"


@pytest.fixture
async def garbage_mcp() -> AsyncIterator[str]:
    """An "MCP server" that answers every request 200 application/json with a body that is
    no JSON-RPC message: the mcp library logs a parse error quoting it."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"not": "jsonrpc", "echo": REMOTE_MARKER * 3})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/mcp/"
    finally:
        await runner.cleanup()


async def test_every_line_the_daemon_process_writes_is_structured(
    tmp_path: Path, fake_a: FakeOpenAI, garbage_mcp: str
) -> None:
    """With gRPC tracing asked for by the environment, an MCP server answering garbage and
    a client leaving mid-stream, every stderr line is a JSON record (library records
    among them) holding no remote body, and stdout holds only the start banner."""
    config = write_config(
        tmp_path / "interlock.toml",
        tmp_path / "data",
        {"fake": {"kind": "openai", "base_url": fake_a.base_url, "default_model": "m"}},
        default_provider="fake",
        shutdown_announce_seconds=0,
    )
    with config.open("a") as out:
        out.write('[integrations]\nmcp_allowed_networks = ["127.0.0.0/8"]\n')
    proc = DaemonProcess(config, env={"GRPC_VERBOSITY": "DEBUG", "GRPC_TRACE": "http,api"})
    await proc.start()
    try:
        async with proc.channel() as channel:
            await integrations_pb2_grpc.IntegrationsStub(channel).AddMcpServer(
                ipb.AddMcpServerRequest(name="junk", url=garbage_mcp, end_user_id="u"),
                metadata=proc.metadata(),
            )
            fake_a.enqueue(Reply().text("fine without junk"))
            router = router_pb2_grpc.AgentRouterStub(channel)
            events = [
                e
                async for e in router.Run(
                    router_pb2.RunRequest(end_user_id="u", message="hi"),
                    metadata=proc.metadata(),
                )
            ]
            assert events[-1].HasField("finish")
            # A client that goes away mid-stream.
            fake_a.enqueue(Reply().text("never read").stall())
            call = router.Run(
                router_pb2.RunRequest(end_user_id="u", message="bye"), metadata=proc.metadata()
            )
            await call.read()
            call.cancel()
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0
        assert proc.proc is not None
        assert proc.proc.stdout is not None
        rest = (await proc.proc.stdout.read()).decode().splitlines()
    finally:
        await proc.kill()
    records = []
    for line in proc.logs().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line!r}")
    assert REMOTE_MARKER not in proc.logs()
    library = [r for r in records if str(r.get("logger", "")).startswith("mcp")]
    assert library, "the garbage MCP server provoked no library record"
    assert all("timestamp" in r and "level" in r for r in records)
    banner = [*proc.banner, *rest]
    assert banner[-1].startswith("interlockd listening on")
    assert rest == []
    assert all(
        line == "" or line.startswith(("Interlock is set up", "  export ", "Then: "))
        for line in banner[:-1]
    ), banner


@pytest.mark.usefixtures("configured")
def test_library_records_keep_no_exception_text(capsys: pytest.CaptureFixture[str]) -> None:
    """A library's error record keeps its logger's name, its message (cut) and the exception's
    type and frames, never the exception's text; below warning a library is not logged."""
    logs.configure("info", "json")
    try:
        raise ValueError(f"body was {REMOTE_MARKER}")
    except ValueError:
        logging.getLogger("mcp.client.streamable_http").exception("Error parsing JSON")
    logging.getLogger("httpx").warning("x" * 1000)
    logging.getLogger("httpx").info("below the library level")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert REMOTE_MARKER not in json.dumps(lines)
    error, long = lines
    assert error["logger"] == "mcp.client.streamable_http"
    assert error["level"] == "error"
    assert error["event"] == "Error parsing JSON"
    assert error["exception_type"] == "builtins.ValueError"
    assert "test_logs.py" in error["exception"]
    assert "[text withheld]" in error["exception"]
    assert len(long["event"]) <= logs.LIBRARY_MESSAGE_CHARS + 1


@pytest.mark.usefixtures("configured")
def test_debug_keeps_library_exception_text(capsys: pytest.CaptureFixture[str]) -> None:
    """At log_level debug a library record keeps its exception's text, for diagnosis."""
    logs.configure("debug", "json")
    try:
        raise ValueError("the detail")
    except ValueError:
        logging.getLogger("mcp").exception("failed")
    (line,) = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert "ValueError: the detail" in line["exception"]

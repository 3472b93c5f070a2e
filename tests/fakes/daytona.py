"""A scriptable loopback fake of Daytona's REST API, as the official ``daytona`` SDK drives it.

It serves the sandbox API under ``/api`` and, at the ``toolboxProxyUrl`` it hands
out (``/toolbox``), the toolbox routes the SDK sends exec, process sessions and
file uploads to; each sandbox's ports are reachable through preview URLs
(``/preview/{id}/{port}/...``) that reach the processes really running in it::

    async with FakeDaytona(api_key="dtn_test") as fake:  # sandboxes' disks in a temp dir
        config = DaytonaConfig(
            api_key="dtn_test", api_url=fake.api_url, target="us", use_deprecated_polling=True
        )
        async with AsyncDaytona(config) as daytona:
            sandbox = await daytona.create(CreateSandboxFromSnapshotParams(labels={"a": "b"}))
            ...
        assert fake.only_sandbox.labels["code-toolbox-language"] == "python"

The sandbox API (bodies and paths as the generated ``daytona_api_client_async``
sends them; every answer is a 200, as the generated client only reads 200 bodies):

- ``POST /api/sandbox`` (camelCase body, checked strictly: an unknown key, a wrong
  type, a name in use, an unknown target or snapshot is a 400/409 naming it);
  ``GET /api/sandbox/{idOrName}``; ``GET /api/sandbox?labels=<json>`` →
  ``{items, nextCursor}`` (``limit`` and ``cursor`` paginate);
  ``DELETE /api/sandbox/{idOrName}``;
- ``POST /api/sandbox/{idOrName}/start|stop|archive``: a state machine with the
  transitional states (creating, starting, restoring, stopping, archiving,
  destroying). A transition completes after :attr:`FakeDaytona.transition_reads`
  reads of the sandbox (``GET``), so a client that never polls never sees it end;
  :attr:`FakeDaytona.held` stalls the named operations, :meth:`FakeDaytona.fail_transition`
  ends the next one in ``error``. Start is allowed from stopped or archived, stop
  from started, archive from stopped only; anything else is a 400.
- ``GET /api/sandbox/{idOrName}/ports/{port}/preview-url`` → ``{sandboxId, url, token}``
  while started; the token changes on every start, and the preview URL refuses an
  old one (401).
- ``POST /api/sandbox/{id}/last-activity`` (201, no body) and
  ``GET /api/sandbox/{id}/toolbox-proxy-url``.

The toolbox (``{toolboxProxyUrl}/{id}/...``, while the sandbox is started):
process sessions (create 201, list, get, delete 204), ``exec`` in a session, a
command's state and its logs, ``work-dir`` / ``user-home-dir``, and
``files/bulk-upload`` (multipart). The sandbox's processes are real: each
sandbox's disk is a directory on this host (:attr:`FakeSandbox.disk`, its
working and home directory; kept across stop and archive, removed on delete),
and a command runs as ``bash -c <command>`` there, in a process group of its
own, with ``HOME`` the disk, ``PATH`` and the sandbox's create-time ``env``. A
``runAsync`` command keeps running (the runtime; its output goes to a log the
``logs`` route reads); a synchronous one is waited for. Stopping, archiving,
deleting or failing a sandbox kills its processes (SIGKILL): what they kept in
memory is gone, what they wrote to the disk is not. Sandboxes share this host's
network, so two runtimes need two ports.

Preview URLs (``/preview/{id}/{port}/...``) forward to ``127.0.0.1:{port}`` —
whatever the sandbox's processes serve there — while the sandbox is started and
with the current preview token in ``x-daytona-preview-token`` (unless the
sandbox is public); nothing listening is a 502.

Time: :attr:`FakeDaytona.clock` is fake seconds, moved by :meth:`FakeDaytona.advance`:
a started sandbox with a non-zero ``autoStopInterval`` (minutes) stops once that
long passed since its last activity (an API call on it or preview traffic;
processes inside do not count); a stopped one archives after ``autoArchiveInterval``
and is deleted after ``autoDeleteInterval`` (when not negative).

Every API and toolbox request needs ``Authorization: Bearer <api_key>``. Failures are scripted per
operation with :meth:`FakeDaytona.fail` (NestJS's envelope ``{statusCode, message,
error}``). Every request is recorded (:attr:`FakeDaytona.requests`); the
``wait_for_*`` helpers give up after a bounded time instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import ipaddress
import itertools
import os
import re
import secrets
import shutil
import signal
import tempfile
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Self

import aiohttp
import orjson
from aiohttp import web

__all__ = [
    "CODE_TOOLBOX_LANGUAGE_LABEL",
    "DEFAULT_TARGET",
    "ORGANIZATION_ID",
    "PREVIEW_TOKEN_HEADER",
    "WAIT_LIMIT",
    "FakeCommand",
    "FakeDaytona",
    "FakeProcessSession",
    "FakeSandbox",
    "Operation",
    "RecordedRequest",
]

ORGANIZATION_ID = "org-interlock-test"
DEFAULT_TARGET = "us"
CODE_TOOLBOX_LANGUAGE_LABEL = "code-toolbox-language"
PREVIEW_TOKEN_HEADER = "x-daytona-preview-token"
# A wait_for_* that takes longer than this has failed: report it instead of hanging.
WAIT_LIMIT = 10.0
# Fake time starts here (only for the timestamps the API shows).
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# What autoArchiveInterval 0 means: Daytona's maximum (not published in the SDK;
# 30 days here).
MAX_AUTO_ARCHIVE_MINUTES = 30 * 24 * 60
# A synchronous command that runs longer than this is killed (exit code 124).
SYNC_COMMAND_LIMIT = 60.0
# Hop-by-hop headers a proxy does not forward.
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)

Operation = Literal[
    "create",
    "list",
    "get",
    "delete",
    "start",
    "stop",
    "archive",
    "preview_url",
    "last_activity",
    "toolbox_proxy_url",
    "session_create",
    "session_list",
    "session_get",
    "session_delete",
    "session_exec",
    "command_get",
    "command_logs",
    "work_dir",
    "upload",
    "preview",
]

_SID = r"(?P<sid>[^/]+)"
_ROUTE_TABLE: list[tuple[str, str, Operation]] = [
    ("POST", r"/api/sandbox", "create"),
    ("GET", r"/api/sandbox", "list"),
    ("GET", rf"/api/sandbox/{_SID}", "get"),
    ("DELETE", rf"/api/sandbox/{_SID}", "delete"),
    ("POST", rf"/api/sandbox/{_SID}/start", "start"),
    ("POST", rf"/api/sandbox/{_SID}/stop", "stop"),
    ("POST", rf"/api/sandbox/{_SID}/archive", "archive"),
    ("GET", rf"/api/sandbox/{_SID}/ports/(?P<port>\d+)/preview-url", "preview_url"),
    ("POST", rf"/api/sandbox/{_SID}/last-activity", "last_activity"),
    ("GET", rf"/api/sandbox/{_SID}/toolbox-proxy-url", "toolbox_proxy_url"),
    ("POST", rf"/toolbox/{_SID}/process/session", "session_create"),
    ("GET", rf"/toolbox/{_SID}/process/session", "session_list"),
    ("GET", rf"/toolbox/{_SID}/process/session/(?P<session>[^/]+)", "session_get"),
    ("DELETE", rf"/toolbox/{_SID}/process/session/(?P<session>[^/]+)", "session_delete"),
    ("POST", rf"/toolbox/{_SID}/process/session/(?P<session>[^/]+)/exec", "session_exec"),
    (
        "GET",
        rf"/toolbox/{_SID}/process/session/(?P<session>[^/]+)/command/(?P<command>[^/]+)",
        "command_get",
    ),
    (
        "GET",
        rf"/toolbox/{_SID}/process/session/(?P<session>[^/]+)/command/(?P<command>[^/]+)/logs",
        "command_logs",
    ),
    ("GET", rf"/toolbox/{_SID}/(?:work-dir|user-home-dir)", "work_dir"),
    ("POST", rf"/toolbox/{_SID}/files/bulk-upload", "upload"),
    ("*", rf"/preview/{_SID}/(?P<port>\d+)(?P<tail>/.*)?", "preview"),
]
_ROUTES = [(method, re.compile(pattern), operation) for method, pattern, operation in _ROUTE_TABLE]

# The CreateSandbox body: its camelCase keys and what each must be.
_CREATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "snapshot": str,
    "user": str,
    "env": dict,
    "labels": dict,
    "public": bool,
    "networkBlockAll": bool,
    "kvm": bool,
    "networkAllowList": str,
    "domainAllowList": str,
    "outboundProxyUrl": str,
    "otelEndpointOverride": str,
    "target": str,
    "cpu": int,
    "gpu": int,
    "gpuType": list,
    "spot": bool,
    "memory": int,
    "disk": int,
    "autoStopInterval": int,
    "autoPauseInterval": int,
    "autoArchiveInterval": int,
    "autoDeleteInterval": int,
    "ttlMinutes": int,
    "queueTimeout": int,
    "volumes": list,
    "buildInfo": dict,
    "linkedSandbox": str,
    "secrets": list,
}
_LIST_PARAMS = frozenset(
    {
        "cursor",
        "limit",
        "id",
        "name",
        "labels",
        "includeErroredDeleted",
        "includeWarm",
        "states",
        "snapshots",
        "regionIds",
        "sandboxClasses",
        "sort",
        "order",
    }
)
_LANGUAGES = frozenset({"python", "typescript", "javascript"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
# Where each operation's transition goes: (transitional state, final state).
_TRANSITIONS: dict[str, tuple[str, str]] = {
    "create": ("creating", "started"),
    "start": ("starting", "started"),
    "restore": ("restoring", "started"),
    "stop": ("stopping", "stopped"),
    "archive": ("archiving", "archived"),
    "delete": ("destroying", "destroyed"),
}
TransitionName = Literal["create", "start", "restore", "stop", "archive", "delete"]

_command_ids = itertools.count(1)


# ---- the sandboxes -----------------------------------------------------------------


@dataclass(eq=False)
class FakeCommand:
    """A command run in a process session, as a real process on this host."""

    id: str
    command: str
    run_async: bool
    log: Path  # its stdout and stderr
    exit_code: int | None = None  # None while it runs
    process: asyncio.subprocess.Process | None = None

    @property
    def output(self) -> str:
        try:
            return self.log.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def resource(self) -> dict[str, Any]:
        return {"id": self.id, "command": self.command, "exitCode": self.exit_code}


@dataclass(eq=False)
class FakeProcessSession:
    """A toolbox process session and the commands it ran."""

    id: str
    commands: list[FakeCommand] = field(default_factory=list)

    def resource(self) -> dict[str, Any]:
        return {"sessionId": self.id, "commands": [c.resource() for c in self.commands]}


@dataclass(eq=False)
class _Pending:
    operation: TransitionName
    final: str
    reads_left: int
    error_reason: str | None = None


@dataclass(eq=False)
class FakeSandbox:
    """One sandbox and everything that happened to it."""

    id: str
    name: str
    target: str
    snapshot: str | None
    labels: dict[str, str]
    env: dict[str, str]
    public: bool
    network_block_all: bool
    network_allow_list: str | None
    auto_stop_interval: int  # minutes, 0: never
    auto_archive_interval: int  # minutes
    auto_delete_interval: int  # minutes, negative: never
    created_at: float  # fake clock
    disk: Path  # its working and home directory, on this host
    state: str = "creating"
    last_activity: float = 0.0
    stopped_at: float | None = None
    error_reason: str | None = None
    preview_token: str = ""  # of the current start; empty while not started
    preview_tokens: list[str] = field(default_factory=list)  # every one handed out, in order
    boots: int = 0  # times it reached started
    sessions: dict[str, FakeProcessSession] = field(default_factory=dict)
    transitions: list[str] = field(default_factory=list)  # operations begun, in order
    auto_stops: int = 0  # times the fake clock stopped it
    _pending: _Pending | None = None

    @property
    def files(self) -> dict[str, bytes]:
        """Its disk's files (``{relative path: content}``): kept across stop and archive."""
        if not self.disk.is_dir():
            return {}
        return {
            path.relative_to(self.disk).as_posix(): path.read_bytes()
            for path in sorted(self.disk.rglob("*"))
            if path.is_file()
        }

    @property
    def runtime_running(self) -> bool:
        """Whether a started sandbox has an async command running (the runtime)."""
        return self.state == "started" and any(
            command.run_async and command.exit_code is None
            for session in self.sessions.values()
            for command in session.commands
        )

    @property
    def runtime_pids(self) -> list[int]:
        """The pids of its running async commands."""
        return [
            c.process.pid
            for c in self.commands
            if c.run_async and c.exit_code is None and c.process is not None
        ]

    @property
    def commands(self) -> list[FakeCommand]:
        """Every command of its current sessions, in order."""
        return [c for s in self.sessions.values() for c in s.commands]

    def _stamp(self, at: float | None) -> str | None:
        return None if at is None else (_EPOCH + timedelta(seconds=at)).isoformat()

    def dto(self, toolbox_url: str, *, full: bool = True) -> dict[str, Any]:
        """The sandbox as ``GET /sandbox/{id}`` (full) or a list item shows it."""
        item: dict[str, Any] = {
            "id": self.id,
            "organizationId": ORGANIZATION_ID,
            "name": self.name,
            "target": self.target,
            "snapshot": self.snapshot,
            "user": "daytona",
            "labels": dict(self.labels),
            "public": self.public,
            "networkBlockAll": self.network_block_all,
            "networkAllowList": self.network_allow_list,
            "cpu": 1,
            "gpu": 0,
            "memory": 1,
            "disk": 3,
            "state": self.state,
            "desiredState": _desired(self.state),
            "errorReason": self.error_reason,
            "recoverable": False if self.state == "error" else None,
            "backupState": "Completed" if self.state == "archived" else "None",
            "autoStopInterval": self.auto_stop_interval,
            "autoArchiveInterval": self.auto_archive_interval,
            "autoDeleteInterval": self.auto_delete_interval,
            "createdAt": self._stamp(self.created_at),
            "updatedAt": self._stamp(max(self.created_at, self.last_activity)),
            "lastActivityAt": self._stamp(self.last_activity),
            "toolboxProxyUrl": toolbox_url,
        }
        if full:
            item |= {"env": dict(self.env), "kvm": False, "volumes": []}
        return item


def _desired(state: str) -> str:
    if state in ("creating", "starting", "restoring", "started"):
        return "started"
    if state in ("stopping", "stopped"):
        return "stopped"
    if state in ("archiving", "archived"):
        return "archived"
    if state in ("destroying", "destroyed"):
        return "destroyed"
    return "started"


# ---- what the fake records --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON; for an upload {path: content}; else None
    operation: Operation | None  # None: no such route
    sandbox: str | None  # the id or name in the path, when there is one


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_response(error: _ApiError) -> web.Response:
    body = {
        "statusCode": error.status,
        "message": error.message,
        "error": _REASONS.get(error.status, "Error"),
    }
    return web.json_response(body, status=error.status, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=_dumps)


# ---- the server ---------------------------------------------------------------------------


@dataclass
class FakeDaytona:
    """Daytona's API, toolbox and preview proxy on 127.0.0.1 (a free port), for one test."""

    api_key: str
    targets: tuple[str, ...] = (DEFAULT_TARGET, "eu")
    snapshots: frozenset[str] | None = None  # None: any snapshot name exists
    transition_reads: int = 2  # reads of a sandbox before a transition completes
    page_size: int = 100  # the most list items a page holds, whatever the client asks
    held: set[str] = field(default_factory=set)  # transitions (by operation) that never end
    base_url: str = field(default="", init=False)  # http://127.0.0.1:PORT
    root: Path = field(default=Path(), init=False)  # sandboxes' disks and command logs
    clock: float = field(default=0.0, init=False)  # fake seconds
    sandboxes: dict[str, FakeSandbox] = field(default_factory=dict, init=False)  # by id
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    _failures: dict[str, deque[_ApiError]] = field(default_factory=dict, init=False)
    _transition_errors: dict[str, deque[str]] = field(default_factory=dict, init=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _http: aiohttp.ClientSession | None = field(default=None, init=False)
    _watchers: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _crashes: list[BaseException] = field(default_factory=list, init=False)

    # ---- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.root = Path(tempfile.mkdtemp(prefix="fake-daytona-"))
        self._http = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=30)
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for sandbox in list(self.sandboxes.values()):
            self._stop_processes(sandbox)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._watchers:
            await asyncio.wait(self._watchers, timeout=WAIT_LIMIT)
        shutil.rmtree(self.root, ignore_errors=True)
        if self._crashes and exc_info[0] is None:
            raise AssertionError("the fake or its runtime handler crashed") from self._crashes[0]

    @property
    def api_url(self) -> str:
        """What ``DaytonaConfig.api_url`` takes."""
        return f"{self.base_url}/api"

    @property
    def toolbox_url(self) -> str:
        """The ``toolboxProxyUrl`` every sandbox has."""
        return f"{self.base_url}/toolbox"

    def preview_url(self, sandbox: FakeSandbox, port: int) -> str:
        return f"{self.base_url}/preview/{sandbox.id}/{port}"

    # ---- scripting --------------------------------------------------------------------

    def fail(
        self, operation: Operation, status: int, message: str | None = None, *, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests of ``operation`` with ``status`` (before
        authentication, as a front end would)."""
        error = _ApiError(status, message or f"scripted failure of {operation} ({status})")
        self._failures.setdefault(operation, deque()).extend([error] * times)

    def fail_transition(self, operation: TransitionName, reason: str) -> None:
        """End the next ``operation`` transition in ``error`` with ``reason``."""
        self._transition_errors.setdefault(operation, deque()).append(reason)

    def add_sandbox(
        self,
        name: str,
        *,
        state: str = "started",
        labels: Mapping[str, str] | None = None,
        target: str = DEFAULT_TARGET,
        auto_stop_interval: int = 15,
    ) -> FakeSandbox:
        """A sandbox made earlier (by another process); ``state`` is where it is now."""
        sandbox = self._new_sandbox(
            {
                "name": name,
                "labels": {CODE_TOOLBOX_LANGUAGE_LABEL: "python", **(labels or {})},
                "target": target,
                "autoStopInterval": auto_stop_interval,
            }
        )
        sandbox.state = "creating"
        self._finish(sandbox, _Pending("create", "started", 0))
        if state in ("stopped", "archived"):
            self._finish(sandbox, _Pending("stop", "stopped", 0))
        if state == "archived":
            self._finish(sandbox, _Pending("archive", "archived", 0))
        if state == "error":
            sandbox.state, sandbox.error_reason = "error", "scripted error"
        self._notify()
        return sandbox

    async def crash_runtime(self, sandbox: FakeSandbox) -> None:
        """Kill the sandbox's running async commands (SIGKILL) and wait until they exited."""
        running = [c for c in sandbox.commands if c.run_async and c.exit_code is None]
        for command in running:
            if command.process is not None:
                _kill_group(command.process.pid)
        await self.wait_until(
            lambda: all(c.exit_code is not None for c in running), "the runtime exit"
        )

    def advance(self, seconds: float) -> None:
        """Move the fake clock; sandboxes stop, archive and go as their intervals say."""
        self.clock += seconds
        for sandbox in list(self.sandboxes.values()):
            idle = self.clock - sandbox.last_activity
            if (
                sandbox.state == "started"
                and sandbox.auto_stop_interval > 0
                and idle >= sandbox.auto_stop_interval * 60
            ):
                sandbox.auto_stops += 1
                self._finish(sandbox, _Pending("stop", "stopped", 0))
            if sandbox.state == "stopped" and sandbox.stopped_at is not None:
                stopped_for = self.clock - sandbox.stopped_at
                if 0 <= sandbox.auto_delete_interval <= stopped_for / 60:
                    self._finish(sandbox, _Pending("delete", "destroyed", 0))
                elif (
                    stopped_for >= (sandbox.auto_archive_interval or MAX_AUTO_ARCHIVE_MINUTES) * 60
                ):
                    self._finish(sandbox, _Pending("archive", "archived", 0))
        self._notify()

    def settle(self) -> None:
        """Complete every transition in flight that is not held."""
        for sandbox in list(self.sandboxes.values()):
            pending = sandbox._pending
            if pending is not None and pending.operation not in self.held:
                self._finish(sandbox, pending)
        self._notify()

    # ---- observing ----------------------------------------------------------------------

    @property
    def only_sandbox(self) -> FakeSandbox:
        """The one sandbox there is (fails when there are none or several)."""
        live = list(self.sandboxes.values())
        if len(live) != 1:
            raise AssertionError(f"the fake has {len(live)} sandboxes, not one")
        return live[0]

    def sandbox(self, id_or_name: str) -> FakeSandbox:
        """A sandbox by id or name (fails when there is none)."""
        found = self._lookup(id_or_name)
        if found is None:
            raise AssertionError(f"the fake has no sandbox {id_or_name!r}")
        return found

    def requests_to(self, operation: Operation) -> list[RecordedRequest]:
        return [r for r in self.requests if r.operation == operation]

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, *, within: float = WAIT_LIMIT
    ) -> None:
        """Return once ``predicate()`` holds; fail naming ``what`` after ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                while True:
                    if self._crashes:
                        raise AssertionError("the fake crashed") from self._crashes[0]
                    if predicate():
                        return
                    await self._changed.wait()
        except TimeoutError:
            states = {s.name: s.state for s in self.sandboxes.values()}
            raise AssertionError(
                f"the fake saw no {what} within {within}s (requests: {len(self.requests)}, "
                f"sandboxes: {states})"
            ) from None

    async def wait_for_requests(
        self, count: int, operation: Operation | None = None, *, within: float = WAIT_LIMIT
    ) -> list[RecordedRequest]:
        """Return the requests (of ``operation``, when given) once there are ``count``."""

        def matching() -> list[RecordedRequest]:
            return self.requests_to(operation) if operation else list(self.requests)

        what = f"{count} request(s)" + (f" of {operation}" if operation else "")
        await self.wait_until(lambda: len(matching()) >= count, what, within=within)
        return matching()

    async def wait_for_state(
        self, sandbox: FakeSandbox, state: str, *, within: float = WAIT_LIMIT
    ) -> None:
        """Return once ``sandbox`` is in ``state``."""
        await self.wait_until(
            lambda: sandbox.state == state, f"sandbox {sandbox.name} {state}", within=within
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- the HTTP layer -----------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        query: dict[str, list[str]] = {}
        for key, value in request.query.items():
            query.setdefault(key, []).append(value)
        operation: Operation | None = None
        params: dict[str, str] = {}
        for method, pattern, op in _ROUTES:
            match = pattern.fullmatch(request.path)
            if match and method in ("*", request.method):
                operation, params = op, {k: v for k, v in match.groupdict().items() if v}
                break
        body: Any = None
        if operation == "upload":
            body = _multipart_files(headers.get("content-type", ""), raw)
        elif raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
        self.requests.append(
            RecordedRequest(
                request.method, request.path, query, headers, body, operation, params.get("sid")
            )
        )
        self._notify()
        try:
            if operation is None:
                raise _ApiError(404, f"Cannot {request.method} {request.path}")
            if operation == "preview":
                return await self._preview(request, headers, params, raw)
            failures = self._failures.get(operation)
            if failures:
                raise failures.popleft()
            if headers.get("authorization") != f"Bearer {self.api_key}":
                raise _ApiError(401, "Unauthorized")
            if request.method == "POST" and raw and operation != "upload":
                content_type = headers.get("content-type", "").split(";")[0].strip()
                if content_type != "application/json":
                    raise _ApiError(400, f"Content-Type must be application/json: {content_type}")
                if body is None:
                    raise _ApiError(400, "the body is not JSON")
            return await self._dispatch(operation, params, query, body)
        except _ApiError as error:
            return _error_response(error)
        except Exception as exc:  # a bug in the fake: fail the test, not just this request
            self._crashes.append(exc)
            self._notify()
            raise

    async def _dispatch(
        self,
        operation: Operation,
        params: Mapping[str, str],
        query: Mapping[str, list[str]],
        body: Any,
    ) -> web.StreamResponse:
        if operation == "create":
            return self._create(body)
        if operation == "list":
            return self._list(query)
        sandbox = self._existing(params["sid"])
        if operation.startswith("session_") or operation in (
            "command_get",
            "command_logs",
            "work_dir",
            "upload",
        ):
            return await self._toolbox(operation, sandbox, params, body)
        sandbox.last_activity = self.clock  # API calls on a sandbox are activity
        if operation == "get":
            self._read(sandbox)
            return _json(sandbox.dto(self.toolbox_url))
        if operation == "delete":
            if sandbox.state != "destroying":
                self._begin(sandbox, "delete")
            return _json(sandbox.dto(self.toolbox_url))
        if operation == "start":
            if sandbox.state not in ("stopped", "archived"):
                raise _ApiError(400, f"Sandbox {sandbox.id} is {sandbox.state}: it cannot start")
            self._begin(sandbox, "restore" if sandbox.state == "archived" else "start")
            return _json(sandbox.dto(self.toolbox_url))
        if operation == "stop":
            if set(query) - {"force"}:
                raise _ApiError(400, f"unknown query parameter {sorted(set(query) - {'force'})}")
            if sandbox.state != "started":
                raise _ApiError(400, f"Sandbox {sandbox.id} is {sandbox.state}: it cannot stop")
            self._begin(sandbox, "stop")
            return _json(sandbox.dto(self.toolbox_url))
        if operation == "archive":
            if sandbox.state != "stopped":
                raise _ApiError(400, f"Sandbox {sandbox.id} must be stopped before archiving")
            self._begin(sandbox, "archive")
            return _json(sandbox.dto(self.toolbox_url))
        if operation == "preview_url":
            port = int(params["port"])
            if not 1 <= port <= 65535:
                raise _ApiError(400, f"port {port} is out of range")
            if sandbox.state != "started":
                raise _ApiError(400, f"Sandbox {sandbox.id} is {sandbox.state}, not started")
            return _json(
                {
                    "sandboxId": sandbox.id,
                    "url": self.preview_url(sandbox, port),
                    "token": sandbox.preview_token,
                }
            )
        if operation == "last_activity":
            return web.Response(status=201)
        if operation == "toolbox_proxy_url":
            return _json({"url": self.toolbox_url})
        raise _ApiError(404, f"{operation}: not served")

    # ---- the sandbox API --------------------------------------------------------------------

    def _create(self, body: Any) -> web.Response:
        if not isinstance(body, dict):
            raise _ApiError(400, "the body must be a JSON object")
        for key, value in body.items():
            expected = _CREATE_FIELDS.get(key)
            if expected is None:
                raise _ApiError(400, f"property {key} should not exist")
            if value is None:
                continue
            if expected is int and isinstance(value, bool):
                raise _ApiError(400, f"{key} must be an integer number")
            if not isinstance(value, expected):
                raise _ApiError(400, f"{key} must be a {getattr(expected, '__name__', expected)}")
        for key in ("labels", "env"):
            mapping = body.get(key) or {}
            for k, v in mapping.items():
                if not isinstance(v, str):
                    raise _ApiError(400, f"{key}.{k} must be a string")
        language = (body.get("labels") or {}).get(CODE_TOOLBOX_LANGUAGE_LABEL)
        if language is not None and language not in _LANGUAGES:
            raise _ApiError(400, f"labels.{CODE_TOOLBOX_LANGUAGE_LABEL}: unknown {language!r}")
        for key in ("autoStopInterval", "autoArchiveInterval"):
            if (body.get(key) or 0) < 0:
                raise _ApiError(400, f"{key} must not be less than 0")
        if body.get("snapshot") and body.get("buildInfo"):
            raise _ApiError(400, "snapshot and buildInfo are mutually exclusive")
        snapshot = body.get("snapshot")
        if snapshot and self.snapshots is not None and snapshot not in self.snapshots:
            raise _ApiError(404, f"Snapshot {snapshot} not found")
        target = body.get("target") or DEFAULT_TARGET
        if target not in self.targets:
            raise _ApiError(400, f"Region {target} not found; one of {', '.join(self.targets)}")
        allow = body.get("networkAllowList")
        if allow:
            for cidr in allow.split(","):
                try:
                    ipaddress.ip_network(cidr.strip())
                except ValueError:
                    raise _ApiError(400, f"networkAllowList: {cidr!r} is not a CIDR") from None
        name = body.get("name")
        if name is not None:
            if not _NAME.fullmatch(name):
                raise _ApiError(400, f"name {name!r} may hold letters, digits, . _ - (63 at most)")
            if self._lookup(name) is not None:
                raise _ApiError(409, f"Sandbox with name {name} already exists")
        sandbox = self._new_sandbox(body)
        self._begin(sandbox, "create")
        return _json(sandbox.dto(self.toolbox_url))

    def _new_sandbox(self, body: Mapping[str, Any]) -> FakeSandbox:
        sandbox_id = str(uuid.uuid4())
        sandbox = FakeSandbox(
            id=sandbox_id,
            name=body.get("name") or sandbox_id,
            target=body.get("target") or DEFAULT_TARGET,
            snapshot=body.get("snapshot"),
            labels=dict(body.get("labels") or {}),
            env=dict(body.get("env") or {}),
            public=bool(body.get("public")),
            network_block_all=bool(body.get("networkBlockAll")),
            network_allow_list=body.get("networkAllowList"),
            auto_stop_interval=_or(body.get("autoStopInterval"), 15),
            auto_archive_interval=_or(body.get("autoArchiveInterval"), 10080),
            auto_delete_interval=_or(body.get("autoDeleteInterval"), -1),
            created_at=self.clock,
            disk=self.root / sandbox_id,
            last_activity=self.clock,
        )
        sandbox.disk.mkdir(mode=0o700)
        self.sandboxes[sandbox.id] = sandbox
        return sandbox

    def _list(self, query: Mapping[str, list[str]]) -> web.Response:
        if unknown := sorted(set(query) - _LIST_PARAMS):
            raise _ApiError(400, f"unknown query parameter {unknown[0]}")
        wanted: dict[str, str] = {}
        if "labels" in query:
            try:
                wanted = orjson.loads(query["labels"][0])
            except orjson.JSONDecodeError:
                raise _ApiError(400, "labels must be a JSON object") from None
            if not isinstance(wanted, dict):
                raise _ApiError(400, "labels must be a JSON object")
        limit = min(int(query["limit"][0]) if "limit" in query else 100, self.page_size)
        start = int(query["cursor"][0]) if "cursor" in query else 0
        matching = [
            s
            for s in self.sandboxes.values()
            if all(s.labels.get(k) == v for k, v in wanted.items())
        ]
        page = matching[start : start + limit]
        more = start + limit < len(matching)
        return _json(
            {
                "items": [s.dto(self.toolbox_url, full=False) for s in page],
                "nextCursor": str(start + limit) if more else None,
            }
        )

    def _lookup(self, id_or_name: str) -> FakeSandbox | None:
        found = self.sandboxes.get(id_or_name)
        if found is None:
            found = next((s for s in self.sandboxes.values() if s.name == id_or_name), None)
        return found

    def _existing(self, id_or_name: str) -> FakeSandbox:
        sandbox = self._lookup(id_or_name)
        if sandbox is None:
            raise _ApiError(404, f"Sandbox with ID or name {id_or_name} not found")
        return sandbox

    # ---- the state machine ------------------------------------------------------------------

    def _begin(self, sandbox: FakeSandbox, operation: TransitionName) -> None:
        transitional, final = _TRANSITIONS[operation]
        sandbox.transitions.append(operation)
        sandbox.state = transitional
        sandbox.error_reason = None
        if final != "started":
            self._stop_processes(sandbox)
        errors = self._transition_errors.get(operation)
        reason = errors.popleft() if errors else None
        sandbox._pending = _Pending(operation, final, self.transition_reads, reason)
        if self.transition_reads <= 0 and operation not in self.held:
            self._finish(sandbox, sandbox._pending)
        self._notify()

    def _read(self, sandbox: FakeSandbox) -> None:
        pending = sandbox._pending
        if pending is None or pending.operation in self.held:
            return
        pending.reads_left -= 1
        if pending.reads_left <= 0:
            self._finish(sandbox, pending)

    def _finish(self, sandbox: FakeSandbox, pending: _Pending) -> None:
        sandbox._pending = None
        if pending.error_reason is not None:
            sandbox.state, sandbox.error_reason = "error", pending.error_reason
            self._stop_processes(sandbox)
            return
        sandbox.state = pending.final
        if pending.final == "started":
            sandbox.boots += 1
            sandbox.preview_token = secrets.token_urlsafe(16)
            sandbox.preview_tokens.append(sandbox.preview_token)
            sandbox.last_activity = self.clock
            sandbox.stopped_at = None
        else:
            self._stop_processes(sandbox)
        if pending.final == "stopped":
            sandbox.stopped_at = self.clock
        if pending.final == "destroyed":
            self.sandboxes.pop(sandbox.id, None)
            shutil.rmtree(sandbox.disk, ignore_errors=True)
        self._notify()

    def _stop_processes(self, sandbox: FakeSandbox) -> None:
        for command in sandbox.commands:
            if command.exit_code is None and command.process is not None:
                _kill_group(command.process.pid)
        sandbox.sessions.clear()
        sandbox.preview_token = ""

    # ---- the toolbox ----------------------------------------------------------------------------

    async def _toolbox(
        self, operation: Operation, sandbox: FakeSandbox, params: Mapping[str, str], body: Any
    ) -> web.Response:
        if sandbox.id != params["sid"]:
            raise _ApiError(404, f"the toolbox addresses sandboxes by id, not {params['sid']!r}")
        if sandbox.state != "started":
            raise _ApiError(400, f"Sandbox {sandbox.id} is {sandbox.state}, not started")
        sandbox.last_activity = self.clock
        if operation == "work_dir":
            return _json({"dir": str(sandbox.disk)})
        if operation == "session_list":
            return _json([s.resource() for s in sandbox.sessions.values()])
        if operation == "session_create":
            if not isinstance(body, dict) or set(body) != {"sessionId"}:
                raise _ApiError(400, "the body must be {sessionId}")
            session_id = body["sessionId"]
            if not isinstance(session_id, str) or not session_id:
                raise _ApiError(400, "sessionId must be a non-empty string")
            if session_id in sandbox.sessions:
                raise _ApiError(409, f"session {session_id} already exists")
            sandbox.sessions[session_id] = FakeProcessSession(session_id)
            self._notify()
            return web.Response(status=201)
        if operation == "upload":
            if not isinstance(body, dict) or not body:
                raise _ApiError(400, "no files in the multipart body")
            for path, content in body.items():
                _write(sandbox.disk, path, content)
            self._notify()
            return web.Response(status=200)
        session = sandbox.sessions.get(params["session"])
        if session is None:
            raise _ApiError(404, f"session {params['session']} not found")
        if operation == "session_get":
            return _json(session.resource())
        if operation == "session_delete":
            for command in session.commands:
                if command.exit_code is None and command.process is not None:
                    _kill_group(command.process.pid)
            del sandbox.sessions[session.id]
            self._notify()
            return web.Response(status=204)
        if operation in ("command_get", "command_logs"):
            found = next((c for c in session.commands if c.id == params["command"]), None)
            if found is None:
                raise _ApiError(404, f"command {params['command']} not found")
            if operation == "command_logs":
                output = found.output
                return _json({"output": output, "stdout": output, "stderr": ""})
            return _json(found.resource())
        # session_exec
        if not isinstance(body, dict) or not isinstance(body.get("command"), str):
            raise _ApiError(400, "command must be a string")
        if unknown := sorted(set(body) - {"command", "runAsync", "async", "suppressInputEcho"}):
            raise _ApiError(400, f"property {unknown[0]} should not exist")
        run_async = bool(body.get("runAsync") or body.get("async"))
        command = FakeCommand(
            id=f"cmd-{next(_command_ids)}",
            command=body["command"],
            run_async=run_async,
            log=self.root / "logs" / f"{sandbox.id}-{session.id}-{next(_command_ids)}.log",
        )
        session.commands.append(command)
        await self._spawn(sandbox, command)
        self._notify()
        if run_async:
            return _json({"cmdId": command.id}, status=202)
        assert command.process is not None
        try:
            async with asyncio.timeout(SYNC_COMMAND_LIMIT):
                await command.process.wait()
        except TimeoutError:
            _kill_group(command.process.pid)
            await command.process.wait()
        await self.wait_until(lambda: command.exit_code is not None, "the command's end")
        output = command.output
        return _json(
            {
                "cmdId": command.id,
                "exitCode": command.exit_code,
                "output": output,
                "stdout": output,
                "stderr": "",
            }
        )

    async def _spawn(self, sandbox: FakeSandbox, command: FakeCommand) -> None:
        """Start ``bash -c command`` on the sandbox's disk; a watcher records its exit."""
        command.log.parent.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(sandbox.disk)}
        env.update(sandbox.env)
        output = os.open(command.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            command.process = await asyncio.create_subprocess_exec(
                shutil.which("bash") or "/bin/sh",
                "-c",
                command.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                cwd=sandbox.disk,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(output)
        watcher = asyncio.create_task(self._watch(command, command.process))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, command: FakeCommand, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        _kill_group(process.pid)  # what it spawned dies with it
        command.exit_code = code if code >= 0 else 128 - code
        self._notify()

    # ---- the preview proxy --------------------------------------------------------------------

    async def _preview(
        self,
        request: web.Request,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        raw: bytes,
    ) -> web.StreamResponse:
        sandbox = self.sandboxes.get(params["sid"])
        if sandbox is None:
            raise _ApiError(404, f"Sandbox {params['sid']} not found")
        if sandbox.state != "started":
            raise _ApiError(502, f"Sandbox {sandbox.id} is {sandbox.state}, not started")
        if not sandbox.public and headers.get(PREVIEW_TOKEN_HEADER) != sandbox.preview_token:
            raise _ApiError(401, "a valid x-daytona-preview-token is required")
        sandbox.last_activity = self.clock  # preview traffic is activity
        port = int(params["port"])
        target = f"http://127.0.0.1:{port}{params.get('tail') or '/'}"
        if request.query_string:
            target += f"?{request.query_string}"
        forwarded = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _HOP_HEADERS and k.lower() != PREVIEW_TOKEN_HEADER
        }
        assert self._http is not None
        try:
            upstream = await self._http.request(
                request.method, target, headers=forwarded, data=raw or None
            )
        except aiohttp.ClientConnectionError:
            raise _ApiError(502, f"no process is listening on port {port}") from None
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        self._notify()
        return response


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _write(disk: Path, path: str, content: bytes) -> None:
    """Write an uploaded file on the disk: relative to it, or an absolute path inside it."""
    target = Path(path) if path.startswith("/") else disk / path
    parts = PurePosixPath(path).parts
    if ".." in parts or not target.resolve().is_relative_to(disk.resolve()):
        raise _ApiError(400, f"{path}: outside the sandbox's disk (the fake keeps nothing else)")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)


def _or(value: Any, default: int) -> int:
    return default if value is None else int(value)


def _multipart_files(content_type: str, raw: bytes) -> dict[str, bytes] | None:
    """``{path: content}`` from the SDK's bulk upload (``files[i].path`` / ``files[i].file``)."""
    if not content_type.startswith("multipart/form-data"):
        return None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    paths: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        index, _, kind = name.partition("].")
        if kind == "path":
            paths[index] = payload.decode()
        elif kind == "file":
            contents[index] = payload
    return {paths[i]: contents[i] for i in paths if i in contents}

"""A scriptable loopback fake of the Fly.io Sprites REST API, as the official ``sprites-py`` SDK
drives it, whose services really run on this host::

    async with FakeSprites(token="spr_test") as fake:  # sprites' filesystems in a temp dir
        async with AsyncSpritesClient("spr_test", base_url=fake.api_url) as client:
            sprite = await client.create_sprite("box", labels=["team=a"])
            await sprite.create_service("web", "python3", ["-m", "http.server", "8123"],
                                        http_port=8123, duration=0.5)
        # GET fake.sprite_url("box") + "/" reaches that http.server

The API (paths, bodies and codes as the SDK sends and reads them; every ``/v1``
request needs ``Authorization: Bearer <token>``, errors are ``{"error": ...}``):

- ``POST /v1/sprites`` → 201 with the sprite (``status`` ``cold``: a new sprite
  warms up on its first request). ``name`` is required (lower-case letters,
  digits and ``-``, 63 at most; a name in use is a 400), ``labels`` a list of
  strings, ``url_settings.auth`` ``sprite`` (the default) or ``public``; an
  unknown key is a 400 ``{"errors": [...]}``.
- ``GET /v1/sprites?prefix&max_results&continuation_token`` → ``{sprites,
  has_more, next_continuation_token, running, warm, cold}``; at most
  :attr:`FakeSprites.page_size` (50) a page. Items carry only ``name``,
  ``org_slug`` and ``updated_at`` (as the API reference shows them) unless
  :attr:`FakeSprites.list_details` is set or ``bulk_load=true`` is asked.
- ``GET``/``PUT`` (url_settings, labels)/``DELETE`` (204) ``/v1/sprites/{name}``.
- Services: ``GET /services``, ``GET``/``PUT``/``DELETE /services/{svc}``,
  ``POST /services/{svc}/start|stop``. A PUT (``{cmd, args, env, dir,
  http_port, needs}``) defines the service and (re)starts it; its answer is
  NDJSON events (``started``, the output so far as ``stdout`` lines, ``exit``
  with ``exit_code`` when it exited, then ``complete``) streamed for
  ``?duration`` (a Go duration, ``5s`` by default) or until it exits.
- Filesystem: ``PUT /fs/write?path&workingDir&mode&mkdirParents`` (raw bytes)
  and ``GET /fs/read?path&workingDir``.

Requests on a sprite's environment (services, filesystem) and on its URL wake
it. The sprite URL, :meth:`FakeSprites.sprite_url` (``/_app/{name}/...`` here,
``https://<name>-<org>.sprites.app`` for real), forwards to ``127.0.0.1`` at the
``http_port`` of its service, waiting up to :attr:`FakeSprites.boot_wait` for a
service that is starting to listen; a sprite whose ``url_settings.auth`` is
``sprite`` wants the org token in ``Authorization``.

The processes: each sprite's filesystem is a directory on this host
(:meth:`FakeSprite.path` maps a sprite path into it). A service runs
``cmd args`` in its ``dir`` (mapped), in a process group of its own, with
``PATH``, ``HOME`` (the mapped ``/home/sprite``) and its ``env``; its output goes
to a log the PUT streams from. A service that exits is restarted (after
:attr:`FakeSprites.restart_backoff`), at most :attr:`FakeSprites.max_restarts`
times before it is ``failed``. :meth:`FakeSprites.pause` makes a sprite ``warm``
(its processes are frozen with SIGSTOP, memory kept); :meth:`FakeSprites.make_cold`
makes it ``cold`` (its processes are killed; services start again when it wakes,
like a cold boot). Each wake counts in :attr:`FakeSprite.wakes`. Sprites share
this host's network, so two services need two ports.

Scripting: :meth:`FakeSprites.fail` answers the next requests of an operation
with an error; :attr:`FakeSprites.unavailable` answers every API request 503.
Checkpoints, exec and network policy are not served (the provider uses none).
Every request is recorded (:attr:`FakeSprites.requests`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import posixpath
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

import aiohttp
import orjson
from aiohttp import web

__all__ = [
    "ORGANIZATION",
    "REGION",
    "WAIT_LIMIT",
    "FakeService",
    "FakeSprite",
    "FakeSprites",
    "Operation",
    "RecordedRequest",
]

ORGANIZATION = "interlock-test"
REGION = "iad"
# A wait_for_* that takes longer than this has failed: report it instead of hanging.
WAIT_LIMIT = 10.0
# Hop-by-hop headers a proxy does not forward.
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|s|m)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_CREATE_KEYS = frozenset(
    {"name", "config", "url_settings", "labels", "wait_for_capacity", "runtime"}
)
_SERVICE_KEYS = frozenset({"cmd", "args", "needs", "http_port", "env", "dir"})

Operation = Literal[
    "create",
    "list",
    "get",
    "update",
    "delete",
    "service_list",
    "service_get",
    "service_put",
    "service_delete",
    "service_start",
    "service_stop",
    "fs_write",
    "fs_read",
    "app",
]
Status = Literal["cold", "warm", "running"]

_SPRITE = r"/v1/sprites/(?P<name>[^/]+)"
_SERVICE = rf"{_SPRITE}/services/(?P<service>[^/]+)"
_ROUTE_TABLE: list[tuple[str, str, Operation]] = [
    ("POST", r"/v1/sprites", "create"),
    ("GET", r"/v1/sprites", "list"),
    ("GET", _SPRITE, "get"),
    ("PUT", _SPRITE, "update"),
    ("DELETE", _SPRITE, "delete"),
    ("GET", rf"{_SPRITE}/services", "service_list"),
    ("GET", _SERVICE, "service_get"),
    ("PUT", _SERVICE, "service_put"),
    ("DELETE", _SERVICE, "service_delete"),
    ("POST", rf"{_SERVICE}/start", "service_start"),
    ("POST", rf"{_SERVICE}/stop", "service_stop"),
    ("PUT", rf"{_SPRITE}/fs/write", "fs_write"),
    ("GET", rf"{_SPRITE}/fs/read", "fs_read"),
    ("*", r"/_app/(?P<name>[^/]+)(?P<tail>/.*)?", "app"),
]
_ROUTES = [(method, re.compile(pattern), operation) for method, pattern, operation in _ROUTE_TABLE]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# ---- sprites and their services -------------------------------------------------------------


@dataclass(eq=False)
class FakeService:
    """A service of a sprite and the process running it."""

    name: str
    cmd: str
    args: list[str]
    env: dict[str, str]
    dir: str | None
    http_port: int | None
    needs: list[str]
    log: Path  # the output of its current start
    status: str = "stopped"  # stopped, starting, running, stopping, failed
    wanted: bool = True  # started by its PUT or a start; a stop clears it
    process: asyncio.subprocess.Process | None = None
    started_at: str | None = None
    error: str | None = None
    restart_count: int = 0
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    _stopping: bool = False  # its process is being killed on purpose: no restart

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.status == "running" else None

    @property
    def output(self) -> str:
        try:
            return self.log.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def resource(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "restart_count": self.restart_count,
        }
        if self.pid is not None:
            state["pid"] = self.pid
        if self.started_at is not None:
            state["started_at"] = self.started_at
        if self.error is not None:
            state["error"] = self.error
        return {
            "name": self.name,
            "cmd": self.cmd,
            "args": list(self.args),
            "needs": list(self.needs),
            "http_port": self.http_port,
            "env": dict(self.env),
            "dir": self.dir,
            "state": state,
        }


@dataclass(eq=False)
class FakeSprite:
    """One sprite: its metadata, its filesystem on this host and its services."""

    id: str
    name: str
    labels: list[str]
    url_auth: str
    root: Path  # its filesystem's "/"
    status: Status = "cold"
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    services: dict[str, FakeService] = field(default_factory=dict)
    wakes: int = 0  # times a request woke it (from cold or warm)
    boots: int = 0  # times it woke from cold (its services started anew)

    def path(self, sprite_path: str) -> Path:
        """Where ``sprite_path`` (absolute, inside the sprite) is on this host."""
        normal = posixpath.normpath("/" + sprite_path.lstrip("/"))
        return self.root / normal.lstrip("/")

    def read(self, sprite_path: str) -> bytes:
        return self.path(sprite_path).read_bytes()

    def info(self, url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "organization": ORGANIZATION,
            "status": self.status,
            "url": url,
            "url_settings": {"auth": self.url_auth},
            "labels": list(self.labels),
            "primary_region": REGION,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


# ---- what the fake records ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON; for fs/write the byte count; else None
    operation: Operation | None  # None: no such route
    sprite: str | None


class _ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.code or self.message}
        if self.code:
            body["message"] = self.message
        return _json(body, status=self.status)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=lambda v: orjson.dumps(v).decode())


# ---- the server ------------------------------------------------------------------------------


@dataclass
class FakeSprites:
    """The Sprites API and sprite URLs on 127.0.0.1 (a free port), for one test."""

    token: str
    page_size: int = 50  # the most list items a page holds, whatever the client asks
    list_details: bool = False  # list items carry every field (else name, org, time)
    restart_backoff: float = 0.05  # seconds before a service that exited is restarted
    max_restarts: int = 3  # restarts before a crashing service is failed
    boot_wait: float = 5.0  # how long the sprite URL waits for a starting service to listen
    unavailable: bool = False  # every API request is a 503
    base_url: str = field(default="", init=False)  # http://127.0.0.1:PORT
    root: Path = field(default=Path(), init=False)
    sprites: dict[str, FakeSprite] = field(default_factory=dict, init=False)  # by name
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    _failures: dict[str, deque[_ApiError]] = field(default_factory=dict, init=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _http: aiohttp.ClientSession | None = field(default=None, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _crashes: list[BaseException] = field(default_factory=list, init=False)
    _starts: itertools.count[int] = field(default_factory=itertools.count, init=False)
    _closing: bool = field(default=False, init=False)

    # ---- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.root = Path(tempfile.mkdtemp(prefix="fake-sprites-"))
        self._http = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=30)
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing = True  # nothing starts any more
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for sprite in self.sprites.values():
            for service in sprite.services.values():
                self._kill(service)
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._tasks:  # the watchers see their processes die
            await asyncio.wait(self._tasks, timeout=WAIT_LIMIT)
        for task in self._tasks:
            task.cancel()
        shutil.rmtree(self.root, ignore_errors=True)
        if self._crashes and exc_info[0] is None:
            raise AssertionError("the fake crashed") from self._crashes[0]

    @property
    def api_url(self) -> str:
        """What ``AsyncSpritesClient(base_url=...)`` takes."""
        return self.base_url

    def sprite_url(self, name: str) -> str:
        """The sprite's URL: it routes to the ``http_port`` of its service."""
        return f"{self.base_url}/_app/{name}"

    # ---- scripting ------------------------------------------------------------------------

    def fail(
        self,
        operation: Operation,
        status: int,
        message: str | None = None,
        *,
        code: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests of ``operation`` with ``status`` (before
        authentication, as a front end would); ``code`` goes in ``error`` and the
        message in ``message``, as the API's structured errors do."""
        error = _ApiError(status, message or f"scripted failure of {operation} ({status})", code)
        self._failures.setdefault(operation, deque()).extend([error] * times)

    def add_sprite(
        self, name: str, *, labels: list[str] | None = None, status: Status = "cold"
    ) -> FakeSprite:
        """A sprite made earlier, by this router or by someone else."""
        sprite = self._new_sprite(name, list(labels or []), "sprite")
        sprite.status = status
        self._notify()
        return sprite

    def pause(self, sprite: FakeSprite) -> None:
        """The sprite idles to ``warm``: its processes are frozen (SIGSTOP), memory kept."""
        if sprite.status == "running":
            for service in sprite.services.values():
                if service.process is not None and service.process.returncode is None:
                    _signal_group(service.process.pid, signal.SIGSTOP)
            sprite.status = "warm"
            self._notify()

    def make_cold(self, sprite: FakeSprite) -> None:
        """The sprite shuts down to ``cold``: its processes are killed; its services start
        again on its next wake, from its filesystem."""
        for service in sprite.services.values():
            self._kill(service)
            if service.status != "failed":
                service.status = "stopped"
        sprite.status = "cold"
        self._notify()

    async def crash_service(self, sprite: FakeSprite, name: str) -> None:
        """Kill a service's process as a crash would (SIGKILL); wait until it has exited."""
        service = sprite.services[name]
        assert service.process is not None
        exits = len(service.exit_codes)
        _signal_group(service.process.pid, signal.SIGKILL)
        await self.wait_until(lambda: len(service.exit_codes) > exits, f"{name} exiting")

    # ---- observing ------------------------------------------------------------------------

    @property
    def only_sprite(self) -> FakeSprite:
        """The one sprite there is (fails when there are none or several)."""
        if len(self.sprites) != 1:
            raise AssertionError(f"the fake has {len(self.sprites)} sprites, not one")
        return next(iter(self.sprites.values()))

    def sprite(self, name: str) -> FakeSprite:
        found = self.sprites.get(name)
        if found is None:
            raise AssertionError(f"the fake has no sprite {name!r}")
        return found

    def requests_to(self, operation: Operation) -> list[RecordedRequest]:
        return [r for r in self.requests if r.operation == operation]

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, *, within: float = WAIT_LIMIT
    ) -> None:
        """Return once ``predicate()`` holds; fail naming ``what`` after ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                while not predicate():
                    if self._crashes:
                        raise AssertionError("the fake crashed") from self._crashes[0]
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"the fake saw no {what} within {within}s") from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- the HTTP layer -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        operation: Operation | None = None
        params: dict[str, str] = {}
        for method, pattern, op in _ROUTES:
            match = pattern.fullmatch(request.path)
            if match and method in ("*", request.method):
                operation, params = op, {k: v for k, v in match.groupdict().items() if v}
                break
        body: Any = None
        if operation == "fs_write":
            body = len(raw)
        elif raw and operation != "app":
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                headers,
                body,
                operation,
                params.get("name"),
            )
        )
        self._notify()
        try:
            if operation is None:
                raise _ApiError(404, f"no route for {request.method} {request.path}")
            if operation == "app":
                return await self._app(request, headers, params, raw)
            if self.unavailable:
                raise _ApiError(503, "service unavailable")
            failures = self._failures.get(operation)
            if failures:
                raise failures.popleft()
            if headers.get("authorization") != f"Bearer {self.token}":
                raise _ApiError(401, "unauthorized")
            return await self._dispatch(request, operation, params, body, raw)
        except _ApiError as error:
            return error.response()
        except Exception as exc:  # a bug in the fake: fail the test, not just this request
            self._crashes.append(exc)
            self._notify()
            raise

    async def _dispatch(
        self,
        request: web.Request,
        operation: Operation,
        params: Mapping[str, str],
        body: Any,
        raw: bytes,
    ) -> web.StreamResponse:
        if operation == "create":
            return self._create(body)
        if operation == "list":
            return self._list(request.query)
        sprite = self.sprites.get(params["name"])
        if sprite is None:
            raise _ApiError(404, "sprite not found")
        if operation == "get":
            return _json(sprite.info(self.sprite_url(sprite.name)))
        if operation == "update":
            return self._update(sprite, body)
        if operation == "delete":
            for defined in sprite.services.values():
                self._kill(defined)
            del self.sprites[sprite.name]
            shutil.rmtree(sprite.root, ignore_errors=True)
            self._notify()
            return web.Response(status=204)
        # Everything else runs in the sprite's environment: it wakes the sprite.
        self._wake(sprite)
        if operation == "fs_write":
            return self._fs_write(sprite, request.query, raw)
        if operation == "fs_read":
            target = self._fs_path(sprite, request.query)
            if not target.is_file():
                raise _ApiError(404, "file not found")
            return web.Response(body=target.read_bytes(), content_type="application/octet-stream")
        if operation == "service_list":
            return _json([s.resource() for s in sprite.services.values()])
        if operation == "service_put":
            return await self._service_put(request, sprite, params["service"], body)
        service = sprite.services.get(params["service"])
        if service is None:
            raise _ApiError(404, f"service not found: {params['service']}")
        if operation == "service_get":
            return _json(service.resource())
        if operation == "service_delete":
            await self._stop(service)
            del sprite.services[service.name]
            self._notify()
            return web.Response(status=204)
        if operation == "service_start":
            service.wanted, service.restart_count, service.error = True, 0, None
            await self._start(sprite, service)
            return _ndjson([{"type": "started", "timestamp": _ms()}, {"type": "complete"}])
        # service_stop
        if service.status != "running":
            raise _ApiError(409, "service not running")
        service.wanted = False
        await self._stop(service)
        service.status = "stopped"
        self._notify()
        return _ndjson([{"type": "stopped", "timestamp": _ms()}, {"type": "complete"}])

    # ---- sprites ----------------------------------------------------------------------------

    def _create(self, body: Any) -> web.Response:
        if not isinstance(body, dict):
            raise _ApiError(400, "the body must be a JSON object")
        if unknown := sorted(set(body) - _CREATE_KEYS):
            return _json({"errors": [f"unknown field {unknown[0]}"]}, status=400)
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise _ApiError(400, f"invalid sprite name {name!r}")
        if name in self.sprites:
            raise _ApiError(400, f"sprite name {name} already exists")
        labels = body.get("labels") or []
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise _ApiError(400, "labels must be a list of strings")
        auth = (body.get("url_settings") or {}).get("auth") or "sprite"
        if auth not in ("sprite", "public"):
            raise _ApiError(400, f"url_settings.auth must be sprite or public, not {auth!r}")
        sprite = self._new_sprite(name, labels, auth)
        self._notify()
        return _json(sprite.info(self.sprite_url(name)), status=201)

    def _new_sprite(self, name: str, labels: list[str], auth: str) -> FakeSprite:
        sprite = FakeSprite(
            id=str(uuid.uuid4()),
            name=name,
            labels=labels,
            url_auth=auth,
            root=self.root / "sprites" / name,
        )
        sprite.path("/home/sprite").mkdir(parents=True, exist_ok=True)
        self.sprites[name] = sprite
        return sprite

    def _update(self, sprite: FakeSprite, body: Any) -> web.Response:
        if not isinstance(body, dict) or not body or set(body) - {"url_settings", "labels"}:
            raise _ApiError(400, "only url_settings and labels can be updated")
        if "labels" in body:
            sprite.labels = list(body["labels"])
        if "url_settings" in body:
            sprite.url_auth = body["url_settings"].get("auth") or sprite.url_auth
        sprite.updated_at = _now()
        return _json(sprite.info(self.sprite_url(sprite.name)))

    def _list(self, query: Mapping[str, str]) -> web.Response:
        prefix = query.get("prefix", "")
        limit = min(int(query.get("max_results") or 50), self.page_size)
        start = int(query.get("continuation_token") or 0)
        detail = self.list_details or query.get("bulk_load") == "true"
        matching = [s for s in self.sprites.values() if s.name.startswith(prefix)]
        page = matching[start : start + limit]
        more = start + limit < len(matching)
        items = [
            s.info(self.sprite_url(s.name))
            if detail
            else {"name": s.name, "org_slug": ORGANIZATION, "updated_at": s.updated_at}
            for s in page
        ]
        counts = {
            status: sum(s.status == status for s in matching)
            for status in ("running", "warm", "cold")
        }
        return _json(
            {
                "sprites": items,
                "has_more": more,
                "next_continuation_token": str(start + limit) if more else None,
                **counts,
            }
        )

    def _wake(self, sprite: FakeSprite) -> None:
        if sprite.status == "running":
            return
        if sprite.status == "warm":
            for service in sprite.services.values():
                if service.process is not None and service.process.returncode is None:
                    _signal_group(service.process.pid, signal.SIGCONT)
        else:
            sprite.boots += 1
            for service in sprite.services.values():
                if service.wanted and service.status != "failed":
                    service.status = "starting"
                    self._spawn_soon(sprite, service)
        sprite.status = "running"
        sprite.wakes += 1
        self._notify()

    # ---- the filesystem ---------------------------------------------------------------------

    def _fs_path(self, sprite: FakeSprite, query: Mapping[str, str]) -> Path:
        path = query.get("path", "")
        if not path:
            raise _ApiError(400, "path is required")
        if not path.startswith("/"):
            path = posixpath.join(query.get("workingDir") or "/", path)
        return sprite.path(path)

    def _fs_write(self, sprite: FakeSprite, query: Mapping[str, str], raw: bytes) -> web.Response:
        target = self._fs_path(sprite, query)
        if not target.parent.is_dir():
            if query.get("mkdirParents") != "true":
                return _json({"error": "no such file or directory", "code": "ENOENT"}, 404)
            target.parent.mkdir(parents=True)
        mode = int(query.get("mode") or "0644", 8)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        os.chmod(target, mode)
        self._notify()
        return _json({"path": query.get("path"), "size": len(raw), "mode": f"{mode:04o}"})

    # ---- services ---------------------------------------------------------------------------

    async def _service_put(
        self, request: web.Request, sprite: FakeSprite, name: str, body: Any
    ) -> web.StreamResponse:
        if not isinstance(body, dict):
            raise _ApiError(400, "the body must be a JSON object")
        if unknown := sorted(set(body) - _SERVICE_KEYS):
            raise _ApiError(400, f"unknown field {unknown[0]}")
        if not isinstance(body.get("cmd"), str) or not body["cmd"]:
            raise _ApiError(400, "cmd is required")
        env = body.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise _ApiError(400, "env must map names to strings")
        port = body.get("http_port")
        if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
            raise _ApiError(400, "http_port must be a TCP port")
        duration = _duration(request.query.get("duration", "5s"))
        old = sprite.services.get(name)
        if old is not None:
            await self._stop(old)  # its port is free before the new one binds it
        service = FakeService(
            name=name,
            cmd=body["cmd"],
            args=list(body.get("args") or []),
            env=dict(env),
            dir=body.get("dir"),
            http_port=port,
            needs=list(body.get("needs") or []),
            log=self.root / "logs" / f"{sprite.name}-{name}-0.log",
        )
        sprite.services[name] = service
        await self._start(sprite, service)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(orjson.dumps({"type": "started", "timestamp": _ms()}) + b"\n")
        exits = len(service.exit_codes)
        with contextlib.suppress(AssertionError):
            await self.wait_until(
                lambda: len(service.exit_codes) > exits, "an exit", within=duration
            )
        events: list[dict[str, Any]] = [
            {"type": "stdout", "data": line, "timestamp": _ms()}
            for line in service.output.splitlines()
        ]
        if len(service.exit_codes) > exits:
            events.append(
                {"type": "exit", "exit_code": service.exit_codes[exits], "timestamp": _ms()}
            )
        events.append({"type": "complete", "timestamp": _ms()})
        for event in events:
            await response.write(orjson.dumps(event) + b"\n")
        await response.write_eof()
        return response

    async def _start(self, sprite: FakeSprite, service: FakeService) -> None:
        await self._stop(service)
        await self._spawn(sprite, service)

    async def _stop(self, service: FakeService) -> None:
        """Kill the service's process and wait until it is gone."""
        process = service.process
        self._kill(service)
        if process is not None:
            await process.wait()

    def _spawn_soon(self, sprite: FakeSprite, service: FakeService) -> None:
        self._track(self._spawn(sprite, service))

    async def _spawn(self, sprite: FakeSprite, service: FakeService) -> None:
        """Start the service's process in its (mapped) directory, and watch it."""
        old = service.process
        if old is not None and old.returncode is None:
            if not service._stopping:
                return  # it runs already
            await old.wait()  # it is being killed (say, the sprite went cold): let it go
            if service.process is not old:
                return  # started by someone else meanwhile
        current = self.sprites.get(sprite.name) is sprite and (
            sprite.services.get(service.name) is service
        )
        if self._closing or not current:
            return  # the sprite or this definition of the service is gone
        workdir = sprite.path(service.dir or "/home/sprite")
        workdir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(sprite.path("/home/sprite")),
            "LANG": "C.UTF-8",
        }
        env.update(service.env)
        service.log = self.root / "logs" / f"{sprite.name}-{service.name}-{next(self._starts)}.log"
        service.log.parent.mkdir(parents=True, exist_ok=True)
        output = os.open(service.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        service.status = "starting"
        try:
            process = await asyncio.create_subprocess_exec(
                service.cmd,
                *service.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                cwd=workdir,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            service.status, service.error = "failed", f"cannot start {service.cmd}: {exc}"
            self._notify()
            return
        finally:
            os.close(output)
        service.process, service._stopping = process, False
        service.status, service.started_at, service.error = "running", _now(), None
        service.starts += 1
        self._track(self._watch(sprite, service, process))
        self._notify()

    async def _watch(
        self, sprite: FakeSprite, service: FakeService, process: asyncio.subprocess.Process
    ) -> None:
        code = await process.wait()
        _signal_group(process.pid, signal.SIGKILL)  # what it spawned dies with it
        service.exit_codes.append(code if code >= 0 else 128 - code)
        if service._stopping or service.process is not process:
            self._notify()
            return
        if service.restart_count >= self.max_restarts:
            service.status = "failed"
            service.error = f"exited with code {service.exit_codes[-1]}; restarts exhausted"
            self._notify()
            return
        service.restart_count += 1
        service.status = "starting"
        self._notify()
        await asyncio.sleep(self.restart_backoff)
        if sprite.status == "running" and service.wanted and service.process is process:
            await self._spawn(sprite, service)

    def _kill(self, service: FakeService) -> None:
        process = service.process
        if process is not None and process.returncode is None:
            service._stopping = True
            _signal_group(process.pid, signal.SIGKILL)

    def _track(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the sprite URL ---------------------------------------------------------------------

    async def _app(
        self,
        request: web.Request,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        raw: bytes,
    ) -> web.StreamResponse:
        sprite = self.sprites.get(params["name"])
        if sprite is None:
            raise _ApiError(404, "sprite not found")
        if sprite.url_auth == "sprite" and headers.get("authorization") != f"Bearer {self.token}":
            raise _ApiError(401, "this sprite's URL needs a Sprites token")
        self._wake(sprite)
        service = next((s for s in sprite.services.values() if s.http_port), None)
        if service is None or service.http_port is None:
            raise _ApiError(502, "no service of this sprite has an http_port")
        target = f"http://127.0.0.1:{service.http_port}{params.get('tail') or '/'}"
        if request.query_string:
            target += f"?{request.query_string}"
        forwarded = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        assert self._http is not None
        deadline = time.monotonic() + self.boot_wait
        while True:
            try:
                upstream = await self._http.request(
                    request.method, target, headers=forwarded, data=raw or None
                )
                break
            except aiohttp.ClientConnectionError:
                starting = service.status in ("starting", "running")
                if not starting or time.monotonic() >= deadline:
                    raise _ApiError(502, f"nothing listens on port {service.http_port}") from None
                await asyncio.sleep(0.05)
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        return response


def _ms() -> int:
    return int(time.time() * 1000)


def _ndjson(events: list[dict[str, Any]]) -> web.Response:
    body = b"".join(orjson.dumps(event) + b"\n" for event in events)
    return web.Response(body=body, content_type="application/x-ndjson")


def _duration(text: str) -> float:
    """Seconds in a Go duration such as ``5s``, ``1.5s`` or ``500ms``."""
    total, position = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            break
        total += float(match["value"]) * _UNITS[match["unit"]]
        position = match.end()
    if position != len(text) or not text:
        raise _ApiError(400, f"invalid duration {text!r}")
    return total


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)

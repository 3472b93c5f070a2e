"""The ``local`` compute provider: runtimes as supervised subprocesses on this host.

Each compute session is one process group running ``spec.command`` on
127.0.0.1, with a directory of its own under ``root``::

    <root>/<name>/session.json   key, labels, status, last port and pid (read after a restart)
    <root>/<name>/state/         the runtime's working directory and HOME
    <root>/<name>/state.tar.gz   the state once archived (state/ is then gone)
    <root>/<name>/runtime.log    the runtime's stdout and stderr since its last start
                                 (the start before's in runtime.log.1)

``<name>`` — the session's external id — is a readable slug of ``spec.key``
plus a hash of it, so one key always maps to one directory.

The launch protocol, for any runtime:

- The provider picks a free port on 127.0.0.1 (the one the session had before
  when it is still free) and passes it in: ``{port}`` is replaced in the
  command's arguments and in ``spec.env`` values, and ``PORT`` is set.
  ``{state_dir}`` is replaced likewise, and ``{host}`` by ``127.0.0.1`` (the
  address to bind: only this host reaches it). ``spec.port`` is not used: sessions
  share the host's network, so each needs a port of its own.
- The environment is ``spec.env`` over ``HOME`` (the state directory), ``PORT``
  and a few variables inherited from the daemon (``PATH``, locale, ``TMPDIR``);
  nothing else of the daemon's environment, which holds its own secrets. The
  working directory is the state directory.
- ``spec.files`` are written into the state directory (mode 0600) before each
  start, so configuration the router generates is fresh on every resume.
- The session is ready once ``GET http://127.0.0.1:<port><health_path>``
  answers 2xx. A runtime that exits first, or is not ready within the startup
  timeout, is killed and reported as :class:`ComputeError` with the tail of its
  output.

While running, a supervisor task restarts a runtime that exits, or that fails
three health probes in a row (it is killed first), with exponential backoff; it
gives up — status ``failed`` — after ``max_restarts`` restarts within
``restart_window`` seconds. Stopping (suspend, archive, destroy, :meth:`aclose`)
sends SIGTERM to the whole process group and SIGKILL after the grace, so
nothing a runtime spawned outlives it. A daemon killed outright can leave a
runtime behind; the next daemon recognises it by pid and start time (Linux
``/proc``) and stops it before touching its session.

It must never log ``spec.env`` or ``spec.files`` (they hold secrets), nor hand
the runtime the daemon's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import httpx
import structlog

from interlockd.compute.base import (
    Capabilities,
    ComputeError,
    ComputePrice,
    ComputeProvider,
    ComputeSession,
    Endpoint,
    SessionStatus,
)
from interlockd.compute.local import host
from interlockd.compute.local.runner import Runner
from interlockd.vocabulary import SessionSpec

log = structlog.get_logger(__name__)

PROVIDER: Final = host.PROVIDER
REGION: Final = "local"
#: Free: it is the operator's own machine. Pass a ComputePrice to charge for it.
DEFAULT_PRICE: Final = ComputePrice(
    active_usd_per_second=0.0, suspended_usd_per_second=0.0, price_version="local-free-1"
)
#: What a runtime inherits from the daemon's environment: enough to find programs
#: and speak the locale, never the daemon's secrets.
DEFAULT_INHERITED_ENV: Final = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")

_RECORD = "session.json"
_STATUSES = frozenset(typing.get_args(SessionStatus))
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
_POLL = 0.05  # seconds between probes of a stopping orphan
_EWMA = 0.3  # weight of a new start time in the measured averages


def session_name(key: str) -> str:
    """The external id (and directory name) of the session for ``key``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", key).strip("-")[:48] or "session"
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


@dataclasses.dataclass(slots=True)
class _Record:
    """What ``session.json`` holds."""

    key: str
    labels: dict[str, str]
    status: SessionStatus
    created_at: float
    port: int = 0
    pid: int = 0
    pid_started: str = ""  # the process's start time in /proc, to recognise it after a restart

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Record:
        if data.get("status") not in _STATUSES:
            raise ValueError(f"unknown status {data.get('status')!r}")
        return cls(
            key=str(data["key"]),
            labels={str(k): str(v) for k, v in dict(data.get("labels") or {}).items()},
            status=data["status"],
            created_at=float(data["created_at"]),
            port=int(data.get("port") or 0),
            pid=int(data.get("pid") or 0),
            pid_started=str(data.get("pid_started") or ""),
        )


class LocalComputeProvider(ComputeProvider):
    """Compute sessions as supervised subprocesses under ``root``.

    ``root`` holds one directory per session (created on first use; a relative
    ``root`` is taken from the working directory at construction and kept absolute);
    ``price`` defaults to free. ``startup_timeout`` bounds each start (until
    the health path answers); ``stop_grace`` is the wait between SIGTERM and
    SIGKILL; ``health_interval`` the period of the supervisor's probes. A
    runtime that dies is restarted after ``restart_backoff`` seconds, doubling
    per restart, at most ``max_restarts`` times in ``restart_window`` seconds.
    ``cold_start_seconds`` and ``resume_seconds`` seed the advertised
    :class:`Capabilities` (the defaults are hermes-agent's ~5 s start); each
    create (or restore from an archive) and each resume measured afterwards
    moves them (an exponentially weighted average). Here a resume costs what a
    cold start does — starting the process — plus unpacking for an archive: a
    small http.server runtime takes ~0.12 s either way on two cores. ``inherit_env`` names the
    daemon's environment variables a runtime receives.

    One provider owns a root: two daemons sharing one would stop each other's
    runtimes as orphans.
    """

    name = PROVIDER

    def __init__(
        self,
        root: Path,
        *,
        price: ComputePrice = DEFAULT_PRICE,
        startup_timeout: float = 60.0,
        stop_grace: float = 5.0,
        health_interval: float = 10.0,
        max_restarts: int = 5,
        restart_window: float = 300.0,
        restart_backoff: float = 1.0,
        cold_start_seconds: float = 5.0,
        resume_seconds: float = 5.0,
        inherit_env: Sequence[str] = DEFAULT_INHERITED_ENV,
    ) -> None:
        # Absolute: a session's state directory is its runtime's working directory,
        # so a relative one (the default data_dir is "data") would be read there,
        # one level deeper, by every path handed to the runtime ({state_dir}, HOME).
        self.root = Path(os.path.abspath(root))
        self.price = price
        self.capabilities = Capabilities(
            suspend=True,
            archive=True,
            self_idles_after=0.0,
            regions=(REGION,),
            cold_start_seconds=cold_start_seconds,
            resume_seconds=resume_seconds,
        )
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.health_interval = health_interval
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.restart_backoff = restart_backoff
        self._inherit_env = tuple(inherit_env)
        self._measured: dict[str, int] = {"cold_start": 0, "resume": 0}
        self._runners: dict[str, Runner] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._launching: set[int] = set()  # ports handed to runtimes not yet serving
        self._closed = False
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False)

    # ---- the ComputeProvider contract -----------------------------------------------

    async def ensure(self, spec: SessionSpec, external_id: str | None = None) -> ComputeSession:
        """Start (or find running) the session for ``spec``.

        ``external_id`` names a session this provider made; when it still exists
        its state is kept (unpacked first if archived), else a session named
        from ``spec.key`` is resumed or created. Returns once the runtime
        answers its health path.
        """
        self._check_open()
        _validate(spec)
        name = session_name(spec.key)
        if external_id and _valid_name(external_id) and self._dir(external_id).is_dir():
            name = external_id
        async with self._lock(name):
            self._check_open()
            runner = self._runners.get(name)
            record = self._load(name)
            if runner is not None and runner.serving() and record is not None:
                return self._snapshot(name, record, "running")
            if runner is not None:
                del self._runners[name]
                await runner.stop()
            return await self._start(name, spec, record)

    async def endpoint(self, session: ComputeSession) -> Endpoint:
        """``http://127.0.0.1:<port>`` of a running session, no headers: the runtime's
        API key travels in ``spec.env`` and the caller sends its own Authorization.

        The port can change when the supervisor restarts the runtime and the old one
        was taken meanwhile: fetch it anew after a failure."""
        runner = self._runners.get(session.external_id)
        if runner is None or runner.failed:
            raise ComputeError(
                PROVIDER, f"session {session.external_id} is not running here: ensure it first"
            )
        return Endpoint(base_url=f"http://{host.HOST}:{runner.port}")

    async def suspend(self, session: ComputeSession) -> ComputeSession:
        """Stop the runtime, keep its state directory (status ``suspended``).

        An archived session stays archived; an absent one comes back ``destroyed``."""
        name = session.external_id
        if not _valid_name(name):
            return dataclasses.replace(session, status="destroyed")
        async with self._lock(name):
            await self._stop_runner(name)
            record = self._load(name)
            if record is None:
                return dataclasses.replace(session, status="destroyed")
            await self._reap_orphan(name, record)
            if record.status != "archived":
                record.status = "suspended"
            self._save(name, record)
            return self._snapshot(name, record, record.status)

    async def archive(self, session: ComputeSession) -> ComputeSession:
        """Stop the runtime if it runs, pack its state into ``state.tar.gz`` and
        remove the directory (status ``archived``). Idempotent."""
        name = session.external_id
        if not _valid_name(name):
            return dataclasses.replace(session, status="destroyed")
        async with self._lock(name):
            await self._stop_runner(name)
            record = self._load(name)
            if record is None:
                return dataclasses.replace(session, status="destroyed")
            await self._reap_orphan(name, record)
            await asyncio.to_thread(host.settle, self._dir(name), record.status)
            if record.status != "archived":
                started = time.monotonic()
                size = await asyncio.to_thread(host.pack, self._dir(name))
                record.status = "archived"
                self._save(name, record)  # the commit point: from here the archive is the state
                await asyncio.to_thread(shutil.rmtree, self._dir(name) / host.STATE, True)
                log.info(
                    "compute_local_archived",
                    session=name,
                    archive_bytes=size,
                    seconds=round(time.monotonic() - started, 3),
                )
            return self._snapshot(name, record, "archived")

    async def destroy(self, session: ComputeSession) -> None:
        """Stop the runtime and delete its directory: state, archive, record, log.

        Idempotent."""
        name = session.external_id
        if not _valid_name(name):
            return
        async with self._lock(name):
            await self._stop_runner(name)
            record = self._load(name)
            if record is not None:
                await self._reap_orphan(name, record)
            directory = self._dir(name)
            await asyncio.to_thread(shutil.rmtree, directory, True)
            if directory.exists():
                raise ComputeError(
                    PROVIDER, f"session {name}: could not delete all of its directory {directory}"
                )
            if record is not None:
                log.info("compute_local_destroyed", session=name)

    async def health(self) -> bool:
        """True until :meth:`aclose`: this host is always there."""
        return not self._closed

    async def list(self, labels: Mapping[str, str] | None = None) -> list[ComputeSession]:
        """Sessions with a directory under ``root``, those carrying ``labels`` when given.

        One recorded as running whose runtime this provider does not supervise
        (say, after a daemon restart) is ``suspended``."""
        if not self.root.is_dir():
            return []
        sessions = []
        for directory in sorted(self.root.iterdir()):
            name = directory.name
            if not _valid_name(name) or not (directory / _RECORD).is_file():
                continue
            try:
                record = self._load(name)
            except ComputeError:
                log.warning("compute_local_unreadable_record", session=name)
                continue
            if record is None:
                continue
            if labels and any(record.labels.get(k) != v for k, v in labels.items()):
                continue
            sessions.append(self._snapshot(name, record, self._status(name, record)))
        return sessions

    async def aclose(self) -> None:
        """Stop every runtime (SIGTERM, SIGKILL after the grace); their state is kept
        and a later provider on the same root resumes them. Further ensures fail."""
        self._closed = True
        await asyncio.gather(*(self._close_one(name) for name in list(self._locks)))
        await self._http.aclose()

    # ---- starting -------------------------------------------------------------------

    async def _start(self, name: str, spec: SessionSpec, record: _Record | None) -> ComputeSession:
        started = time.monotonic()
        directory = self._dir(name)
        kind = "resume"
        if record is None:
            kind = "cold_start"
            record = _Record(
                key=spec.key, labels=dict(spec.labels), status="creating", created_at=time.time()
            )
            await asyncio.to_thread(host.create_dirs, directory)
        else:
            await self._reap_orphan(name, record)
            await asyncio.to_thread(host.settle, directory, record.status)
            if record.status == "archived":
                kind = "cold_start"  # unpacking is part of it
                await asyncio.to_thread(host.unpack, directory)
                record.status = "suspended"
                self._save(name, record)
                await asyncio.to_thread(os.remove, directory / host.ARCHIVE)
            record.labels = dict(spec.labels)
        self._save(name, record)
        await asyncio.to_thread(host.write_files, directory / host.STATE, spec.files)
        runner = Runner(self, name, spec, directory, self._pick_port(record.port))
        try:
            await runner.start()
        except ComputeError:
            record.status = "failed"
            self._save(name, record)
            raise
        self._runners[name] = runner
        self._record_process(name, runner)
        seconds = time.monotonic() - started
        self._observe(kind, seconds)
        log.info(
            "compute_local_started",
            session=name,
            pid=runner.pid,
            port=runner.port,
            kind=kind,
            seconds=round(seconds, 3),
        )
        record = self._load(name) or record
        return self._snapshot(name, record, "running")

    def _pick_port(self, preferred: int = 0) -> int:
        """``preferred`` if still free, else a free port no other session of ours holds."""
        taken = {runner.port for runner in self._runners.values()} | self._launching
        if preferred and preferred not in taken and host.port_free(preferred):
            return preferred
        for _ in range(32):
            port = host.free_port()
            if port not in taken:
                return port
        raise ComputeError(PROVIDER, f"found no free port on {host.HOST}")

    def _environment(self, spec: SessionSpec, state: Path, port: int) -> dict[str, str]:
        env = {k: os.environ[k] for k in self._inherit_env if k in os.environ}
        env["HOME"] = str(state)
        env["PORT"] = str(port)
        env.update({k: host.fill(v, port, state) for k, v in spec.env.items()})
        return env

    def _observe(self, kind: str, seconds: float) -> None:
        """Fold one measured start into the advertised capabilities."""
        caps = self.capabilities
        previous = caps.cold_start_seconds if kind == "cold_start" else caps.resume_seconds
        value = seconds if self._measured[kind] == 0 else (1 - _EWMA) * previous + _EWMA * seconds
        self._measured[kind] += 1
        if kind == "cold_start":
            self.capabilities = dataclasses.replace(caps, cold_start_seconds=round(value, 3))
        else:
            self.capabilities = dataclasses.replace(caps, resume_seconds=round(value, 3))

    # ---- stopping -------------------------------------------------------------------

    async def _stop_runner(self, name: str) -> None:
        runner = self._runners.pop(name, None)
        if runner is not None:
            await runner.stop()

    async def _close_one(self, name: str) -> None:
        async with self._lock(name):
            runner = self._runners.pop(name, None)
            if runner is None:
                return
            await runner.stop()
            with contextlib.suppress(ComputeError):
                record = self._load(name)
                if record is not None and record.status != "failed":
                    record.status = "suspended"
                    self._save(name, record)

    async def _reap_orphan(self, name: str, record: _Record) -> None:
        """Stop a runtime an earlier daemon left running (it was killed before it could)."""
        if record.pid <= 0 or not record.pid_started or name in self._runners:
            return
        if host.process_started(record.pid) != record.pid_started:
            return  # gone, or the pid now belongs to another process
        log.warning("compute_local_orphan", session=name, pid=record.pid)
        host.signal_group(record.pid, signal.SIGTERM)
        for _ in range(max(1, round(self.stop_grace / _POLL))):
            if host.process_started(record.pid) != record.pid_started:
                break
            await asyncio.sleep(_POLL)
        host.signal_group(record.pid, signal.SIGKILL)
        record.pid, record.pid_started = 0, ""

    # ---- supervision callbacks ------------------------------------------------------

    def _record_process(self, name: str, runner: Runner) -> None:
        """Persist the running process, so a later daemon can find it."""
        record = self._load(name)
        if record is None:
            return
        record.status = "running"
        record.port = runner.port
        record.pid = runner.pid or 0
        record.pid_started = host.process_started(record.pid) if record.pid else ""
        self._save(name, record)

    def _record_failed(self, name: str) -> None:
        with contextlib.suppress(ComputeError):
            record = self._load(name)
            if record is not None:
                record.status = "failed"
                self._save(name, record)

    async def _healthy(self, port: int, path: str) -> bool:
        try:
            response = await self._http.get(f"http://{host.HOST}:{port}{path}")
        except httpx.HTTPError:
            return False
        return response.is_success

    # ---- records and names ----------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _load(self, name: str) -> _Record | None:
        path = self._dir(name) / _RECORD
        try:
            return _Record.from_json(json.loads(path.read_text("utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ComputeError(
                PROVIDER, f"session {name}: its record {path} is unreadable ({exc}); destroy it"
            ) from None

    def _save(self, name: str, record: _Record) -> None:
        path = self._dir(name) / _RECORD
        partial = path.with_suffix(".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(record.to_json(), out, indent=1, sort_keys=True)
        os.replace(partial, path)

    def _status(self, name: str, record: _Record) -> SessionStatus:
        runner = self._runners.get(name)
        if runner is not None:
            return "failed" if runner.failed else "running"
        if record.status in ("running", "creating"):
            return "suspended"  # nobody here runs it: its process is gone (or about to be)
        return record.status

    def _snapshot(self, name: str, record: _Record, status: SessionStatus) -> ComputeSession:
        return ComputeSession(
            provider=PROVIDER,
            external_id=name,
            key=record.key,
            status=status,
            labels=dict(record.labels),
            region=REGION,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ComputeError(PROVIDER, "the provider has been shut down")


# ---- helpers (blocking ones run in a thread) ------------------------------------------


def _validate(spec: SessionSpec) -> None:
    if not spec.key:
        raise ComputeError(PROVIDER, "the session spec has no key")
    if not spec.command:
        raise ComputeError(PROVIDER, f"session {spec.key}: the spec has no command")
    if spec.region and spec.region != REGION:
        raise ComputeError(
            PROVIDER, f"session {spec.key}: region {spec.region!r} is not served (only {REGION!r})"
        )
    if not spec.health_path.startswith("/"):
        raise ComputeError(
            PROVIDER,
            f"session {spec.key}: health_path must start with '/', not {spec.health_path!r}",
        )
    for relative in spec.files:
        host.file_path(Path("."), relative)


def _valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None

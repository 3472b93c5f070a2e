"""Worker processes on one host: the supervisor of ``interlockd serve --workers N``.

With ``workers`` above 1, ``serve`` becomes a supervisor that serves nothing
itself. It binds (without listening) both listen addresses with SO_REUSEPORT,
which turns port 0 into one concrete port and holds both ports for its whole
life, so a restarted worker finds them still free for it and no other program
takes them in between. It opens the store once (migrations, the master key
file, ``--bootstrap``'s operator key and first sandbox, and on SQLite the
sweep of runs a previous process left running), so workers starting together
never race to create either; the workers leave runs to the leases. Then it starts N children, each
``interlockd serve --worker I`` on the concrete addresses: an ordinary daemon
whose listeners set SO_REUSEPORT (``listen.share_ports``) and whose log lines
carry ``worker=I``. The kernel spreads new connections over the listening
workers; each serves on the one store (SQLite through WAL, one writer at a
time; PostgreSQL freely).

Once every worker says it listens, the supervisor prints the one
``interlockd listening on`` line. SIGTERM or SIGINT goes to every worker,
each announces NOT_SERVING, drains and stops as a single daemon does; the
supervisor exits when all have, nonzero if one failed (or outlived its
announce and grace by :data:`STOP_MARGIN_SECONDS` and was killed). A worker
that dies while serving is restarted after a backoff that doubles while its
restarts keep failing; the others serve meanwhile. A worker that cannot start
at first stops the others: the supervisor exits 1. Workers get SIGTERM when
the supervisor itself dies (Linux' parent-death signal).

What it must never do: serve, or bootstrap in a worker. With ``workers = 1``
``serve`` is the single process it always was: no supervisor in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from interlockd.config import ConfigError, Settings
from interlockd.listen import HTTP_LISTEN_SETTING, LISTEN_SETTING, listen_refused, share_ports

if TYPE_CHECKING:
    from interlockd.daemon import BootstrapCredentials

log = structlog.get_logger(__name__)

#: The first restart of a worker that died waits this long; each failed restart doubles it.
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
#: A worker that served this long before dying restarts after the first backoff again.
STABLE_SECONDS = 30.0
#: How long a starting worker may take to say it listens (the local model loads lazily).
START_SECONDS = 120.0
#: On stop, beyond the announce and the grace: the store's drain and the last calls.
STOP_MARGIN_SECONDS = 30.0
#: A worker's exits that are a clean stop: its own, or our SIGTERM/SIGINT reaching it
#: before its handlers were in place (still starting), or its KeyboardInterrupt exit.
_CLEAN_EXITS = frozenset({0, -signal.SIGTERM, -signal.SIGINT, 130})
_LISTENING = b"interlockd listening on "
_PR_SET_PDEATHSIG = 1


def become_worker(index: int) -> None:
    """Make this process worker ``index`` of a supervisor (``serve --worker I``).

    Its listeners share their ports with its siblings, every log line of the
    daemon's own carries ``worker=index``, and it gets SIGTERM (a graceful
    stop) if the supervisor dies. Call after ``logs.configure``, before the
    daemon starts.
    """
    share_ports()

    def tag(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("worker", index)
        return event

    structlog.configure(processors=[tag, *structlog.get_config()["processors"]])
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Reserved:
    """One listen address bound (not listening) with SO_REUSEPORT: its concrete port, held."""

    def __init__(self, address: str, setting: str) -> None:
        host, _, port_text = address.rpartition(":")
        self.host = host
        self.sockets: list[socket.socket] = []
        try:
            port = int(port_text)
            found = socket.getaddrinfo(
                host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except (ValueError, OSError) as exc:
            raise ConfigError(f"cannot listen on {address!r} ({exc}): fix {setting}") from None
        refused: OSError | None = None
        for family, kind, proto, _, sockaddr in found:
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                # Every address of the host on the one port the first got.
                sock.bind((sockaddr[0], port, *sockaddr[2:]))
            except OSError as exc:
                sock.close()
                refused = exc
                continue
            port = sock.getsockname()[1]
            self.sockets.append(sock)
        if not self.sockets:
            raise ConfigError(listen_refused(address, refused, setting))
        self.port = port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


class Supervisor:
    """``workers`` daemon processes on the shared ports: ``prepare()``, then ``run()``.

    ``config`` and ``data_dir`` are what ``serve`` was given (the workers are
    given them too; the environment is inherited).
    """

    def __init__(
        self, settings: Settings, *, config: Path | None = None, data_dir: Path | None = None
    ) -> None:
        self.settings = settings
        self.count = settings.workers
        self._config = config
        self._data_dir = data_dir
        self._grpc: _Reserved | None = None
        self._http: _Reserved | None = None
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._failed_start = False
        self._drains: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The gRPC port every worker serves on."""
        assert self._grpc is not None, "prepare() first"
        return self._grpc.port

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC side, as the ``listening`` line names it."""
        assert self._grpc is not None, "prepare() first"
        return self._grpc.address

    async def prepare(self, bootstrap: bool) -> BootstrapCredentials | None:
        """Hold both ports; open the store once (and bootstrap it when asked)."""
        from interlockd.daemon import bootstrap as bootstrap_store
        from interlockd.storage import open_store

        self._grpc = _Reserved(self.settings.listen, LISTEN_SETTING)
        self._http = _Reserved(self.settings.http_listen, HTTP_LISTEN_SETTING)
        store = open_store(self.settings)
        await store.open()
        try:
            if self.settings.store_url is None:
                # Alone on the SQLite file until the workers start (they leave this to
                # the leases): runs a previous process left running end as interrupted.
                interrupted = await store.interrupt_running_runs()
                if interrupted:
                    log.warning("runs_interrupted", count=interrupted)
            return await bootstrap_store(store) if bootstrap else None
        finally:
            await store.close()

    async def run(self, ready: Callable[[], None]) -> int:
        """Start the workers, call ``ready`` once all listen, keep them up until signalled.

        Returns the process's exit code: 0 if every worker stopped cleanly.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            log.info("workers_starting", count=self.count, address=self.address)
            if not await self._start_all():
                code = await self._stop_all()
                return 1 if self._failed_start else code
            ready()
            keepers = [asyncio.create_task(self._keep(i)) for i in self._procs]
            await self._stopping.wait()
            code = await self._stop_all()
            await asyncio.gather(*keepers)
            return code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            for reserved in (self._grpc, self._http):
                if reserved is not None:
                    reserved.close()

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        assert self._grpc is not None
        assert self._http is not None
        argv = [sys.executable, "-m", "interlockd.cli", "serve", "--worker", str(index)]
        if self._config is not None:
            argv += ["--config", str(self._config)]
        if self._data_dir is not None:
            argv += ["--data-dir", str(self._data_dir)]
        argv += ["--listen", self._grpc.address]
        # Settings read the environment after the file: the worker's HTTP side is ours.
        env = {**os.environ, "INTERLOCK_HTTP_LISTEN": self._http.address}
        # stdout is the worker's banner (the listening line); its log is our stderr.
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, env=env
        )
        self._procs[index] = proc
        if self._stopping.is_set():  # started as the others were told to stop
            proc.send_signal(signal.SIGTERM)
        log.info("worker_started", worker=index, pid=proc.pid)
        return proc

    async def _listening(self, proc: asyncio.subprocess.Process) -> bool:
        """Whether ``proc`` says it listens (False: it exited or took too long first)."""
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(START_SECONDS):
                while line := await proc.stdout.readline():
                    if line.startswith(_LISTENING):
                        # Drained from here on: a full pipe would block the worker.
                        drain = asyncio.create_task(_drain(proc.stdout))
                        self._drains.add(drain)
                        drain.add_done_callback(self._drains.discard)
                        return True
        except TimeoutError:
            log.error("worker_start_timed_out", pid=proc.pid, seconds=START_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return False

    async def _start_all(self) -> bool:
        """Start every worker; whether all listen (False: one failed, or a signal came)."""
        pending: set[asyncio.Task[bool]] = {
            asyncio.create_task(self._start(i)) for i in range(1, self.count + 1)
        }
        stop = asyncio.create_task(self._stopping.wait())
        try:
            while pending:
                done, _ = await asyncio.wait({stop, *pending}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    return False
                pending -= done
                if not all(task.result() for task in done):
                    self._failed_start = True
                    return False
            return True
        finally:
            stop.cancel()
            for task in pending:
                task.cancel()

    async def _start(self, index: int) -> bool:
        """Start worker ``index``; whether it listens."""
        proc = await self._spawn(index)
        if await self._listening(proc):
            return True
        log.error("worker_failed_to_start", worker=index, exit_code=await proc.wait())
        return False

    async def _keep(self, index: int) -> None:
        """Restart worker ``index`` whenever it dies, until the supervisor stops."""
        failures = 0  # deaths in a row, each within STABLE_SECONDS of its start
        since = time.monotonic()
        while True:
            proc = self._procs[index]
            code = await proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - since >= STABLE_SECONDS:
                failures = 0
            delay = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2**failures)
            failures += 1
            log.error("worker_exited", worker=index, pid=proc.pid, exit_code=code, restart_in=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            proc = await self._spawn(index)
            since = time.monotonic()
            if await self._listening(proc):
                log.info("worker_restarted", worker=index, pid=proc.pid)

    async def _stop_all(self) -> int:
        """SIGTERM to every worker; wait for all (killing the late); 1 if any failed."""
        self._stopping.set()
        s = self.settings
        alive = [p for p in self._procs.values() if p.returncode is None]
        log.info("workers_stopping", count=len(alive))
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        within = s.shutdown_announce_seconds + s.shutdown_grace_seconds + STOP_MARGIN_SECONDS
        failed = 0
        for index, proc in self._procs.items():
            try:
                code = await asyncio.wait_for(proc.wait(), max(0.0, within))
            except TimeoutError:
                log.error("worker_stop_timed_out", worker=index, pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                code = await proc.wait()
            if code not in _CLEAN_EXITS:
                failed += 1
                log.error("worker_failed", worker=index, pid=proc.pid, exit_code=code)
        log.info("workers_stopped", failed=failed)
        return 1 if failed else 0


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(1 << 16):
        pass

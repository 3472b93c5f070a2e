"""The supervision of one local compute session's runtime process.

Owns launching the runtime (its process group, its environment and log),
waiting until it answers its health path, restarting it with backoff when it
exits or stops answering, giving up after too many restarts, and stopping it
(SIGTERM to the group, SIGKILL after the grace). The provider owns everything
else of the session (its record, directory and status).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from interlockd.compute.base import ComputeError
from interlockd.compute.local import host
from interlockd.vocabulary import SessionSpec

if TYPE_CHECKING:
    from interlockd.compute.local.provider import LocalComputeProvider

log = structlog.get_logger(__name__)

PROVIDER = host.PROVIDER
_HEALTH_FAILURES = 3  # consecutive failed probes before a live runtime is killed and restarted
_MAX_BACKOFF = 30.0
_POLL = 0.05  # seconds between readiness probes
_REAP_WAIT = 5.0  # bound on waiting for a SIGKILLed process to be reaped


class Runner:
    """One session's process group and the task supervising it."""

    def __init__(
        self, owner: LocalComputeProvider, name: str, spec: SessionSpec, directory: Path, port: int
    ) -> None:
        self.owner = owner
        self.name = name
        self.spec = spec
        self.directory = directory
        self.port = port
        self.failed = False
        self.process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._restarts: deque[float] = deque()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def serving(self) -> bool:
        """Whether the process is up (not between a crash and its restart)."""
        return not self.failed and self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Launch and wait until healthy (ComputeError if not), then supervise."""
        await self._launch()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"compute-{self.name}")

    async def stop(self) -> None:
        """Stop supervising and terminate the process group."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        await self._terminate()

    async def _launch(self) -> None:
        owner, spec = self.owner, self.spec
        state = self.directory / host.STATE
        argv = [host.fill(arg, self.port, state) for arg in spec.command]
        env = owner._environment(spec, state, self.port)
        output = host.open_log(self.directory / host.LOG)
        owner._launching.add(self.port)
        try:
            await self._spawn_and_wait(argv, env, state, output)
        finally:
            owner._launching.discard(self.port)

    async def _spawn_and_wait(
        self, argv: list[str], env: dict[str, str], state: Path, output: int
    ) -> None:
        owner, path = self.owner, self.spec.health_path
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                # A file, not a pipe: nothing to drain, and a pipe held open by a
                # grandchild would keep Process.wait() from returning.
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                cwd=state,
                env=env,
                # Its own process group: stopping it reaches everything it spawned,
                # and a Ctrl-C at the daemon's terminal does not.
                start_new_session=True,
            )
        except OSError as exc:
            raise ComputeError(
                PROVIDER, f"session {self.name}: cannot start {argv[0]!r}: {exc.strerror or exc}"
            ) from None
        finally:
            os.close(output)
        self.process = process
        try:
            async with asyncio.timeout(owner.startup_timeout):
                while process.returncode is None:
                    if await owner._healthy(self.port, path):
                        return
                    await asyncio.sleep(_POLL)
            reason = f"exited during startup (status {process.returncode})"
        except TimeoutError:
            reason = f"did not answer GET {path} within {owner.startup_timeout:g}s"
        except BaseException:
            host.signal_group(process.pid, signal.SIGKILL)  # cancelled: leave nothing behind
            raise
        await self._terminate()
        log.warning("compute_local_start_failed", session=self.name, reason=reason)
        raise ComputeError(PROVIDER, f"session {self.name}: the runtime {reason}{self._tail()}")

    async def _terminate(self) -> None:
        process = self.process
        if process is None:
            return
        try:
            if process.returncode is None:
                host.signal_group(process.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.owner.stop_grace):
                        await process.wait()
            # The leader if it ignored SIGTERM, and whatever it spawned that did.
            host.signal_group(process.pid, signal.SIGKILL)
            async with asyncio.timeout(_REAP_WAIT):
                await process.wait()
        except TimeoutError:
            log.error("compute_local_unkillable", session=self.name, pid=process.pid)
        except BaseException:
            host.signal_group(process.pid, signal.SIGKILL)
            raise
        log.info("compute_local_stopped", session=self.name, pid=process.pid)

    async def _supervise(self) -> None:
        """Restart the runtime when it exits or stops answering; give up after too many."""
        failed_probes = 0
        while True:
            process = self.process
            assert process is not None
            try:
                async with asyncio.timeout(self.owner.health_interval):
                    await process.wait()
            except TimeoutError:
                healthy = await self.owner._healthy(self.port, self.spec.health_path)
                failed_probes = 0 if healthy else failed_probes + 1
                if failed_probes >= _HEALTH_FAILURES:
                    log.warning(
                        "compute_local_unresponsive", session=self.name, failed_probes=failed_probes
                    )
                    host.signal_group(process.pid, signal.SIGKILL)
                continue
            failed_probes = 0
            host.signal_group(process.pid, signal.SIGKILL)  # what it spawned dies with it
            log.warning(
                "compute_local_exited",
                session=self.name,
                pid=process.pid,
                returncode=process.returncode,
                output_tail=self._tail(),
            )
            if not await self._restart():
                self.failed = True
                self.owner._record_failed(self.name)
                log.error(
                    "compute_local_gave_up",
                    session=self.name,
                    restarts=len(self._restarts),
                    window_seconds=self.owner.restart_window,
                )
                return

    async def _restart(self) -> bool:
        owner = self.owner
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._restarts and now - self._restarts[0] > owner.restart_window:
                self._restarts.popleft()
            if len(self._restarts) >= owner.max_restarts:
                return False
            self._restarts.append(now)
            await asyncio.sleep(
                min(owner.restart_backoff * 2 ** (len(self._restarts) - 1), _MAX_BACKOFF)
            )
            if not host.port_free(self.port):
                self.port = owner._pick_port()
            try:
                await self._launch()
            except ComputeError:
                continue  # counted; logged by _launch
            owner._record_process(self.name, self)
            log.info("compute_local_restarted", session=self.name, pid=self.pid, port=self.port)
            return True

    def _tail(self) -> str:
        """The end of the runtime's output, for an operator reading the error."""
        return host.log_tail(self.directory / host.LOG)

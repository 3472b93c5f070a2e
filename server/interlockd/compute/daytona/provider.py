"""Daytona sandboxes as compute, through the official ``daytona`` SDK (the ``daytona`` extra).

One sandbox per session key, named from the key (``interlock-<slug>-<hash>``) and
labelled with the spec's labels plus ``interlock.key`` / ``interlock.managed``, in
the region the spec asks for (Daytona's ``target``). The SDK runs in polling
mode (``use_deprecated_polling``): no socket.io connection is opened.

- **ensure**: find the sandbox (the given id, else the key's name), wait out a
  transitional state, start it when stopped or archived (Daytona restores an
  archived one), else create it. Then start the runtime when it is not already
  running with this very spec: the spec's files and an env file
  (``.interlock/runtime.env``, so secrets stay out of the command line and the
  sandbox's metadata) are uploaded through the toolbox's file API into the
  sandbox's working directory, and the command runs there asynchronously in a
  toolbox process session ``interlock-runtime-<port>-<digest>`` (a stop ends
  processes, so every start runs it again). Ready means the health path answers
  2xx through the preview URL; a runtime that exits first fails at once, with
  the tail of its output.
- **endpoint**: the preview URL of the runtime's port and its token in
  ``x-daytona-preview-token``, fetched anew every time (the token changes on every
  start). The port is read back from the session's name when not known.
- **suspend** = stop (disk kept); **archive** = stop, then archive (Daytona's
  ``archive`` returns at once: the state is polled); **destroy** = delete
  (idempotent; it does not wait either).

Idle: the router's scheduler owns idle stop and archive, so sandboxes are
created with Daytona's own timers off as far as its API allows:
``autoStopInterval`` 0 (never), ``autoDeleteInterval`` -1 (never) and
``autoArchiveInterval`` 0, which Daytona reads as its *maximum* interval (it
cannot be switched off; the scheduler archives long before). Daytona counts API
calls and preview traffic as activity, not the processes inside, so its
auto-stop would stop a sandbox in the middle of a long tool call. Given
``auto_stop_minutes`` as a safety net instead, the provider sends
``last-activity`` heartbeats for every session it ensured until it suspends,
archives or destroys it, or closes.

Operations on one session key are serialised (a lock per key), so an ensure
never races a suspend or destroy of the same sandbox from this router.

Every state change is waited for by polling with a bound (``transition_timeout``);
Daytona's failures become :class:`ComputeError` naming the sandbox and what to do.
Sizes are fixed by the snapshot: ``spec.size`` is accepted and ignored.

It must never log ``spec.env`` or ``spec.files`` (they hold secrets), nor put them
in a sandbox's labels or env.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import httpx
import structlog
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    DaytonaAuthenticationError,
    DaytonaConfig,
    DaytonaConflictError,
    DaytonaConnectionError,
    DaytonaError,
    DaytonaNotFoundError,
    DaytonaRateLimitError,
    FileUpload,
    ListSandboxesQuery,
    SessionExecuteRequest,
)

# The sandbox objects carry the async API client's enum (the package exports the sync one).
from daytona_api_client_async import SandboxState

from interlockd.compute import remote
from interlockd.compute.base import (
    Capabilities,
    ComputeError,
    ComputePrice,
    ComputeProvider,
    ComputeSession,
    Endpoint,
    fill_placeholders,
)
from interlockd.compute.daytona import sandboxes
from interlockd.vocabulary import SessionSpec

if TYPE_CHECKING:
    from daytona import AsyncSandbox

log = structlog.get_logger(__name__)

DEFAULT_API_URL = "https://app.daytona.io/api"

# Published prices (per second): $0.000014 per vCPU and $0.0000045 per GiB of
# memory while running; a stopped sandbox pays only for its disk, a price the
# table we priced from does not give (so 0 here).
PRICE_VERSION = "daytona/2026-11-23"
_USD_PER_VCPU_SECOND = 0.000014
_USD_PER_GIB_SECOND = 0.0000045
PROVIDER = "daytona"

_MAX_POLL = 0.5  # seconds between polls of a state or a health path, at most


def _detail(exc: BaseException) -> str:
    return remote.short(str(exc) or type(exc).__name__)


class DaytonaProvider(ComputeProvider):
    """``daytona``: runtimes in Daytona sandboxes."""

    name = PROVIDER

    def __init__(
        self,
        *,
        api_key: str,
        api_url: str = DEFAULT_API_URL,
        target: str = "us",
        regions: tuple[str, ...] = ("us", "eu"),
        snapshot: str | None = None,
        auto_stop_minutes: int = 0,
        heartbeat_seconds: float | None = None,
        auto_archive_minutes: int = 0,
        network_block_all: bool = False,
        network_allow_list: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        vcpus: float = 1.0,
        memory_gib: float = 1.0,
        ready_timeout: float = 120.0,
        transition_timeout: float = 120.0,
        name_prefix: str = "interlock-",
    ) -> None:
        """``api_key`` and ``api_url`` reach Daytona; ``target`` is the region of specs
        that name none, one of ``regions``; ``snapshot`` the one with the runtime
        installed (Daytona's default when None). ``auto_stop_minutes`` 0 leaves idle
        stop to the scheduler; more turns Daytona's on, with heartbeats every
        ``heartbeat_seconds`` (a third of it by default) while a session is held.
        ``auto_archive_minutes`` 0 is Daytona's maximum (it cannot be turned off).
        ``network_block_all`` and ``network_allow_list`` (comma-separated CIDRs) limit
        the sandbox's egress. ``extra_env`` goes under every spec's env (the runtime
        must listen on 0.0.0.0: hermes-agent is told so by ``API_SERVER_HOST``).
        ``vcpus`` and ``memory_gib`` size the price only. ``ready_timeout`` bounds the
        wait for the runtime's health path; ``transition_timeout`` each state change.
        ``name_prefix`` starts every sandbox name this router makes."""
        if auto_stop_minutes < 0:
            raise ValueError("auto_stop_minutes must be 0 (never) or more")
        if auto_archive_minutes < 0:
            raise ValueError("auto_archive_minutes must be 0 (Daytona's maximum) or more")
        if target not in regions:
            raise ValueError(f"target {target!r} is not one of the regions {regions}")
        self._api_key = api_key
        self._api_url = api_url
        self._target = target
        self._snapshot = snapshot
        self._auto_stop_minutes = auto_stop_minutes
        self._heartbeat_seconds = heartbeat_seconds or max(auto_stop_minutes * 60 / 3, 1.0)
        self._auto_archive_minutes = auto_archive_minutes
        self._network_block_all = network_block_all
        self._network_allow_list = network_allow_list
        self._extra_env = dict({"API_SERVER_HOST": "0.0.0.0"} if extra_env is None else extra_env)
        self._ready_timeout = ready_timeout
        self._transition_timeout = transition_timeout
        self._name_prefix = name_prefix
        self.capabilities = Capabilities(
            suspend=True,
            archive=True,
            self_idles_after=auto_stop_minutes * 60.0,
            regions=regions,
            cold_start_seconds=5.0,
            resume_seconds=3.0,
        )
        self.price = ComputePrice(
            active_usd_per_second=vcpus * _USD_PER_VCPU_SECOND + memory_gib * _USD_PER_GIB_SECOND,
            suspended_usd_per_second=0.0,
            price_version=PRICE_VERSION,
        )
        self._daytona: AsyncDaytona | None = None
        self._http: httpx.AsyncClient | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._ports: dict[str, int] = {}  # sandbox id -> the runtime's port
        self._heartbeats: dict[str, asyncio.Task[None]] = {}

    # ---- the ComputeProvider contract ----------------------------------------------

    async def ensure(self, spec: SessionSpec, external_id: str | None = None) -> ComputeSession:
        """Resume the key's sandbox (``external_id`` first) or create it, start the runtime
        unless it already runs this spec, and return once its health path answers."""
        # Files land in the sandbox's work directory, where the runtime starts.
        spec = fill_placeholders(spec, host="0.0.0.0", port=spec.port, state_dir=".")
        remote.check_spec(PROVIDER, spec, "the sandbox")
        region = spec.region or self._target
        if region not in self.capabilities.regions:
            raise ComputeError(
                self.name,
                f"region {region!r} is not served; one of {', '.join(self.capabilities.regions)}",
            )
        try:
            env = {**self._extra_env, **spec.env}
            script = sandboxes.env_script(env)
        except ValueError as exc:
            raise ComputeError(self.name, f"session {spec.key}: {exc}") from None
        async with self._lock(spec.key):
            sandbox = await self._resume(spec, external_id)
            if sandbox is None:
                sandbox = await self._create(spec, region)
            command = await self._start_runtime(sandbox, spec, env, script)
            await self._wait_ready(sandbox, spec, command)
            self._heartbeat(sandbox.id)
            return sandboxes.session_of(self.name, sandbox)

    async def endpoint(self, session: ComputeSession) -> Endpoint:
        """The preview URL of the runtime's port and its token in ``x-daytona-preview-token``,
        fetched anew on every call: the token changes whenever the sandbox starts."""
        sandbox = await self._get_existing(session.external_id)
        if sandbox.state != SandboxState.STARTED:
            raise ComputeError(
                self.name,
                f"sandbox {sandbox.name} is {sandboxes.state_of(sandbox)}, "
                "not started: ensure it first",
            )
        port = self._ports.get(sandbox.id) or await self._runtime_port(sandbox)
        with self._errors(f"preview URL of sandbox {sandbox.name} port {port}"):
            link = await sandbox.get_preview_link(port)
        return Endpoint(
            base_url=link.url.rstrip("/"), headers={sandboxes.PREVIEW_TOKEN_HEADER: link.token}
        )

    async def suspend(self, session: ComputeSession) -> ComputeSession:
        """Stop the sandbox (its disk is kept; its processes end)."""
        async with self._lock(session.key):
            self._stop_heartbeat(session.external_id)
            sandbox = await self._settled(await self._get_existing(session.external_id))
            if sandbox.state == SandboxState.STARTED:
                with self._errors(f"stopping sandbox {sandbox.name}"):
                    await sandbox.stop(timeout=self._transition_timeout)
            elif sandbox.state in sandboxes.FAILED:
                raise self._failed(sandbox)
            return sandboxes.session_of(self.name, sandbox)

    async def archive(self, session: ComputeSession) -> ComputeSession:
        """Stop the sandbox if it runs, then archive it and wait until Daytona has
        (its ``archive`` returns at once). An archived sandbox is returned as is."""
        async with self._lock(session.key):
            self._stop_heartbeat(session.external_id)
            sandbox = await self._settled(await self._get_existing(session.external_id))
            if sandbox.state == SandboxState.STARTED:
                with self._errors(f"stopping sandbox {sandbox.name}"):
                    await sandbox.stop(timeout=self._transition_timeout)
            if sandbox.state in (SandboxState.STOPPED, SandboxState.PAUSED):
                with self._errors(f"archiving sandbox {sandbox.name}"):
                    await sandbox.archive()
                sandbox = await self._settled(sandbox)
            if sandbox.state != SandboxState.ARCHIVED:
                if sandbox.state in sandboxes.FAILED:
                    raise self._failed(sandbox)
                raise ComputeError(
                    self.name,
                    f"sandbox {sandbox.name} is {sandboxes.state_of(sandbox)} after archiving",
                )
            return sandboxes.session_of(self.name, sandbox)

    async def destroy(self, session: ComputeSession) -> None:
        """Delete the sandbox without waiting for it to go (Daytona's ``delete`` returns
        at once; an ensure of the key waits it out). Idempotent."""
        async with self._lock(session.key):
            self._stop_heartbeat(session.external_id)
            self._ports.pop(session.external_id, None)
            sandbox = await self._find(session.external_id)
            if sandbox is None or sandbox.state in (
                SandboxState.DESTROYED,
                SandboxState.DESTROYING,
            ):
                return
            try:
                await self._client().delete(sandbox)
            except DaytonaNotFoundError:
                return
            except DaytonaError as exc:
                raise self._error(f"deleting sandbox {sandbox.name}", exc) from exc
            log.info("compute_daytona_destroyed", sandbox=sandbox.name)

    async def health(self) -> bool:
        """Whether Daytona's API answers a one-item list of this router's sandboxes."""
        try:
            async with asyncio.timeout(10):
                query = ListSandboxesQuery(labels={sandboxes.MANAGED_LABEL: "true"}, limit=1)
                async for _ in self._client().list(query):
                    break
        except Exception as exc:  # any failure means "not healthy"; say why in the log
            log.info("compute_daytona_unhealthy", error=_detail(exc))
            return False
        return True

    async def list(self, labels: Mapping[str, str] | None = None) -> list[ComputeSession]:
        """The sandboxes labelled ``interlock.managed``, filtered by Daytona on ``labels``."""
        query = ListSandboxesQuery(
            labels={**(labels or {}), sandboxes.MANAGED_LABEL: "true"}, limit=100
        )
        sessions = []
        with self._errors("listing sandboxes"):
            async for sandbox in self._client().list(query):
                sessions.append(sandboxes.session_of(self.name, sandbox))
        return sessions

    async def aclose(self) -> None:
        """Stop the heartbeats and close the clients; sandboxes are left as they are."""
        beats = list(self._heartbeats.values())
        for external_id in list(self._heartbeats):
            self._stop_heartbeat(external_id)
        await asyncio.gather(*beats, return_exceptions=True)
        if self._daytona is not None:
            await self._daytona.close()  # type: ignore[no-untyped-call]  # unannotated upstream
            self._daytona = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ---- finding, creating and starting sandboxes -------------------------------------

    def session_name(self, key: str) -> str:
        """The sandbox name of a session key."""
        return sandboxes.session_name(key, self._name_prefix)

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _resume(self, spec: SessionSpec, external_id: str | None) -> AsyncSandbox | None:
        """The key's sandbox, started; None when there is none (or it is being deleted)."""
        sandbox = None
        if external_id:
            sandbox = await self._find(external_id)
            if sandbox is not None and sandbox.labels.get(sandboxes.KEY_LABEL) != spec.key:
                log.warning("compute_daytona_foreign_sandbox", sandbox=sandbox.name)
                sandbox = None
        if sandbox is None:
            sandbox = await self._find(self.session_name(spec.key))
        if sandbox is None:
            return None
        sandbox = await self._settled(sandbox)
        if sandbox.state == SandboxState.DESTROYED:
            return None
        if sandbox.state in sandboxes.FAILED:
            raise self._failed(sandbox)
        if sandbox.state != SandboxState.STARTED:
            # Stopped, paused or archived (Daytona restores an archived one first).
            with self._errors(f"starting sandbox {sandbox.name}"):
                await sandbox.start(timeout=self._transition_timeout)
        return sandbox

    async def _create(self, spec: SessionSpec, region: str) -> AsyncSandbox:
        name = self.session_name(spec.key)
        params = CreateSandboxFromSnapshotParams(
            name=name,
            snapshot=self._snapshot,
            labels={**spec.labels, sandboxes.KEY_LABEL: spec.key, sandboxes.MANAGED_LABEL: "true"},
            public=False,
            auto_stop_interval=self._auto_stop_minutes,
            auto_archive_interval=self._auto_archive_minutes,  # 0: Daytona's maximum
            auto_delete_interval=-1,  # never
            network_block_all=self._network_block_all or None,
            network_allow_list=self._network_allow_list,
            target=region,
        )
        try:
            return await self._client().create(params, timeout=self._transition_timeout)
        except DaytonaConflictError:
            # Made meanwhile by another router: take that one.
            sandbox = await self._resume(spec, None)
            if sandbox is None:
                raise ComputeError(
                    self.name, f"sandbox {name} exists but cannot be found"
                ) from None
            return sandbox
        except DaytonaError as exc:
            raise self._error(f"creating sandbox {name} in {region}", exc) from exc

    async def _start_runtime(
        self, sandbox: AsyncSandbox, spec: SessionSpec, env: Mapping[str, str], script: bytes
    ) -> tuple[str, str]:
        """Run the spec's command unless it already runs: (session id, command id)."""
        session_id = sandboxes.runtime_session(spec, env)
        self._ports[sandbox.id] = spec.port
        with self._errors(f"starting the runtime in sandbox {sandbox.name}"):
            for session in await sandbox.process.list_sessions():
                running = [c for c in session.commands or [] if c.exit_code is None]
                if session.session_id == session_id and running:
                    return session_id, running[-1].id
                if session.session_id.startswith(sandboxes.RUNTIME_SESSION_PREFIX):
                    # The runtime of another spec (or one that exited): end it.
                    await sandbox.process.delete_session(session.session_id)
            uploads = [FileUpload(content, path) for path, content in sorted(spec.files.items())]
            await sandbox.fs.upload_files([*uploads, FileUpload(script, sandboxes.ENV_FILE)])
            # Relative uploads land in the sandbox's working directory: run from there.
            workdir = await sandbox.get_work_dir()
            await sandbox.process.create_session(session_id)
            started = await sandbox.process.execute_session_command(
                session_id,
                SessionExecuteRequest(
                    command=sandboxes.launch_command(workdir, spec.command), run_async=True
                ),
            )
        return session_id, started.cmd_id

    async def _wait_ready(
        self, sandbox: AsyncSandbox, spec: SessionSpec, command: tuple[str, str]
    ) -> None:
        """Poll the health path through the preview URL until it answers 2xx (bounded)."""
        session_id, command_id = command
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout
        delay = 0.05
        last = "no answer yet"
        endpoint = await self.endpoint(sandboxes.session_of(self.name, sandbox))
        while True:
            try:
                response = await self._http_client().get(
                    endpoint.base_url + spec.health_path, headers=dict(endpoint.headers)
                )
                if response.is_success:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            with self._errors(f"checking the runtime of sandbox {sandbox.name}"):
                state = await sandbox.process.get_session_command(session_id, command_id)
            if state.exit_code is not None:
                output = await self._output(sandbox, session_id, command_id)
                log.warning(
                    "compute_daytona_runtime_exited", sandbox=sandbox.name, code=state.exit_code
                )
                raise ComputeError(
                    self.name,
                    f"the runtime in sandbox {sandbox.name} exited with code {state.exit_code} "
                    f"before answering {spec.health_path}{output}",
                )
            if loop.time() >= deadline:
                raise ComputeError(
                    self.name,
                    f"the runtime in sandbox {sandbox.name} did not answer {spec.health_path} "
                    f"within {self._ready_timeout:g}s (last: {last})",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_POLL)

    async def _output(self, sandbox: AsyncSandbox, session_id: str, command_id: str) -> str:
        """The tail of a runtime command's output, or where to find it."""
        try:
            logs = await sandbox.process.get_session_command_logs(session_id, command_id)
        except DaytonaError:
            return f" (its output is in process session {session_id})"
        return remote.output_tail(logs.output or "")

    async def _runtime_port(self, sandbox: AsyncSandbox) -> int:
        with self._errors(f"listing the processes of sandbox {sandbox.name}"):
            sessions = await sandbox.process.list_sessions()
        port = sandboxes.runtime_port(session.session_id for session in sessions)
        if port is not None:
            self._ports[sandbox.id] = port
            return port
        raise ComputeError(
            self.name, f"sandbox {sandbox.name} runs no runtime: ensure the session first"
        )

    # ---- waiting and reading state -----------------------------------------------------

    async def _find(self, id_or_name: str) -> AsyncSandbox | None:
        try:
            return await self._client().get(id_or_name)
        except DaytonaNotFoundError:
            return None
        except DaytonaError as exc:
            raise self._error(f"reading sandbox {id_or_name}", exc) from exc

    async def _get_existing(self, external_id: str) -> AsyncSandbox:
        sandbox = await self._find(external_id)
        if sandbox is None:
            raise ComputeError(self.name, f"sandbox {external_id} no longer exists")
        return sandbox

    async def _settled(self, sandbox: AsyncSandbox) -> AsyncSandbox:
        """Poll ``sandbox`` until it leaves a transitional state (bounded); a sandbox that
        disappears meanwhile is DESTROYED."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._transition_timeout
        delay = 0.05
        while sandbox.state in sandboxes.TRANSITIONAL:
            if loop.time() >= deadline:
                raise ComputeError(
                    self.name,
                    f"sandbox {sandbox.name} is still {sandboxes.state_of(sandbox)} after "
                    f"{self._transition_timeout:g}s; try again later",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_POLL)
            try:
                await sandbox.refresh_data()
            except DaytonaNotFoundError:
                sandbox.state = SandboxState.DESTROYED
            except DaytonaError as exc:
                raise self._error(f"reading sandbox {sandbox.name}", exc) from exc
        return sandbox

    # ---- keep-alive --------------------------------------------------------------------

    def _heartbeat(self, sandbox_id: str) -> None:
        """With Daytona's own auto-stop on, tell it the session is in use until released."""
        if self._auto_stop_minutes == 0 or sandbox_id in self._heartbeats:
            return
        task = asyncio.create_task(self._beat(sandbox_id), name=f"daytona-heartbeat-{sandbox_id}")
        self._heartbeats[sandbox_id] = task

    async def _beat(self, sandbox_id: str) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            try:
                sandbox = await self._client().get(sandbox_id)
                await sandbox.refresh_activity()
            except DaytonaNotFoundError:
                self._heartbeats.pop(sandbox_id, None)
                return
            except DaytonaError as exc:  # keep beating: the next one may get through
                log.warning(
                    "compute_daytona_heartbeat_failed", sandbox=sandbox_id, error=_detail(exc)
                )

    def _stop_heartbeat(self, sandbox_id: str) -> None:
        task = self._heartbeats.pop(sandbox_id, None)
        if task is not None:
            task.cancel()

    # ---- clients and errors ------------------------------------------------------------

    def _client(self) -> AsyncDaytona:
        if self._daytona is None:
            config = DaytonaConfig(
                api_key=self._api_key,
                api_url=self._api_url,
                target=self._target,
                use_deprecated_polling=True,
            )
            with warnings.catch_warnings():
                # Polling is deprecated upstream, but the alternative is a socket.io
                # connection per client that a router has no use for.
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    self._daytona = AsyncDaytona(config)
                except DaytonaError as exc:
                    raise self._error("configuring the client", exc) from exc
        return self._daytona

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            # trust_env=False: the preview URL is reached directly, never via a proxy.
            self._http = httpx.AsyncClient(timeout=10.0, trust_env=False)
        return self._http

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except DaytonaError as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: DaytonaError) -> ComputeError:
        if isinstance(exc, DaytonaAuthenticationError):
            hint = "the API key was refused: check the daytona provider's api_key"
        elif isinstance(exc, DaytonaRateLimitError):
            hint = "rate limited by Daytona: try again shortly"
        elif isinstance(exc, DaytonaConnectionError):
            hint = f"cannot reach {self._api_url}: {_detail(exc)}"
        else:
            hint = _detail(exc)
        return ComputeError(self.name, f"{what}: {hint}")

    def _failed(self, sandbox: AsyncSandbox) -> ComputeError:
        reason = f" ({sandbox.error_reason})" if sandbox.error_reason else ""
        return ComputeError(
            self.name, f"sandbox {sandbox.name} is in error{reason}: destroy it and ensure again"
        )

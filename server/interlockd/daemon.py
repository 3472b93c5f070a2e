"""Build, run and stop the daemon: the grpc.aio server and everything behind it.

Start: check that both listen addresses are free, prove the master key opens
the keys the store already holds (the key file is created only for a store
holding none), open the store, mark runs a previous process left running as
interrupted, build the provider registry and the servicers, bind. A start
that fails closes whatever it had opened, so the process exits instead of
hanging on the store's threads; a refused address or master key fails before
anything is written. Stop (SIGTERM/SIGINT): health goes
NOT_SERVING, new runs are refused, in-flight streams get the grace period to
finish, the rest are cancelled and record what they produced, then backends
(the local model server among them) and the store close.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from interlock.v1 import (
    agents_pb2,
    compute_pb2,
    conversations_pb2,
    events_pb2,
    integrations_pb2,
    ledger_pb2,
    router_pb2,
    sandboxes_pb2,
)
from interlockd.api.agents import AgentsServicer
from interlockd.api.auth import OPERATOR_KEY_PREFIX, Authenticator, hash_secret, new_secret
from interlockd.api.compute import ComputeServicer
from interlockd.api.conversations import ConversationsServicer
from interlockd.api.handlers import generic_handler
from interlockd.api.integrations import IntegrationsServicer
from interlockd.api.ledger import LedgerServicer
from interlockd.api.router import AgentRouterServicer
from interlockd.api.sandboxes import SandboxesServicer, create_api_key
from interlockd.backends.kinds import build_backend
from interlockd.backends.registry import BackendDeps, BackendRegistry
from interlockd.compute.base import ComputeDeps, ComputeProvider
from interlockd.compute.kinds import build_compute_provider
from interlockd.compute.placement import SchedulerSettings
from interlockd.compute.scheduler import ComputeScheduler
from interlockd.config import ConfigError, Settings
from interlockd.context.cache import configure_window_cache
from interlockd.errors import InterlockError
from interlockd.http.forward import Forwarder
from interlockd.http.oauth_callback import callback_route
from interlockd.http.server import HttpServer
from interlockd.integrations.base import App
from interlockd.integrations.connect import ConnectFlows
from interlockd.integrations.egress import EgressPolicy
from interlockd.integrations.mcp import McpSources
from interlockd.integrations.tool_source import IntegrationTools
from interlockd.listen import (
    HTTP_LISTEN_SETTING,
    LISTEN_SETTING,
    check_listen_address,
    listen_refused,
    ports_shared,
)
from interlockd.pauses import PauseBoard
from interlockd.runs.admission import Admission
from interlockd.runs.leases import RunLeases
from interlockd.runs.orchestrator import Orchestrator
from interlockd.runs.turn import TurnDeps
from interlockd.storage import open_store
from interlockd.store.base import Quotas, Run, Store
from interlockd.tools.base import ToolRegistry
from interlockd.tools.dispatch import Dispatch
from interlockd.tools.grants import GrantRegistry, ToolAccess
from interlockd.tools.search import SearchConversationsTool
from interlockd.tools.selection import RunTools
from interlockd.tools.shared_grants import SharedGrants

log = structlog.get_logger(__name__)
#: After the runs' grace: how long other calls in flight get before the server stops.
_LAST_CALLS_SECONDS = 1.0

_SERVICES = {
    "interlock.v1.AgentRouter": router_pb2,
    "interlock.v1.Sandboxes": sandboxes_pb2,
    "interlock.v1.Conversations": conversations_pb2,
    "interlock.v1.Integrations": integrations_pb2,
    "interlock.v1.Compute": compute_pb2,
    "interlock.v1.Agents": agents_pb2,
    "interlock.v1.Ledger": ledger_pb2,
}


def _messages() -> dict[str, type]:
    found: dict[str, type] = {}
    for module in (
        agents_pb2,
        router_pb2,
        events_pb2,
        sandboxes_pb2,
        conversations_pb2,
        integrations_pb2,
        compute_pb2,
        ledger_pb2,
    ):
        for name in module.DESCRIPTOR.message_types_by_name:
            cls = getattr(module, name)
            found[cls.DESCRIPTOR.full_name] = cls
    return found


#: The environment variable that gives the master key directly.
def build_apps(settings: Settings) -> dict[str, App]:
    """The connectable apps the operator configured, by name."""
    apps: dict[str, App] = {}
    if (gh := settings.integrations.github) is not None:
        from interlockd.integrations.github import GitHubApp

        apps["github"] = GitHubApp(
            client_id=gh.client_id,
            client_secret=gh.client_secret.get_secret_value(),
            scopes=tuple(gh.scopes),
            web_base_url=gh.web_base_url,
            api_base_url=gh.api_base_url,
        )
    return apps


def register_backends(settings: Settings, backends: BackendRegistry) -> None:
    """Every configured provider's backend, each built by its kind (built-in or a
    plugin's) and registered in ``backends`` in configuration order: a table that
    cannot be built is a configuration error naming it (those built before it stay
    registered, to be closed)."""
    try:
        for name, table in settings.providers.items():
            deps = BackendDeps(
                name=name,
                data_dir=settings.data_dir,
                backends=backends,
                tool_timeout_seconds=settings.runs.tool_timeout_seconds,
                max_run_seconds=settings.runs.max_run_seconds,
            )
            backends.register(build_backend(table, deps))
    except InterlockError as exc:
        raise ConfigError(exc.message) from None


def build_compute_providers(settings: Settings) -> list[ComputeProvider]:
    """The configured compute providers, in order of preference, each built by its kind."""
    try:
        return [
            build_compute_provider(table, ComputeDeps(name=name, data_dir=settings.data_dir))
            for name, table in settings.compute.providers.items()
        ]
    except InterlockError as exc:
        raise ConfigError(exc.message) from None


def scheduler_settings(settings: Settings) -> SchedulerSettings:
    c = settings.compute
    return SchedulerSettings(
        idle_stop_seconds=c.idle_stop_seconds,
        archive_after_seconds=c.archive_after_seconds,
        reaper_interval_seconds=c.reaper_interval_seconds,
        health_interval_seconds=c.health_interval_seconds,
        breaker_failures=c.breaker_failures,
        breaker_cooldown_seconds=c.breaker_cooldown_seconds,
        max_active_sessions_per_user=c.max_active_sessions_per_user,
        max_concurrent_runs_per_user=c.max_concurrent_runs_per_user,
        default_policy=c.default_policy,
        expected_run_seconds=c.expected_run_seconds,
        capacity={name: p.capacity for name, p in c.providers.items() if p.capacity},
    )


@dataclass(frozen=True, slots=True)
class BootstrapCredentials:
    operator_key: str | None
    sandbox_id: str | None
    api_key: str | None


async def bootstrap(store: Store) -> BootstrapCredentials:
    """On an empty store: create an operator key and a first sandbox with an API key.

    Returns the secrets created (None for what already existed): they are
    printed once and never stored in clear.
    """
    operator = None
    if not await store.has_operator_key():
        operator = new_secret(OPERATOR_KEY_PREFIX)
        await store.add_operator_key(hash_secret(operator))
    sandbox_id = api_key = None
    if not (await store.list_sandboxes(1, "")).items:
        sandbox = await store.create_sandbox("default", Quotas())
        _, api_key = await create_api_key(store, sandbox.id, "default")
        sandbox_id = sandbox.id
    return BootstrapCredentials(operator, sandbox_id, api_key)


class Daemon:
    """One interlockd process: ``await start()``, then ``await stop()``."""

    def __init__(
        self, settings: Settings, store: Store | None = None, *, sweep_at_start: bool = True
    ) -> None:
        """``sweep_at_start``: mark every run left running as interrupted when
        starting, which only a process alone on its (SQLite) store may do; with
        ``store_url`` set, or as one of several workers, leases do it instead."""
        self.settings = settings
        self._sweep_at_start = sweep_at_start and settings.store_url is None
        self.store: Store = store if store is not None else open_store(settings)
        # Opened windows kept per conversation: a turn's context reads only what is new.
        configure_window_cache(self.store, max_bytes=int(settings.context.cache_mib * 2**20))
        self.backends = BackendRegistry()
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.orchestrator: Orchestrator | None = None
        # Run tokens: held here, published for the other processes sharing the store.
        self.grants = SharedGrants(self.store, self._forward_url)
        self.dispatch = Dispatch(shared=self.grants)
        self.mcp_access: GrantRegistry[ToolAccess] = GrantRegistry(on_close=self.grants.revoke)
        # Where MCP servers may be: checked at registration and at every connect
        # (tests replace its resolver to play DNS rebinding).
        self.egress = EgressPolicy(settings.integrations.mcp_allowed_networks)
        self.apps: dict[str, App] = {}
        self.pauses: PauseBoard | None = None
        self.compute: ComputeScheduler | None = None
        self.leases: RunLeases | None = None
        self.http: HttpServer | None = None
        self.http_port = 0
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        """Open everything and bind; return the bound port.

        On failure everything opened so far is closed again before the error
        propagates: the store's threads would otherwise keep the process alive.
        """
        try:
            return await self._start()
        except BaseException:
            self._stopped.set()
            try:
                if self.server is not None:
                    await self.server.stop(0)
                await self._close()
            except Exception:  # the start's own error is the one to report
                log.exception("close_after_failed_start_failed")
            raise

    async def _start(self) -> int:
        s = self.settings
        # Before anything opens: a taken port is one clear line, not a C-core
        # error and a traceback after the store has started its threads.
        check_listen_address(s.listen, LISTEN_SETTING)
        check_listen_address(s.http_listen, HTTP_LISTEN_SETTING)
        await self.store.open()
        if self._sweep_at_start:
            interrupted = await self.store.interrupt_running_runs()
            if interrupted:
                log.warning("runs_interrupted", count=interrupted)
        self.leases = RunLeases(self.store, seconds=s.runs.lease_seconds)
        register_backends(s, self.backends)
        self.apps = build_apps(s)
        self.pauses = PauseBoard(self.store)
        self.compute = ComputeScheduler(
            self.store,
            build_compute_providers(s),
            self.backends.describe_runtime,
            settings=scheduler_settings(s),
            pauses=self.pauses,
            mcp_url=self._mcp_url,
        )
        self.orchestrator = self._orchestrator(self.pauses, self.compute, self.leases)
        self.pauses.notify(self.orchestrator.stop_paused)
        await self.pauses.start()
        self.leases.notify(self.orchestrator.stop_lost, self._taken_over)
        await self.leases.start()
        self.connect_flows = ConnectFlows(
            self.store,
            self.apps,
            public_url=s.integrations.public_url,
            flow_seconds=s.integrations.connect_flow_seconds,
        )
        await self._serve_grpc(self._servicers(self.orchestrator, self.pauses, self.compute))
        await self._serve_http()
        await self.compute.start()
        for name in ("", *_SERVICES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "listening",
            address=s.listen.rsplit(":", 1)[0],
            port=self.port,
            providers=sorted(s.providers),
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        return self.port

    async def _taken_over(self, runs: list[Run]) -> None:
        """Runs of a dead process were interrupted here: bring the compute sessions its
        runtimes served in line with what their providers report."""
        if self.compute is not None:
            await self.compute.reconcile()

    def _orchestrator(
        self, pauses: PauseBoard, compute: ComputeScheduler, leases: RunLeases
    ) -> Orchestrator:
        """The turn orchestrator: admission (tools, pauses, compute) and what turns use."""
        s = self.settings
        default_models = {n: p.default_model for n, p in s.providers.items() if p.default_model}
        default_models.setdefault("local", "smollm2-135m")
        mcp_tools = McpSources(allow_stdio=s.integrations.allow_stdio_mcp, egress=self.egress)
        tools = RunTools(
            ToolRegistry([SearchConversationsTool()]),
            [IntegrationTools(self.store, self.apps, mcp_tools=mcp_tools)],
        )
        admission = Admission(
            self.store,
            self.backends,
            tools,
            s.default_provider,
            default_models,
            pauses=pauses,
            compute=compute,
            leases=leases,
            estimates={name: p.estimate_usd_per_run for name, p in s.providers.items()},
        )
        deps = TurnDeps(
            self.store,
            s.runs,
            dispatch=self.dispatch,
            compute=compute,
            mcp=self.mcp_access,
            grants=self.grants,
        )
        return Orchestrator(admission, deps)

    def _servicers(
        self, orchestrator: Orchestrator, pauses: PauseBoard, compute: ComputeScheduler
    ) -> dict[str, object]:
        """The servicer of every service, by its full name."""
        s = self.settings
        auth = Authenticator(self.store)
        return {
            "interlock.v1.AgentRouter": AgentRouterServicer(auth, orchestrator, s.runs),
            "interlock.v1.Sandboxes": SandboxesServicer(auth, self.store),
            "interlock.v1.Conversations": ConversationsServicer(auth, self.store),
            "interlock.v1.Integrations": IntegrationsServicer(
                auth, self.store, self.apps, self.connect_flows, egress=self.egress
            ),
            "interlock.v1.Agents": AgentsServicer(auth, self.store, s.runs.max_run_seconds),
            "interlock.v1.Compute": ComputeServicer(
                auth, self.store, pauses, orchestrator, compute
            ),
            "interlock.v1.Ledger": LedgerServicer(auth, self.store),
        }

    async def _serve_grpc(self, servicers: dict[str, object]) -> None:
        """Bind and start the gRPC server with every service, health and reflection."""
        s = self.settings
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", s.runs.max_message_bytes * 4 + (1 << 20)),
                # A worker shares its port with its siblings (workers.py); else refuse.
                ("grpc.so_reuseport", int(ports_shared())),
            ]
        )
        messages = _messages()
        for full_name, module in _SERVICES.items():
            short = full_name.rsplit(".", 1)[1]
            service = module.DESCRIPTOR.services_by_name[short]
            server.add_generic_rpc_handlers(
                (generic_handler(service, servicers[full_name], messages),)
            )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [
                *_SERVICES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        self.server = server  # from here on, a failed start stops it
        try:
            self.port = server.add_insecure_port(s.listen)
        except RuntimeError:  # grpc's "Failed to bind": taken since the check above
            self.port = 0
        if self.port == 0:
            raise ConfigError(listen_refused(s.listen, None, LISTEN_SETTING))
        self.egress.add_listener(s.listen.rpartition(":")[0], self.port)
        await server.start()

    async def _serve_http(self) -> None:
        """Start the HTTP side: tool dispatch, the MCP endpoint, OAuth callbacks, health."""
        s = self.settings
        host, _, port = s.http_listen.rpartition(":")
        self.http = HttpServer(
            host or "127.0.0.1",
            int(port),
            self.dispatch,
            call_timeout=s.runs.tool_timeout_seconds + 5,
            mcp_access=self.mcp_access,
            public_url=s.integrations.public_url,
            routes=[callback_route(self.connect_flows)],
            forwarder=Forwarder(self.grants, timeout=s.runs.tool_timeout_seconds + 10),
            advertise_host=self._advertise_host(),
        )
        try:
            self.http_port = await self.http.start()
        except OSError as exc:
            raise ConfigError(listen_refused(s.http_listen, exc, HTTP_LISTEN_SETTING)) from None
        self.egress.add_listener(host or "127.0.0.1", self.http_port)

    async def stop(self, grace: float | None = None, announce: float | None = None) -> None:
        """Announce, drain and stop. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        s = self.settings
        grace = s.shutdown_grace_seconds if grace is None else grace
        announce = s.shutdown_announce_seconds if announce is None else announce
        log.info("stopping", announce_seconds=announce, grace_seconds=grace)
        await self.health.enter_graceful_shutdown()
        if self.orchestrator is not None:
            self.orchestrator.stop_accepting()
        if announce > 0:
            # grpc's stop() closes the listener at once; until then health
            # answers NOT_SERVING on the open port and Run answers UNAVAILABLE.
            await asyncio.sleep(announce)
        if self.orchestrator is not None:
            # Runs still open after the grace end with an Error event (UNAVAILABLE,
            # retryable: their request_id resumes them), not a cut stream.
            interrupted = await self.orchestrator.interrupt(grace)
            if interrupted:
                log.warning("runs_stopped_by_shutdown", count=interrupted)
        if self.server is not None:
            # Streams have ended; other calls get a moment to complete.
            await self.server.stop(_LAST_CALLS_SECONDS)
        await self._close()
        log.info("stopped")

    async def _close(self) -> None:
        """Close everything behind the gRPC server (each part tolerates never having started)."""
        if self.http is not None:
            await self.http.stop()
        if self.orchestrator is not None:
            await self.orchestrator.drain(within=10.0)
        if self.pauses is not None:
            await self.pauses.stop()
        if self.leases is not None:
            await self.leases.stop()
        await self.grants.aclose()
        if self.compute is not None:
            # Runtimes keep running (or stay suspended) across a restart of the daemon.
            await self.compute.stop()
        await self.backends.aclose()
        for app in self.apps.values():
            await app.aclose()
        await self.store.close()

    def _advertise_host(self) -> str:
        """The host other processes reach this one's HTTP side at."""
        if self.settings.http_advertise_host:
            return self.settings.http_advertise_host
        host = self.settings.http_listen.rsplit(":", 1)[0].strip("[]")
        return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host

    def _forward_url(self) -> str:
        """Where other processes forward this one's runs' tool calls."""
        host = self._advertise_host()
        host = f"[{host}]" if ":" in host else host
        port = self.http.forward_port if self.http is not None else 0
        return f"http://{host}:{port}"

    def _mcp_url(self) -> str:
        """The MCP endpoint as runtimes reach it: the public URL, else this host's."""
        base = self.settings.integrations.public_url or f"http://127.0.0.1:{self.http_port}"
        return base.rstrip("/") + "/mcp/"

    async def serve_until_signalled(self, ready: Callable[[], None] | None = None) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully.

        ``ready`` runs once the handlers are in place: a supervisor that signals
        as soon as the daemon says it listens gets a graceful stop, not a kill.
        """
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready()
        await stop.wait()
        await self.stop()

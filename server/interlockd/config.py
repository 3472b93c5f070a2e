"""The daemon's one typed settings object: a TOML file overlaid by ``INTERLOCK_*`` env.

Precedence: built-in defaults < the TOML file (``--config`` or
``INTERLOCK_CONFIG``) < environment variables. Nested keys use ``__`` in env
names: ``INTERLOCK_STORE__PATH``, ``INTERLOCK_PROVIDERS__OPENAI__API_KEY``.
Unknown keys are rejected — in the file and in the environment — so a typo
fails at start instead of being silently ignored; a provider table (agent or
compute) accepts only the keys of its ``kind``: each kind's settings model lives
with its provider, and the tables' unions are assembled here from the kind
tables (``backends/kinds.py``, ``compute/kinds.py``), third-party kinds included.
A variable sets one key: it is merged into the file's table (or the built-in
``local`` provider's) before anything is validated. Secrets are ``SecretStr`` so
they never print in logs or reprs.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from interlockd.backends.base import BackendSettings
from interlockd.backends.kinds import backend_kinds
from interlockd.backends.local import LocalProviderSettings
from interlockd.compute.base import ComputeProviderSettings as ComputeProviderSettingsBase
from interlockd.compute.kinds import compute_kinds
from interlockd.compute.local import LocalComputeSettings
from interlockd.errors import InterlockError

ENV_PREFIX = "INTERLOCK_"
# Variables of the `interlock` client and of the launcher that share the prefix
# but are not daemon settings.
CLIENT_ENV = frozenset(
    {"INTERLOCK_ADDRESS", "INTERLOCK_API_KEY", "INTERLOCK_OPERATOR_KEY", "INTERLOCK_CONFIG"}
)


class ConfigError(InterlockError):
    """The configuration is invalid; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(_Strict):
    #: SQLite database file; relative paths are under ``data_dir``. Unused when
    #: ``store_url`` names a PostgreSQL database.
    path: Path = Path("interlock.db")
    #: PostgreSQL: connections each process keeps at most (and as many again
    #: for the advisory locks held while a provider resource is created).
    pool_size: int = Field(default=10, ge=1, le=1000)
    #: SQLite's ``PRAGMA synchronous``. ``full`` (the default) syncs the WAL to
    #: disk at every commit: nothing acknowledged is lost even on power loss.
    #: ``normal`` skips that fsync (~4 ms per commit on a typical cloud disk):
    #: a crash of the process (kill -9 included) still loses nothing, but a
    #: power loss or OS crash may lose the last commits, turns a client has
    #: already seen among them.
    sqlite_synchronous: Literal["full", "normal"] = "full"


class KeySettings(_Strict):
    #: Master keyring file (created 0600 on first start); relative to ``data_dir``.
    master_key_file: Path = Path("master.key")
    #: A master key given directly (base64 of 32 bytes), e.g. from a secret
    #: manager; takes precedence over the file.
    master_key: SecretStr | None = None


#: The kinds a provider table may name (built-in, then third-party, see plugins.py),
#: and the compute kinds likewise; loaded once, when this module is imported.
BACKEND_KINDS = backend_kinds()
COMPUTE_KINDS = compute_kinds()
PROVIDER_KINDS: tuple[str, ...] = tuple(BACKEND_KINDS)

if TYPE_CHECKING:
    ProviderSettings = BackendSettings
    ComputeProviderSettings = ComputeProviderSettingsBase
else:
    #: One configured provider; its table name is the provider string of RunRequest,
    #: its ``kind`` says which keys the table may hold (the kind's own settings model).
    ProviderSettings = Annotated[
        Union[tuple(kind.settings for kind in BACKEND_KINDS.values())],  # noqa: UP007
        Field(discriminator="kind"),
    ]
    #: One compute provider; its table name is the provider's name.
    ComputeProviderSettings = Annotated[
        Union[tuple(kind.settings for kind in COMPUTE_KINDS.values())],  # noqa: UP007
        Field(discriminator="kind"),
    ]


class GitHubAppSettings(_Strict):
    """The operator's GitHub OAuth app (or GitHub App with user tokens)."""

    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    #: Scopes asked for (OAuth Apps; GitHub Apps use their own permissions).
    scopes: list[str] = Field(default_factory=lambda: ["repo"])
    web_base_url: str = "https://github.com"
    api_base_url: str = "https://api.github.com"


class IntegrationSettings(_Strict):
    #: The daemon's HTTP side as users' browsers and providers reach it (TLS in
    #: front), e.g. ``https://router.example.com``; OAuth redirects come back to
    #: ``<public_url>/v1/integrations/callback``. Empty: OAuth connect is off.
    public_url: str = ""
    #: How long a user has to finish a connect flow.
    connect_flow_seconds: float = Field(default=600.0, gt=0)
    #: Let MCP servers be stdio commands run on this host (an operator's
    #: decision: a sandbox could run anything the daemon's user can).
    allow_stdio_mcp: bool = False
    #: Networks (CIDRs) where MCP servers may be reached besides public addresses,
    #: e.g. ``["10.1.0.0/16"]`` for servers on a private network; plain ``http://``
    #: only inside these. Env: ``INTERLOCK_INTEGRATIONS__MCP_ALLOWED_NETWORKS``, a
    #: JSON list. Loopback, link-local and the like are refused unless listed here.
    mcp_allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)
    #: GitHub; unset: not in the catalog.
    github: GitHubAppSettings | None = None

    @field_validator("mcp_allowed_networks", mode="before")
    @classmethod
    def _networks_from_json(cls, value: Any) -> Any:
        # From the environment the list arrives as text.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError('must be a JSON list of CIDRs, e.g. ["10.1.0.0/16"]') from None
        return value


class RunSettings(_Strict):
    #: Largest accepted RunRequest.message, in bytes of UTF-8.
    max_message_bytes: int = Field(default=64 * 1024, ge=1)
    #: Tool loop cap: model calls per turn beyond the first.
    max_tool_iterations: int = Field(default=8, ge=0, le=100)
    #: Seconds a single tool call may take.
    tool_timeout_seconds: float = Field(default=30.0, gt=0)
    #: Merge text deltas that queued up while the previous event was being
    #: written into one event. Never delays an event; under load it cuts the
    #: per-message cost of gRPC, the main cost of streaming.
    coalesce_deltas: bool = True
    #: With coalescing on, also hold a text delta up to this many milliseconds
    #: for more text to join it: fewer, larger messages at the price of up to
    #: this much added latency per delta. 0 (the default) never delays.
    coalesce_window_ms: float = Field(default=0.0, ge=0, le=1000)
    #: Upper bound of a whole turn in seconds (the client's deadline may be shorter).
    max_run_seconds: float = Field(default=600.0, gt=0)
    #: A running run is leased to the process running it for this long and
    #: renewed every third of it; when a process dies (kill -9, a lost host),
    #: another process sharing the store marks its runs interrupted once their
    #: lease has run out, so their request_id resumes them anywhere.
    lease_seconds: float = Field(default=15.0, gt=0, le=3600)


class ContextSettings(_Strict):
    """Context assembly (see interlockd/context/)."""

    #: MiB of conversations' opened windows kept in memory, least recently used
    #: dropped first, so a turn opens only the entries new since the last one
    #: (counted by the text held). 0: every turn reads its window from the store.
    cache_mib: float = Field(default=64.0, ge=0)


class ComputeSettings(_Strict):
    """The compute scheduler (see interlockd/compute/scheduler.py)."""

    #: Providers in order of preference: latency-aware placement takes the first
    #: that can, spilling to the next when one is full, unhealthy or paused.
    providers: dict[str, ComputeProviderSettings] = Field(
        default_factory=lambda: _builtin_compute()
    )
    default_policy: Literal["latency-aware", "cost-aware"] = "latency-aware"
    #: Stop a session after this long without a run (its state is kept) ...
    idle_stop_seconds: float = Field(default=900.0, gt=0)
    #: ... and archive it after this long stopped.
    archive_after_seconds: float = Field(default=7 * 86_400.0, gt=0)
    reaper_interval_seconds: float = Field(default=30.0, gt=0)
    health_interval_seconds: float = Field(default=30.0, gt=0)
    #: Consecutive failures that take a provider out of placement, and for how long.
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown_seconds: float = Field(default=60.0, gt=0)
    #: Per end user: sessions running at once and runs in progress at once (0: no limit).
    max_active_sessions_per_user: int = Field(default=3, ge=0)
    max_concurrent_runs_per_user: int = Field(default=2, ge=0)
    #: The run length cost-aware placement prices.
    expected_run_seconds: float = Field(default=60.0, gt=0)


def _builtin_compute() -> dict[str, ComputeProviderSettings]:
    return {"local": LocalComputeSettings()}


def _builtin_providers() -> dict[str, ProviderSettings]:
    return {"local": LocalProviderSettings()}


class Settings(_Strict):
    #: host:port of the gRPC server. Port 0 picks a free port.
    listen: str = "127.0.0.1:7600"
    #: host:port of the HTTP side (tool dispatch for hosted agents, /healthz).
    #: Hosted agents must reach it: put it behind TLS at a public URL.
    http_listen: str = "127.0.0.1:7601"
    #: The host (name or IP) other replicas and workers reach this process's
    #: HTTP side at, to forward a run's tool calls (MCP, dispatch callbacks) to
    #: the process running the turn. Empty: ``http_listen``'s host (loopback
    #: for a wildcard). Set it per replica when replicas run on several hosts
    #: (e.g. the pod IP).
    http_advertise_host: str = ""
    #: Where the database, the master key and the local model's state live.
    data_dir: Path = Path("data")
    #: The shared store: ``postgresql://user:password@host:5432/database``
    #: (asyncpg's URL, query options such as ``sslmode`` included). Empty: the
    #: embedded SQLite file ``store.path``. Replicas and worker processes share
    #: one PostgreSQL database; every one needs the same master key.
    store_url: SecretStr | None = None
    #: Provider used when a RunRequest names none.
    default_provider: str = "local"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    #: The event loop: asyncio's own, or uvloop (the ``uvloop`` extra). Measured
    #: on the benchmarks' run path, uvloop changed the CPU per turn and per
    #: delta by less than the run-to-run noise (benchmarks/README.md), so the
    #: default stays asyncio.
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    #: On SIGTERM, seconds during which health says NOT_SERVING and new runs are
    #: refused while the port stays open, so balancers and meshes polling health
    #: move traffic away before connections close.
    shutdown_announce_seconds: float = Field(default=1.0, ge=0)
    #: Then, seconds in-flight runs get to finish before they are cancelled.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    #: Processes serving on this host (``serve --workers``): above 1, a supervisor
    #: starts that many, sharing the listening ports (SO_REUSEPORT) and the store.
    workers: int = Field(default=1, ge=1, le=256)
    store: StoreSettings = StoreSettings()
    keys: KeySettings = KeySettings()
    runs: RunSettings = RunSettings()
    context: ContextSettings = ContextSettings()
    integrations: IntegrationSettings = IntegrationSettings()
    compute: ComputeSettings = ComputeSettings()
    providers: dict[str, ProviderSettings] = Field(default_factory=_builtin_providers)

    @field_validator("store_url")
    @classmethod
    def _check_store_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        scheme = value.get_secret_value().partition("://")[0]
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(
                f"must be a postgresql:// URL (got scheme {scheme!r}); leave it unset "
                "for the embedded SQLite store"
            )
        return value

    @model_validator(mode="after")
    def _check_providers(self) -> Settings:
        if self.default_provider not in self.providers:
            raise ValueError(
                f"default_provider {self.default_provider!r} is not among providers "
                f"({', '.join(sorted(self.providers)) or 'none'})"
            )
        return self

    def resolve(self, path: Path) -> Path:
        """``path`` made absolute under ``data_dir`` when relative."""
        return path if path.is_absolute() else self.data_dir / path


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, ``config_file``, ``env`` and ``overrides``.

    Raise :class:`ConfigError` naming the key for any unknown key or bad value.
    """
    env = os.environ if env is None else env
    if config_file is None and env.get("INTERLOCK_CONFIG"):
        config_file = Path(env["INTERLOCK_CONFIG"])
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {config_file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from None
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in CLIENT_ENV:
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        _set_path(data, keys, value, name)
    for dotted, value in (overrides or {}).items():
        _set_path(data, dotted.split("."), value, dotted)
    # The zero-credential local provider is always available (it starts lazily,
    # on its first run), whatever else is configured. Built-in providers are
    # defaults under what the file and the environment set, key by key: one
    # INTERLOCK_PROVIDERS__LOCAL__CONTEXT_SIZE changes one key of it.
    providers = data.setdefault("providers", {})
    if isinstance(providers, dict):
        _default_table(providers, "local", {"kind": "local"})
        # Hermes on the local model, when its runtime is installed (`make` does).
        if _lacks_kind(providers, "hermes") and (hermes := _installed_hermes()) is not None:
            _default_table(providers, "hermes", hermes)
            local = providers.get("local")
            if isinstance(local, dict) and local.get("kind") == "local":
                # Hermes' own prompt is ~1,000 tokens: the model needs more than 2,048.
                local.setdefault("context_size", HERMES_LOCAL_CONTEXT)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


#: The local model's context when Hermes runs on it by default.
HERMES_LOCAL_CONTEXT = 8192


def _installed_hermes() -> dict[str, Any] | None:
    """The default ``hermes`` provider (on the local model) when its runtime is found."""
    from interlockd.backends.catalog import LOCAL_MODEL
    from interlockd.backends.hermes.config import find_executable

    if find_executable() is None:
        return None
    return {"kind": "hermes", "default_model": LOCAL_MODEL}


def _lacks_kind(providers: dict[str, Any], name: str) -> bool:
    """Whether ``name`` is unconfigured, or has keys (from the environment) but no kind."""
    table = providers.get(name)
    return table is None or (isinstance(table, dict) and "kind" not in table)


def _default_table(providers: dict[str, Any], name: str, defaults: dict[str, Any]) -> None:
    """Put the built-in provider ``name`` under what was configured for it, if kindless."""
    if _lacks_kind(providers, name):
        providers[name] = {**defaults, **providers.get(name, {})}


def _set_path(data: dict[str, Any], keys: list[str], value: Any, origin: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {key!r} is not a table")
        node = child
    node[keys[-1]] = value


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        kind = ""
        # A provider table's errors carry its kind after its name: keep it for
        # the message, not in the key's dotted name.
        tables = 1 if loc[:1] == ["providers"] else 2 if loc[:2] == ["compute", "providers"] else 0
        kinds = tuple(BACKEND_KINDS if tables == 1 else COMPUTE_KINDS)
        if tables and len(loc) > tables + 1 and loc[tables + 1] in kinds:
            kind = str(loc.pop(tables + 1))
        where = ".".join(str(p) for p in loc) or "config"
        if err["type"] == "extra_forbidden":
            problem = "unknown key"
            if kind:
                problem += f" (not a setting of kind {kind!r})"
            problems.append(f"{where}: {problem}")
        elif err["type"] == "union_tag_not_found":
            problems.append(f"{where}.kind: required, one of {', '.join(kinds)}")
        elif err["type"] == "union_tag_invalid":
            given = (err.get("ctx") or {}).get("tag", "")
            problems.append(f"{where}.kind: {given!r} is not one of {', '.join(kinds)}")
        elif err["type"] == "value_error":
            problems.append(f"{where}: {(err.get('ctx') or {}).get('error', err['msg'])}")
        else:
            problems.append(f"{where}: {err['msg']}")
    return "invalid configuration: " + "; ".join(problems)

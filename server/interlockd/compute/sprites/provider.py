"""Fly.io Sprites as compute, through the official ``sprites-py`` SDK (the ``sprites`` extra).

A sprite is a persistent Linux microVM: its filesystem stays, it pauses itself
about 30 s after its last activity and wakes on the next request (100-500 ms
from warm, 1-2 s from cold, when its services start again). There is no stop,
suspend or archive call, and compute is billed only while it is active.

One sprite per session key, named ``<name_prefix><slug>-<hash>`` from the key;
the name is the session's external id. Sprites labels are plain strings and the
API cannot filter on them (only on a name prefix), so the spec's labels are
kept as ``"k=v"`` strings beside ``interlock.key=<key>`` and
``interlock.managed=true``, and :meth:`FlySpritesProvider.list` pages through
the sprites named with the prefix and filters here.

- **ensure**: get the sprite (``external_id``, else the key's name) or create
  it. The runtime runs as a Sprites *service* (``PUT
  /v1/sprites/{name}/services/{svc}`` with ``cmd``, ``args``, ``env``, ``dir``
  and ``http_port`` = ``spec.port``), not as an exec: the sprite restarts it when
  it crashes and when it boots cold, and the sprite URL routes to its
  ``http_port``. The service is named ``interlock-runtime-<digest>``, the
  digest covering the command, port, env, files and working directory, so an
  ensure that finds it defined (and not failed) leaves the runtime alone. Else
  the spec's files are written through the filesystem API into the working
  directory (mode 0600), other runtime services are deleted, and the service is
  defined; its event stream is read for ``service_watch_seconds`` and a runtime
  that exits in that time fails at once with its output. Ready means the
  health path answers 2xx through the sprite URL (a request wakes a paused
  sprite). A runtime that does not get there has its service deleted, so the
  sprite is not left crash-looping and can go back to sleep.
- **endpoint**: the sprite URL, without headers: sprites are created with
  ``url_settings.auth`` ``public`` and the runtime authenticates requests
  itself with the key the router put in ``spec.env`` (for hermes-agent,
  ``API_SERVER_KEY``, sent as ``Authorization: Bearer``). A ``sprite``-auth URL
  would want the org's Sprites token in that same ``Authorization`` header,
  clashing with the runtime's key and handing a token that can delete every
  sprite of the org to each request. The URL of a sprite does not change, and
  it answers while the sprite sleeps (the request wakes it).
- **suspend**: nothing to do (the sprite idles by itself): the session is
  returned unchanged. **archive**: not offered (``Capabilities.archive`` is
  False): checkpoints live inside their sprite and restore only onto it
  (``POST …/checkpoints/{id}/restore``; creating a sprite takes no checkpoint),
  so "checkpoint, then destroy" could not be resumed; and an idle sprite
  already costs only its storage, so there is no colder tier to move to. The
  call returns the session unchanged.
- **destroy**: delete the sprite and its filesystem (only one labelled as this
  router's); an absent one is not an error.
- **health**: a one-item list of the router's sprites answers.

Sprites' region and size are fixed by the service (8 vCPUs; billed while
active as 4 GB): ``spec.region`` and ``spec.size`` are accepted and ignored. The
runtime must listen on 0.0.0.0 (hermes-agent is told so by
``API_SERVER_HOST``). Errors become :class:`ComputeError` naming the sprite and
what to do; Sprites' answers are reduced to their status and short reason.

It must never log ``spec.env`` or ``spec.files`` (they hold secrets), nor put them
in a sprite's labels or name.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from typing import Final

import httpx
import structlog
from sprites import (
    AsyncSprite,
    AsyncSpritesClient,
    FilesystemError,
    ListOptions,
    NotFoundError,
    ServiceLogEvent,
    SpriteError,
    SpriteInfo,
    URLSettings,
)

from interlockd.compute import remote
from interlockd.compute.base import (
    Capabilities,
    ComputeError,
    ComputePrice,
    ComputeProvider,
    ComputeSession,
    Endpoint,
    SessionStatus,
    fill_placeholders,
)
from interlockd.compute.sprites import errors
from interlockd.vocabulary import SessionSpec

log = structlog.get_logger(__name__)

PROVIDER: Final = "fly_sprites"
DEFAULT_BASE_URL: Final = "https://api.sprites.dev"
#: Where the runtime's files go and where it runs, inside the sprite.
DEFAULT_WORKDIR: Final = "/home/sprite/interlock"
#: Labels the provider sets on every sprite (``"name=value"``), besides the spec's.
KEY_LABEL: Final = "interlock.key"
MANAGED_LABEL: Final = "interlock.managed"
#: The runtime's service: ``interlock-runtime-<digest of what it runs>``.
SERVICE_PREFIX: Final = "interlock-runtime-"

# Pay-as-you-go compute while a sprite is active, billed for its fixed size
# (8 vCPUs and 4 GB while active); hibernated, it pays for storage only.
PRICE_VERSION: Final = "sprites/payg-0.07-vcpu-h-0.04375-gb-h"
_USD_PER_VCPU_HOUR = 0.07
_USD_PER_GB_HOUR = 0.04375
DEFAULT_VCPUS: Final = 8.0
DEFAULT_MEMORY_GB: Final = 4.0

_STATUS: dict[str, SessionStatus] = {"running": "running", "warm": "suspended", "cold": "suspended"}
_NAME_PREFIX = re.compile(r"[a-z][a-z0-9-]{0,20}")
_MAX_POLL = 0.5  # seconds between health probes, at most
_LIST_PAGE = 50  # the API's largest page
_LOOKUPS = 8  # sprites read at once when a list page lacks their labels
# The class's ``list`` method shadows the builtin in its body's annotations.
_Infos = list[SpriteInfo]


def session_name(key: str, prefix: str = "interlock-") -> str:
    """The sprite name for a session key: readable, unique, at most 63 characters."""
    return remote.session_name(key, prefix, 30)


def service_name(spec: SessionSpec, env: Mapping[str, str], workdir: str) -> str:
    """The runtime's service name: a digest of what it runs, so a change means a new one."""
    return SERVICE_PREFIX + remote.spec_digest(spec, env, "\0", workdir)


def parse_labels(labels: Iterable[str]) -> dict[str, str]:
    """``{"k": "v"}`` from Sprites' ``["k=v"]`` labels (a label without ``=`` is skipped)."""
    parsed = {}
    for label in labels:
        name, sep, value = label.partition("=")
        if sep:
            parsed[name] = value
    return parsed


class FlySpritesProvider(ComputeProvider):
    """``fly_sprites``: runtimes as services in Fly.io Sprites."""

    name = PROVIDER

    def __init__(
        self,
        *,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        workdir: str = DEFAULT_WORKDIR,
        extra_env: Mapping[str, str] | None = None,
        vcpus: float = DEFAULT_VCPUS,
        memory_gb: float = DEFAULT_MEMORY_GB,
        ready_timeout: float = 120.0,
        request_timeout: float = 30.0,
        service_watch_seconds: float = 1.0,
        name_prefix: str = "interlock-",
        cold_start_seconds: float = 7.0,
        resume_seconds: float = 1.0,
    ) -> None:
        """``token`` is the org's Sprites API token and ``base_url`` the API. The runtime's
        files are written to, and it runs in, ``workdir`` inside the sprite.
        ``extra_env`` goes under every spec's env (the runtime must listen on 0.0.0.0:
        hermes-agent is told so by ``API_SERVER_HOST``). ``vcpus`` and ``memory_gb``
        size the price only (Sprites' size is fixed). ``ready_timeout`` bounds the wait
        for the runtime's health path, ``request_timeout`` each API call;
        ``service_watch_seconds`` is how long a new service's events are read for an
        early exit. ``name_prefix`` starts every sprite name this router makes (and
        is the list filter). ``cold_start_seconds`` (create and first runtime start)
        and ``resume_seconds`` (a wake from warm) are advertised to the scheduler."""
        if not _NAME_PREFIX.fullmatch(name_prefix.rstrip("-")):
            raise ValueError(f"name_prefix {name_prefix!r}: lower-case letters, digits, '-'")
        if not workdir.startswith("/"):
            raise ValueError(f"workdir {workdir!r} must be an absolute path")
        if service_watch_seconds <= 0:
            raise ValueError("service_watch_seconds must be positive")
        self._token = token
        self._base_url = base_url.rstrip("/")
        self._workdir = workdir.rstrip("/") or "/"
        self._extra_env = dict({"API_SERVER_HOST": "0.0.0.0"} if extra_env is None else extra_env)
        self._ready_timeout = ready_timeout
        self._request_timeout = request_timeout
        self._watch_seconds = service_watch_seconds
        self._name_prefix = name_prefix
        self.capabilities = Capabilities(
            suspend=False,
            archive=False,
            self_idles_after=30.0,
            cold_start_seconds=cold_start_seconds,
            resume_seconds=resume_seconds,
        )
        self.price = ComputePrice(
            active_usd_per_second=(vcpus * _USD_PER_VCPU_HOUR + memory_gb * _USD_PER_GB_HOUR)
            / 3600,
            suspended_usd_per_second=0.0,
            price_version=PRICE_VERSION,
        )
        self._client: AsyncSpritesClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._urls: dict[str, str] = {}  # sprite name -> its URL (it never changes)

    # ---- the ComputeProvider contract ----------------------------------------------

    async def ensure(self, spec: SessionSpec, external_id: str | None = None) -> ComputeSession:
        """Get or create the key's sprite, define the runtime's service unless it is
        defined with this very spec, and return once its health path answers."""
        spec = fill_placeholders(spec, host="0.0.0.0", port=spec.port, state_dir=self._workdir)
        self._validate(spec)
        env = {**self._extra_env, **spec.env}
        async with self._lock(spec.key):
            sprite = await self._sprite_for(spec, external_id)
            service = await self._define_runtime(sprite, spec, env)
            await self._wait_ready(sprite, spec, service)
            return self._session(sprite.name, sprite.labels, "running", sprite.primary_region)

    async def endpoint(self, session: ComputeSession) -> Endpoint:
        """The sprite URL (no headers: the runtime checks its own key). It answers while
        the sprite sleeps: the request wakes it."""
        url = self._urls.get(session.external_id)
        if url is None:
            sprite = await self._get(session.external_id)
            if sprite is None:
                raise ComputeError(
                    PROVIDER, f"sprite {session.external_id} no longer exists: ensure it again"
                )
            url = self._remember(sprite)
        return Endpoint(base_url=url)

    async def suspend(self, session: ComputeSession) -> ComputeSession:
        """Nothing to do: a sprite pauses itself ~30 s after its last request."""
        return session

    async def archive(self, session: ComputeSession) -> ComputeSession:
        """Not offered (see the module docstring): the session is returned unchanged."""
        return session

    async def destroy(self, session: ComputeSession) -> None:
        """Delete the sprite and its filesystem. Idempotent; a sprite not labelled as this
        router's is refused."""
        name = session.external_id
        async with self._lock(session.key):
            self._urls.pop(name, None)
            sprite = await self._get(name)
            if sprite is None:
                return
            if parse_labels(sprite.labels).get(MANAGED_LABEL) != "true":
                raise ComputeError(
                    PROVIDER, f"sprite {name} was not made by this router: not deleting it"
                )
            try:
                await self._sprites().destroy_sprite(name)
            except NotFoundError:
                return
            except SpriteError as exc:
                raise self._error(f"deleting sprite {name}", exc) from exc
            log.info("compute_sprites_destroyed", sprite=name)

    async def health(self) -> bool:
        """Whether the Sprites API answers a one-item list of the router's sprites."""
        try:
            async with asyncio.timeout(10):
                await self._sprites().list_sprites(
                    ListOptions(prefix=self._name_prefix, max_results=1)
                )
        except Exception as exc:  # any failure means "not healthy"; say why in the log
            log.info("compute_sprites_unhealthy", error=errors.describe(exc))
            return False
        return True

    async def list(self, labels: Mapping[str, str] | None = None) -> list[ComputeSession]:
        """The router's sprites (named with its prefix and labelled as its own), those
        carrying ``labels`` when given (filtered here: the API cannot)."""
        infos: _Infos = []
        token: str | None = None
        with self._errors("listing sprites"):
            while True:
                page = await self._sprites().list_sprites(
                    ListOptions(
                        prefix=self._name_prefix, max_results=_LIST_PAGE, continuation_token=token
                    )
                )
                infos.extend(page.sprites)
                if not page.has_more or not page.next_continuation_token:
                    break
                token = page.next_continuation_token
        sessions = []
        for info in await self._complete(infos):
            own = parse_labels(info.labels)
            if own.get(MANAGED_LABEL) != "true":
                continue
            if labels and any(own.get(k) != v for k, v in labels.items()):
                continue
            if info.url:
                self._urls[info.name] = info.url.rstrip("/")
            status = _STATUS.get(info.status, "creating")
            sessions.append(self._session(info.name, info.labels, status, info.primary_region))
        return sessions

    async def aclose(self) -> None:
        """Close the API and HTTP clients; sprites are left as they are (asleep soon)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ---- the sprite ---------------------------------------------------------------------

    def session_name(self, key: str) -> str:
        """The sprite name of a session key."""
        return session_name(key, self._name_prefix)

    async def _sprite_for(self, spec: SessionSpec, external_id: str | None) -> AsyncSprite:
        """The key's sprite: ``external_id`` when it is the key's, else the key's name, else
        a new one."""
        own_name = self.session_name(spec.key)
        if external_id and external_id != own_name:
            sprite = await self._get(external_id)
            if sprite is not None and parse_labels(sprite.labels).get(KEY_LABEL) == spec.key:
                return sprite
            if sprite is not None:
                log.warning("compute_sprites_foreign_sprite", sprite=external_id)
        sprite = await self._get(own_name)
        if sprite is None:
            sprite = await self._create(spec, own_name)
        if parse_labels(sprite.labels).get(KEY_LABEL) != spec.key:
            raise ComputeError(
                PROVIDER,
                f"sprite {own_name} exists but was not made for session {spec.key}: "
                "destroy it or give the provider another name_prefix",
            )
        return sprite

    async def _create(self, spec: SessionSpec, name: str) -> AsyncSprite:
        wanted = {**spec.labels, KEY_LABEL: spec.key, MANAGED_LABEL: "true"}
        labels = [f"{k}={v}" for k, v in sorted(wanted.items())]
        try:
            sprite = await self._sprites().create_sprite(
                name, url_settings=URLSettings(auth="public"), labels=labels
            )
        except SpriteError as exc:
            made = await self._get(name)  # made meanwhile by another router?
            if made is None:
                raise self._error(f"creating sprite {name}", exc) from exc
            return made
        log.info("compute_sprites_created", sprite=name)
        return sprite

    async def _get(self, name: str) -> AsyncSprite | None:
        try:
            sprite = await self._sprites().get_sprite(name)
        except NotFoundError:
            return None
        except SpriteError as exc:
            raise self._error(f"reading sprite {name}", exc) from exc
        self._remember(sprite)
        return sprite

    async def _complete(self, infos: _Infos) -> _Infos:
        """The infos with their labels: a list page may carry only names, so read those."""
        limit = asyncio.Semaphore(_LOOKUPS)

        async def full(info: SpriteInfo) -> SpriteInfo | None:
            if parse_labels(info.labels).get(KEY_LABEL) is not None:
                return info
            async with limit:
                sprite = await self._get(info.name)
            if sprite is None:  # deleted meanwhile
                return None
            return SpriteInfo(
                id=sprite.id or "",
                name=sprite.name,
                organization=sprite.organization_name or "",
                status=sprite.status or "",
                url=sprite.url,
                primary_region=sprite.primary_region,
                labels=list(sprite.labels),
            )

        found = await asyncio.gather(*(full(info) for info in infos))
        return [info for info in found if info is not None]

    def _remember(self, sprite: AsyncSprite) -> str:
        url = (sprite.url or "").rstrip("/")
        if not url:
            raise ComputeError(PROVIDER, f"sprite {sprite.name} has no URL yet: try again")
        self._urls[sprite.name] = url
        return url

    # ---- the runtime --------------------------------------------------------------------

    async def _define_runtime(
        self, sprite: AsyncSprite, spec: SessionSpec, env: Mapping[str, str]
    ) -> str:
        """Define the runtime's service unless it is defined (and not failed) already;
        return its name."""
        service = service_name(spec, env, self._workdir)
        with self._errors(f"reading the services of sprite {sprite.name}"):
            defined = await sprite.list_services()
        for existing in defined:
            status = existing.state.status if existing.state else "stopped"
            if existing.name == service and status not in ("failed", "stopped"):
                return service
        with self._errors(f"replacing the runtime of sprite {sprite.name}"):
            for existing in defined:
                if existing.name.startswith(SERVICE_PREFIX) and existing.name != service:
                    await sprite.delete_service(existing.name)
        await self._write_files(sprite, spec)
        with self._errors(f"starting the runtime in sprite {sprite.name}"):
            stream = await sprite.create_service(
                service,
                spec.command[0],
                list(spec.command[1:]),
                http_port=spec.port,
                duration=self._watch_seconds,
                env=dict(env),
                dir=self._workdir,
            )
        events = list(stream)
        exits = [e for e in events if e.type in ("exit", "error")]
        if exits:
            await self._drop(sprite, service)
            code = exits[0].exit_code
            how = f"exited with code {code}" if code is not None else "failed"
            log.warning("compute_sprites_runtime_exited", sprite=sprite.name, code=code)
            raise ComputeError(
                PROVIDER,
                f"the runtime in sprite {sprite.name} {how} within "
                f"{self._watch_seconds:g}s of starting{_tail(events)}",
            )
        log.info("compute_sprites_runtime_defined", sprite=sprite.name, service=service)
        return service

    async def _write_files(self, sprite: AsyncSprite, spec: SessionSpec) -> None:
        filesystem = sprite.filesystem(self._workdir)
        for relative, content in sorted(spec.files.items()):
            try:
                await (filesystem / relative).write_bytes(content, mode=0o600)
            except FilesystemError as exc:
                reason = exc.args[0] if exc.args else type(exc).__name__
                raise ComputeError(
                    PROVIDER, f"writing {relative} into sprite {sprite.name}: {reason}"
                ) from exc
            except SpriteError as exc:
                raise self._error(f"writing {relative} into sprite {sprite.name}", exc) from exc

    async def _wait_ready(self, sprite: AsyncSprite, spec: SessionSpec, service: str) -> None:
        """Poll the health path through the sprite URL until it answers 2xx (bounded); a
        service the sprite gave up on fails at once. Either failure drops the service."""
        url = self._remember(sprite) + spec.health_path
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout
        delay = 0.05
        last = "no answer yet"
        while True:
            try:
                response = await self._http_client().get(url)
                if response.is_success:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            with self._errors(f"checking the runtime of sprite {sprite.name}"):
                state = (await sprite.get_service(service)).state
            if state is not None and state.status == "failed":
                await self._drop(sprite, service)
                reason = f": {state.error}" if state.error else ""
                raise ComputeError(
                    PROVIDER,
                    f"the runtime in sprite {sprite.name} failed after {state.restart_count} "
                    f"restarts before answering {spec.health_path}{reason}",
                )
            if loop.time() >= deadline:
                await self._drop(sprite, service)
                raise ComputeError(
                    PROVIDER,
                    f"the runtime in sprite {sprite.name} did not answer {spec.health_path} "
                    f"within {self._ready_timeout:g}s (last: {last})",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_POLL)

    async def _drop(self, sprite: AsyncSprite, service: str) -> None:
        """Delete a runtime service that did not come up, so it stops crash-looping."""
        try:
            await sprite.delete_service(service)
        except SpriteError as exc:
            log.warning(
                "compute_sprites_drop_failed", sprite=sprite.name, error=errors.describe(exc)
            )

    # ---- helpers --------------------------------------------------------------------------

    def _validate(self, spec: SessionSpec) -> None:
        """Refuse a spec no sprite could run, before anything is created."""
        remote.check_spec(PROVIDER, spec, "the sprite's working directory")
        for label in spec.labels:
            if not label or "=" in label:
                raise ComputeError(
                    PROVIDER, f"session {spec.key}: label name {label!r} may not hold '='"
                )

    def _session(
        self, name: str, labels: Iterable[str], status: SessionStatus, region: str | None
    ) -> ComputeSession:
        parsed = parse_labels(labels)
        key = parsed.pop(KEY_LABEL, "")
        parsed.pop(MANAGED_LABEL, None)
        return ComputeSession(
            provider=PROVIDER,
            external_id=name,
            key=key,
            status=status,
            labels=parsed,
            region=region or "",
        )

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _sprites(self) -> AsyncSpritesClient:
        if self._client is None:
            self._client = AsyncSpritesClient(
                self._token, base_url=self._base_url, timeout=self._request_timeout
            )
        return self._client

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            # trust_env=False: the sprite URL is reached directly, never via a proxy.
            self._http = httpx.AsyncClient(timeout=10.0, trust_env=False)
        return self._http

    def _errors(self, what: str) -> _ErrorScope:
        return _ErrorScope(self, what)

    def _error(self, what: str, exc: BaseException) -> ComputeError:
        return errors.compute_error(PROVIDER, what, exc, self._base_url)


class _ErrorScope:
    """``with provider._errors(what):`` turns the SDK's errors into ComputeError."""

    def __init__(self, provider: FlySpritesProvider, what: str) -> None:
        self._provider, self._what = provider, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, ComputeError) or exc is None:
            return
        if isinstance(exc, SpriteError):
            raise self._provider._error(self._what, exc) from exc


def _tail(events: list[ServiceLogEvent]) -> str:
    """The end of a service's output from its events, for an operator reading the error."""
    output = "\n".join(e.data for e in events if e.type in ("stdout", "stderr") and e.data)
    return remote.output_tail(output)

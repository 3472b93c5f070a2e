"""The Fly.io Sprites compute provider against the loopback fake, through the real ``sprites-py``
SDK.

The fake runs each sprite's services for real: the runtime is tests/compute/runtime.py, run
as a Sprites service and reached through the sprite URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from interlockd.compute.base import ComputeError, ComputeSession
from interlockd.compute.sprites.provider import (
    DEFAULT_WORKDIR,
    KEY_LABEL,
    MANAGED_LABEL,
    SERVICE_PREFIX,
    FlySpritesProvider,
    session_name,
)
from interlockd.vocabulary import SessionSpec
from tests.fakes.sprites import REGION, FakeSprites

RUNTIME = Path(__file__).with_name("runtime.py")
TOKEN = "spr_test_token"
SECRET = "s3cret value with 'quotes' and $dollars"
LABELS = {"user_id": "u-1", "sandbox_id": "sb-1", "agent_id": "support"}


def free_port() -> int:
    """A port nothing listens on: the fake's sprites share this host's network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def make_spec(key: str = "sb-1/u-1/support", *flags: str, **changes: Any) -> SessionSpec:
    port = changes.pop("port", None) or free_port()
    fields: dict[str, Any] = {
        "key": key,
        "command": [sys.executable, str(RUNTIME), "--port", str(port), *flags],
        "port": port,
        "env": {"RUNTIME_TOKEN": SECRET},
        "files": {"config.json": b'{"model": "smollm2"}', "nested/key.env": b"KEY=1"},
        "labels": LABELS,
    }
    return SessionSpec(**(fields | changes))


@pytest.fixture
async def fake() -> AsyncIterator[FakeSprites]:
    async with FakeSprites(token=TOKEN) as fake:
        yield fake


def make_provider(fake: FakeSprites, **options: Any) -> FlySpritesProvider:
    options.setdefault("ready_timeout", 10.0)
    options.setdefault("service_watch_seconds", 0.2)
    return FlySpritesProvider(token=TOKEN, base_url=fake.api_url, **options)


@pytest.fixture
async def provider(fake: FakeSprites) -> AsyncIterator[FlySpritesProvider]:
    provider = make_provider(fake)
    yield provider
    await provider.aclose()


async def call(
    provider: FlySpritesProvider, session: ComputeSession, method: str, path: str
) -> Any:
    endpoint = await provider.endpoint(session)
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        answer = await http.request(method, endpoint.base_url + path, headers=endpoint.headers)
    answer.raise_for_status()
    return answer.json()


async def info(provider: FlySpritesProvider, session: ComputeSession) -> dict[str, Any]:
    result: dict[str, Any] = await call(provider, session, "GET", "/info")
    return result


async def count(provider: FlySpritesProvider, session: ComputeSession, method: str = "GET") -> int:
    return int((await call(provider, session, method, "/counter"))["count"])


async def test_ensure_creates_a_sprite_and_runs_the_runtime_as_a_service(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """Ensure creates a sprite named and labelled from the key, writes the spec's files,
    defines the runtime as a service on the spec's port and returns once it is healthy."""
    spec = make_spec("sb-1/u-1/support", "--start-delay", "0.5")

    session = await provider.ensure(spec)

    sprite = fake.only_sprite
    assert session == ComputeSession(
        provider="fly_sprites",
        external_id=session_name(spec.key),
        key=spec.key,
        status="running",
        labels=LABELS,
        region=REGION,
    )
    assert sprite.name == session.external_id
    assert sorted(sprite.labels) == sorted(
        [f"{k}={v}" for k, v in LABELS.items()]
        + [f"{KEY_LABEL}={spec.key}", f"{MANAGED_LABEL}=true"]
    )
    assert sprite.url_auth == "public"
    [service] = sprite.services.values()
    assert service.name.startswith(SERVICE_PREFIX)
    assert [service.cmd, *service.args] == list(spec.command)
    assert (service.http_port, service.dir) == (spec.port, DEFAULT_WORKDIR)
    assert service.env == {"RUNTIME_TOKEN": SECRET, "API_SERVER_HOST": "0.0.0.0"}
    workdir = sprite.path(DEFAULT_WORKDIR)
    assert (workdir / "nested" / "key.env").read_bytes() == b"KEY=1"
    assert (workdir / "config.json").stat().st_mode & 0o777 == 0o600
    probes = [r for r in fake.requests_to("app") if r.path.endswith("/health")]
    assert probes  # it was probed through the sprite URL
    runtime = await info(provider, session)
    assert runtime["cwd"] == str(workdir)
    assert runtime["token"] == SECRET
    assert runtime["config"] == '{"model": "smollm2"}'
    assert runtime["port"] is None  # the port travels in the command, as the spec says


async def test_the_endpoint_is_the_sprite_url_without_headers(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """The endpoint is the sprite URL, public, with no headers: the runtime checks its own
    key; a router that did not create the sprite reads the URL from the API."""
    session = await provider.ensure(make_spec())

    endpoint = await provider.endpoint(session)

    assert endpoint.base_url == fake.sprite_url(session.external_id)
    assert dict(endpoint.headers) == {}
    assert await count(provider, session, "POST") == 1
    other = make_provider(fake)
    try:
        assert (await other.endpoint(session)).base_url == endpoint.base_url
        with pytest.raises(ComputeError, match="no longer exists: ensure it again"):
            await other.endpoint(dataclasses.replace(session, external_id="interlock-gone"))
    finally:
        await other.aclose()


async def test_ensure_is_idempotent(fake: FakeSprites, provider: FlySpritesProvider) -> None:
    """Ensuring a running session again, concurrently or later, by name or by key, finds the
    one sprite and leaves its runtime alone."""
    spec = make_spec()
    first, second = await asyncio.gather(provider.ensure(spec), provider.ensure(spec))
    pid = (await info(provider, first))["pid"]

    again = await provider.ensure(spec, first.external_id)
    by_key = await provider.ensure(spec)

    assert first == second == again == by_key
    assert len(fake.requests_to("create")) == 1
    assert len(fake.requests_to("service_put")) == 1
    assert (await info(provider, first))["pid"] == pid


async def test_ensure_resumes_a_cold_sprite_with_its_filesystem(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """A sprite that went cold is woken by ensure: its service starts again from its
    filesystem (a new process, the disk kept) without being defined anew."""
    spec = make_spec()
    session = await provider.ensure(spec)
    assert await count(provider, session, "POST") == 1
    pid = (await info(provider, session))["pid"]
    sprite = fake.only_sprite
    wakes = sprite.wakes

    fake.make_cold(sprite)
    listed = await provider.list()
    resumed = await provider.ensure(spec, session.external_id)

    assert [s.status for s in listed] == ["suspended"]
    assert resumed == session
    assert sprite.status == "running"
    assert sprite.wakes == wakes + 1
    assert len(fake.requests_to("service_put")) == 1
    assert await count(provider, resumed) == 1
    assert (await info(provider, resumed))["pid"] != pid


async def test_a_paused_sprite_wakes_on_its_url(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """A warm (paused) sprite needs no ensure: a request to its endpoint wakes it, with its
    process and memory as they were."""
    session = await provider.ensure(make_spec())
    pid = (await info(provider, session))["pid"]
    sprite = fake.only_sprite

    fake.pause(sprite)
    woken = await info(provider, session)

    assert woken["pid"] == pid
    assert sprite.status == "running"
    assert sprite.boots == 1  # woken from warm, not booted


async def test_suspend_and_archive_change_nothing(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """Suspend and archive return the session unchanged without touching the sprite: it
    idles by itself and there is no archive."""
    session = await provider.ensure(make_spec())
    seen = len(fake.requests)

    assert await provider.suspend(session) == session
    assert await provider.archive(session) == session

    assert len(fake.requests) == seen
    assert fake.only_sprite.status == "running"
    caps = provider.capabilities
    assert (caps.suspend, caps.archive, caps.self_idles_after) == (False, False, 30.0)


async def test_destroy_deletes_the_sprite_and_is_idempotent(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """Destroy deletes the sprite, its filesystem and its runtime; again, or for a sprite
    never made, it is no error."""
    session = await provider.ensure(make_spec())
    pid = (await info(provider, session))["pid"]
    root = fake.only_sprite.root

    await provider.destroy(session)
    await provider.destroy(session)
    await provider.destroy(dataclasses.replace(session, external_id="interlock-never-made"))

    assert fake.sprites == {}
    assert not root.exists()
    assert len(fake.requests_to("delete")) == 1
    assert await provider.list() == []
    with pytest.raises(ComputeError, match="no longer exists"):
        await provider.endpoint(session)
    await fake.wait_until(lambda: not _alive(pid), "the runtime's end")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


async def test_destroy_refuses_a_sprite_that_is_not_the_routers(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """A sprite not labelled as this router's is never deleted."""
    fake.add_sprite("interlock-handmade", labels=["team=infra"])
    handmade = ComputeSession(
        provider="fly_sprites", external_id="interlock-handmade", key="k", status="running"
    )

    with pytest.raises(ComputeError, match="was not made by this router: not deleting it"):
        await provider.destroy(handmade)

    assert "interlock-handmade" in fake.sprites


async def test_ensure_after_destroy_creates_a_new_sprite(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """After a destroy the key's sprite is created anew, with a fresh filesystem."""
    spec = make_spec()
    old = await provider.ensure(spec)
    await count(provider, old, "POST")
    await provider.destroy(old)

    new = await provider.ensure(spec, old.external_id)

    assert new.external_id == old.external_id  # the key's name, free again
    assert len(fake.requests_to("create")) == 2
    assert await count(provider, new) == 0


async def test_list_filters_by_labels_on_the_client(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """List pages through the sprites named with the prefix, reads the labels a list page
    lacks, keeps only the router's and filters on the given labels."""
    fake.page_size = 2
    one = await provider.ensure(make_spec("sb-1/u-1/support"))
    two = await provider.ensure(make_spec("sb-1/u-2/support", labels=LABELS | {"user_id": "u-2"}))
    fake.add_sprite("interlock-handmade", labels=["user_id=u-1"])
    fake.add_sprite("elsewhere", labels=[f"{MANAGED_LABEL}=true", f"{KEY_LABEL}=x"])

    everything = await provider.list()
    by_user = await provider.list({"user_id": "u-2"})
    by_agent = await provider.list({"agent_id": "support"})

    assert {s.external_id for s in everything} == {one.external_id, two.external_id}
    assert by_user == [dataclasses.replace(two, status="running")]
    assert sorted(s.key for s in by_agent) == ["sb-1/u-1/support", "sb-1/u-2/support"]
    assert all(r.query.get("prefix") == "interlock-" for r in fake.requests_to("list"))
    assert len(fake.requests_to("list")) == 3 * 2  # two pages each time


async def test_list_uses_labels_a_page_carries(fake: FakeSprites) -> None:
    """When list items carry labels, no sprite is read one by one."""
    fake.list_details = True
    provider = make_provider(fake)
    try:
        await provider.ensure(make_spec())
        gets = len(fake.requests_to("get"))
        [listed] = await provider.list({"user_id": "u-1"})
    finally:
        await provider.aclose()

    assert listed.key == "sb-1/u-1/support"
    assert len(fake.requests_to("get")) == gets


async def test_a_changed_spec_replaces_the_runtime(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """Ensure with different env or files defines a new service, deletes the old one and
    keeps the sprite's filesystem."""
    spec = make_spec()
    session = await provider.ensure(spec)
    await count(provider, session, "POST")
    old = await info(provider, session)

    rotated = dataclasses.replace(spec, env={"RUNTIME_TOKEN": "rotated"})
    await provider.ensure(rotated, session.external_id)

    [service] = fake.only_sprite.services.values()
    assert service.env["RUNTIME_TOKEN"] == "rotated"
    new = await info(provider, session)
    assert (new["token"], old["token"]) == ("rotated", SECRET)
    assert new["pid"] != old["pid"]
    assert len(fake.requests_to("service_delete")) == 1
    assert await count(provider, session) == 1


async def test_a_crashed_runtime_is_restarted_by_the_sprite(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """The sprite restarts a runtime that crashed; ensure finds it serving again without
    defining it anew."""
    spec = make_spec()
    session = await provider.ensure(spec)
    pid = (await info(provider, session))["pid"]
    sprite = fake.only_sprite

    await fake.crash_service(sprite, next(iter(sprite.services)))
    await provider.ensure(spec, session.external_id)

    assert (await info(provider, session))["pid"] != pid
    assert len(fake.requests_to("service_put")) == 1


async def test_a_runtime_that_exits_at_once_fails_with_its_output(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """A runtime that exits while its service's events are read fails ensure at once, with
    its output, and its service is deleted so the sprite stops restarting it."""
    script = "import sys; print('boom: config.yaml is missing', flush=True); sys.exit(3)"
    spec = make_spec(command=[sys.executable, "-c", script])

    with pytest.raises(ComputeError) as raised:
        await provider.ensure(spec)

    message = str(raised.value)
    assert "exited with code 3 within 0.2s of starting; its last output:" in message
    assert "boom: config.yaml is missing" in message
    assert fake.only_sprite.services == {}


async def test_a_runtime_that_never_answers_times_out(fake: FakeSprites) -> None:
    """A runtime that never answers its health path fails after the ready timeout, saying
    what it last answered, and its service is deleted."""
    provider = make_provider(fake, ready_timeout=1.0)
    try:
        with pytest.raises(
            ComputeError, match=r"did not answer /health within 1s \(last: HTTP 503\)"
        ):
            await provider.ensure(make_spec("k", "--unhealthy"))
    finally:
        await provider.aclose()

    assert fake.only_sprite.services == {}


async def test_a_runtime_the_sprite_gives_up_on_fails(fake: FakeSprites) -> None:
    """A runtime that crashes only after its events were read, until the sprite gives up on
    it, fails ensure with the sprite's reason, and its service is deleted."""
    fake.max_restarts = 1
    script = "import sys, time; time.sleep(0.3); sys.exit(1)"
    provider = make_provider(fake, service_watch_seconds=0.05)
    try:
        with pytest.raises(ComputeError) as raised:
            await provider.ensure(make_spec(command=[sys.executable, "-c", script]))
    finally:
        await provider.aclose()

    assert "failed after 1 restarts before answering /health: exited with code 1" in str(
        raised.value
    )
    assert fake.only_sprite.services == {}


async def test_errors_name_the_cause_and_what_to_do(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """Sprites' refusals become ComputeErrors with the status, its short reason and advice."""
    name = session_name("sb-1/u-1/support")
    fake.fail("create", 500, "no capacity in iad")
    with pytest.raises(ComputeError) as raised:
        await provider.ensure(make_spec())
    assert str(raised.value) == (
        f"compute provider fly_sprites: creating sprite {name}: "
        "Sprites failed (HTTP 500: no capacity in iad): try again later"
    )

    fake.fail("service_put", 429, "3 sprites run already", code="concurrent_sprite_limit_exceeded")
    with pytest.raises(ComputeError, match="pay-as-you-go allows 3"):
        await provider.ensure(make_spec())

    fake.fail("fs_write", 503, "disk unavailable")
    with pytest.raises(
        ComputeError, match=r"writing config\.json into sprite .*: disk unavailable"
    ):
        await provider.ensure(make_spec())


async def test_a_refused_token_is_named(fake: FakeSprites) -> None:
    """A wrong token fails with a message saying to check it, and health is False."""
    provider = FlySpritesProvider(token="wrong", base_url=fake.api_url)
    try:
        with pytest.raises(ComputeError, match="the token was refused: check the fly_sprites"):
            await provider.ensure(make_spec())
        assert await provider.health() is False
    finally:
        await provider.aclose()


async def test_health_is_false_when_the_api_is_down(fake: FakeSprites) -> None:
    """Health is True while the API answers, False while it fails or cannot be reached,
    and ensure then says it cannot reach the API."""
    provider = make_provider(fake)
    unreachable = FlySpritesProvider(token=TOKEN, base_url=f"http://127.0.0.1:{free_port()}")
    try:
        assert await provider.health() is True
        fake.unavailable = True
        assert await provider.health() is False
        fake.unavailable = False
        assert await provider.health() is True
        assert await unreachable.health() is False
        with pytest.raises(ComputeError, match=r"cannot reach http://127\.0\.0\.1:"):
            await unreachable.ensure(make_spec())
    finally:
        await provider.aclose()
        await unreachable.aclose()


async def test_a_sprite_of_another_key_is_not_taken(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """A sprite with the key's name but another key's label is reported, not reused; an
    external id of another key's sprite is passed over for the key's own."""
    spec = make_spec()
    fake.add_sprite(session_name(spec.key), labels=[f"{KEY_LABEL}=someone-else"])
    with pytest.raises(ComputeError, match="exists but was not made for session"):
        await provider.ensure(spec)

    other = await provider.ensure(make_spec("other-key"))
    mine = make_spec("mine")
    session = await provider.ensure(mine, other.external_id)
    assert session.external_id == session_name("mine")


async def test_bad_specs_are_refused_before_anything_is_created(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """Files outside the working directory, an empty command, a bad health path or port and
    label names holding '=' are refused up front."""
    cases = [
        (make_spec(files={"../outside": b"x"}), "give a relative path inside"),
        (make_spec(files={"/etc/passwd": b"x"}), "give a relative path inside"),
        (make_spec(command=[]), "the spec has no command"),
        (make_spec(health_path="health"), "health_path must start with '/'"),
        (make_spec(port=70000), "port 70000 is not a TCP port"),
        (make_spec(labels={"a=b": "c"}), "label name 'a=b' may not hold '='"),
    ]
    for spec, message in cases:
        with pytest.raises(ComputeError, match=message):
            await provider.ensure(spec)

    assert fake.requests == []


async def test_secrets_never_reach_logs_errors_or_metadata(
    fake: FakeSprites, caplog: pytest.LogCaptureFixture
) -> None:
    """The spec's env and files appear in no log line, error, sprite label or request line,
    through a lifecycle and failures."""
    caplog.set_level(logging.DEBUG)
    file_secret = "file-secret-7f3a"
    spec = make_spec(files={"config.json": f'{{"api_key": "{file_secret}"}}'.encode()})
    provider = make_provider(fake, ready_timeout=1.0)
    errors = []
    try:
        with capture_logs() as logs:
            session = await provider.ensure(spec)
            fake.make_cold(fake.only_sprite)
            await provider.ensure(spec, session.external_id)
            for failing in (make_spec("other", "--unhealthy", env=spec.env), spec):
                if failing is spec:
                    fake.fail("service_list", 500, "internal error")
                with pytest.raises(ComputeError) as raised:
                    await provider.ensure(failing)
                errors.append(str(raised.value))
            await provider.list()
            await provider.destroy(session)
    finally:
        await provider.aclose()

    seen = repr(logs) + caplog.text + repr(errors)
    seen += repr([s.labels for s in fake.sprites.values()])
    seen += repr([(r.path, r.query) for r in fake.requests])
    assert SECRET not in seen
    assert file_secret not in seen


async def test_capabilities_and_price(provider: FlySpritesProvider) -> None:
    """Sprites idle by themselves after ~30 s, cannot be stopped or archived, have a fixed
    region and size, and cost $0.07 per vCPU-hour and $0.04375 per GB-hour while active."""
    caps = provider.capabilities
    assert (caps.suspend, caps.archive, caps.regions, caps.sizes) == (False, False, (), ())
    assert caps.self_idles_after == 30.0
    assert provider.price.active_usd_per_second == pytest.approx((8 * 0.07 + 4 * 0.04375) / 3600)
    assert provider.price.suspended_usd_per_second == 0.0
    assert provider.price.price_version.startswith("sprites/")
    small = FlySpritesProvider(token=TOKEN, vcpus=1, memory_gb=1)
    assert small.price.active_usd_per_second == pytest.approx((0.07 + 0.04375) / 3600)


async def test_region_and_size_are_accepted_and_ignored(
    fake: FakeSprites, provider: FlySpritesProvider
) -> None:
    """A spec's region and size do not stop a sprite from being made where Sprites puts it."""
    session = await provider.ensure(make_spec(region="ams", size="large"))

    assert session.region == REGION
    [create] = fake.requests_to("create")
    assert "config" not in create.body

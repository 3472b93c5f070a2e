"""The Daytona compute provider against the loopback fake, through the real ``daytona`` SDK.

The fake runs the sandbox's processes for real: the runtime is tests/compute/runtime.py,
started by the provider's launch line in a toolbox process session and reached through
the preview URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shlex
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from interlockd.compute.base import ComputeError, ComputeSession, Endpoint
from interlockd.compute.daytona.provider import DaytonaProvider
from interlockd.compute.daytona.sandboxes import (
    ENV_FILE,
    KEY_LABEL,
    MANAGED_LABEL,
    PREVIEW_TOKEN_HEADER,
    session_name,
)
from interlockd.vocabulary import SessionSpec
from tests.eventually import eventually
from tests.fakes.daytona import CODE_TOOLBOX_LANGUAGE_LABEL, FakeDaytona

RUNTIME = Path(__file__).with_name("runtime.py")
API_KEY = "dtn_test_key"
SECRET = "s3cret value with 'quotes' and $dollars"
LABELS = {"user_id": "u-1", "sandbox_id": "sb-1", "agent_id": "support"}


def free_port() -> int:
    """A port nothing listens on: the fake's sandboxes share this host's network."""
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
        "files": {"config.json": b'{"model": "smollm2"}'},
        "labels": LABELS,
    }
    return SessionSpec(**(fields | changes))


@pytest.fixture
async def fake() -> AsyncIterator[FakeDaytona]:
    async with FakeDaytona(api_key=API_KEY) as fake:
        yield fake


def make_provider(fake: FakeDaytona, **options: Any) -> DaytonaProvider:
    options.setdefault("transition_timeout", 10.0)
    options.setdefault("ready_timeout", 10.0)
    return DaytonaProvider(api_key=API_KEY, api_url=fake.api_url, **options)


@pytest.fixture
async def provider(fake: FakeDaytona) -> AsyncIterator[DaytonaProvider]:
    provider = make_provider(fake)
    yield provider
    await provider.aclose()


async def call(endpoint: Endpoint, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        headers = dict(endpoint.headers) | kwargs.pop("headers", {})
        return await http.request(method, endpoint.base_url + path, headers=headers, **kwargs)


async def info(provider: DaytonaProvider, session: ComputeSession) -> dict[str, Any]:
    answer = await call(await provider.endpoint(session), "GET", "/info")
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


async def count(provider: DaytonaProvider, session: ComputeSession, method: str = "GET") -> int:
    answer = await call(await provider.endpoint(session), method, "/counter")
    answer.raise_for_status()
    return int(answer.json()["count"])


async def test_ensure_creates_a_labelled_sandbox_and_waits_for_the_runtime(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """Ensure creates a sandbox named and labelled from the spec, starts the runtime in its
    working directory with the spec's files and env, and returns once it is healthy."""
    spec = make_spec("sb-1/u-1/support", "--start-delay", "0.5")

    session = await provider.ensure(spec)

    sandbox = fake.only_sandbox
    assert session == ComputeSession(
        provider="daytona",
        external_id=sandbox.id,
        key=spec.key,
        status="running",
        labels=LABELS,
        region="us",
    )
    assert sandbox.name == session_name(spec.key)
    assert sandbox.labels == LABELS | {
        KEY_LABEL: spec.key,
        MANAGED_LABEL: "true",
        CODE_TOOLBOX_LANGUAGE_LABEL: "python",
    }
    assert sandbox.state == "started"
    intervals = (
        sandbox.auto_stop_interval,
        sandbox.auto_archive_interval,
        sandbox.auto_delete_interval,
    )
    assert intervals == (0, 0, -1)  # never, Daytona's maximum, never
    assert sandbox.env == {}  # secrets travel in the env file, not in the sandbox's metadata
    assert sandbox.files["config.json"] == b'{"model": "smollm2"}'
    assert "export API_SERVER_HOST=0.0.0.0\n" in sandbox.files[ENV_FILE].decode()
    [command] = sandbox.commands
    assert command.run_async
    assert command.exit_code is None
    assert f"exec {shlex.join(spec.command)}" in command.command
    probes = [r.path for r in fake.requests_to("preview") if r.path.endswith("/health")]
    assert len(probes) >= 2  # it answered only after its start delay
    runtime = await info(provider, session)
    assert runtime["cwd"] == str(sandbox.disk)
    assert runtime["token"] == SECRET
    assert runtime["config"] == '{"model": "smollm2"}'
    assert "API_SERVER_HOST" in runtime["env_keys"]
    assert (sandbox.disk / ENV_FILE).stat().st_mode & 0o777 == 0o600


async def test_the_endpoint_reaches_the_runtime_with_the_preview_token(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """The endpoint is the port's preview URL with its token in x-daytona-preview-token."""
    spec = make_spec()
    session = await provider.ensure(spec)

    endpoint = await provider.endpoint(session)

    sandbox = fake.only_sandbox
    assert endpoint.base_url == fake.preview_url(sandbox, spec.port)
    assert endpoint.headers == {PREVIEW_TOKEN_HEADER: sandbox.preview_token}
    assert (await call(endpoint, "POST", "/counter")).json() == {"count": 1}
    refused = await call(endpoint, "GET", "/counter", headers={PREVIEW_TOKEN_HEADER: "forged"})
    assert refused.status_code == 401


async def test_ensure_is_idempotent(fake: FakeDaytona, provider: DaytonaProvider) -> None:
    """Ensuring a running session again, concurrently or later, by id or by the key's name,
    finds the one sandbox and leaves its runtime alone."""
    spec = make_spec()
    first, second = await asyncio.gather(provider.ensure(spec), provider.ensure(spec))
    pid = (await info(provider, first))["pid"]

    again = await provider.ensure(spec, first.external_id)
    by_name = await provider.ensure(spec)

    assert first == second == again == by_name
    assert len(fake.requests_to("create")) == 1
    assert len(fake.only_sandbox.commands) == 1
    assert (await info(provider, first))["pid"] == pid


async def test_suspend_and_resume_keep_the_sandbox_and_its_disk(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """Suspend stops the sandbox; ensure starts the same one again and runs the runtime
    anew: what it wrote to disk is there, its process is a new one."""
    spec = make_spec()
    session = await provider.ensure(spec)
    assert await count(provider, session, "POST") == 1
    pid = (await info(provider, session))["pid"]

    suspended = await provider.suspend(session)

    sandbox = fake.only_sandbox
    assert suspended.status == "suspended"
    assert sandbox.state == "stopped"
    assert not sandbox.runtime_running

    resumed = await provider.ensure(spec, session.external_id)

    assert resumed.external_id == session.external_id
    assert resumed.status == "running"
    assert sandbox.transitions == ["create", "stop", "start"]
    assert len(fake.requests_to("session_exec")) == 2
    assert await count(provider, resumed) == 1
    assert (await info(provider, resumed))["pid"] != pid


async def test_the_preview_token_is_fetched_again_after_a_restart(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """Every start changes the preview token: the endpoint after a resume carries the new
    one and the old one is refused."""
    spec = make_spec()
    session = await provider.ensure(spec)
    before = await provider.endpoint(session)
    await provider.suspend(session)
    await provider.ensure(spec, session.external_id)

    after = await provider.endpoint(session)

    assert after.headers[PREVIEW_TOKEN_HEADER] != before.headers[PREVIEW_TOKEN_HEADER]
    assert (await call(before, "GET", "/health")).status_code == 401
    assert (await call(after, "GET", "/health")).status_code == 200


async def test_archive_then_ensure_restores_the_sandbox(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """Archive stops a running sandbox and waits until Daytona has archived it; ensure
    restores the same sandbox with its disk."""
    spec = make_spec()
    session = await provider.ensure(spec)
    await count(provider, session, "POST")

    archived = await provider.archive(session)

    sandbox = fake.only_sandbox
    assert archived.status == "archived"
    assert sandbox.state == "archived"

    restored = await provider.ensure(spec, session.external_id)

    assert restored.external_id == session.external_id
    assert sandbox.transitions == ["create", "stop", "archive", "restore"]
    assert await count(provider, restored) == 1
    assert (await provider.archive(restored)).status == "archived"
    assert (await provider.archive(restored)).status == "archived"  # already archived: as is


async def test_destroy_is_idempotent(fake: FakeDaytona, provider: DaytonaProvider) -> None:
    """Destroy deletes the sandbox and its disk; destroying it again, or one never made,
    is no error."""
    session = await provider.ensure(make_spec())
    disk = fake.only_sandbox.disk

    await provider.destroy(session)
    await provider.destroy(session)
    fake.settle()
    await provider.destroy(session)
    await provider.destroy(
        ComputeSession(provider="daytona", external_id="no-such-id", key="k", status="running")
    )

    assert fake.sandboxes == {}
    assert not disk.exists()
    assert len(fake.requests_to("delete")) == 1
    assert await provider.list() == []


async def test_ensure_after_destroy_creates_a_new_sandbox(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """Ensure waits for a sandbox being deleted to be gone and creates the key's anew."""
    spec = make_spec()
    old = await provider.ensure(spec)
    await provider.destroy(old)

    new = await provider.ensure(spec, old.external_id)

    assert new.external_id != old.external_id
    assert fake.only_sandbox.id == new.external_id
    assert await count(provider, new) == 0


async def test_list_filters_by_labels(fake: FakeDaytona, provider: DaytonaProvider) -> None:
    """List returns the router's sandboxes matching the labels, with their keys and
    without the SDK's and the provider's own labels; others' sandboxes are not listed."""
    one = await provider.ensure(make_spec("sb-1/u-1/support"))
    two = await provider.ensure(
        make_spec("sb-1/u-2/support", labels=LABELS | {"user_id": "u-2"}, region="eu")
    )
    fake.add_sandbox("someone-elses", labels={"user_id": "u-1"})

    assert {s.external_id for s in await provider.list()} == {one.external_id, two.external_id}
    assert await provider.list({"user_id": "u-2"}) == [two]
    assert two.region == "eu"
    assert two.labels == LABELS | {"user_id": "u-2"}
    await provider.suspend(one)
    [listed] = await provider.list({"user_id": "u-1"})
    assert (listed.key, listed.status) == ("sb-1/u-1/support", "suspended")


async def test_list_pages_through_every_sandbox(fake: FakeDaytona) -> None:
    """List follows the cursor across pages."""
    fake.page_size = 2
    for i in range(5):
        fake.add_sandbox(f"interlock-pre-{i}", labels={MANAGED_LABEL: "true", KEY_LABEL: f"k{i}"})
    provider = make_provider(fake)
    try:
        keys = sorted(s.key for s in await provider.list())
    finally:
        await provider.aclose()

    assert keys == ["k0", "k1", "k2", "k3", "k4"]


async def test_a_region_is_a_daytona_target(fake: FakeDaytona, provider: DaytonaProvider) -> None:
    """The spec's region becomes the sandbox's target; an unserved one is refused."""
    session = await provider.ensure(make_spec(region="eu"))
    assert fake.only_sandbox.target == "eu"
    assert session.region == "eu"

    with pytest.raises(ComputeError, match=r"region 'ap' is not served; one of us, eu"):
        await provider.ensure(make_spec("other", region="ap"))


async def test_bad_specs_are_refused_before_anything_is_created(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """Files outside the working directory, an empty command, a health path without a
    slash and an env name that is no shell identifier are refused up front."""
    cases = [
        (make_spec(files={"../outside": b"x"}), "give a relative path inside the sandbox"),
        (make_spec(files={"/etc/passwd": b"x"}), "give a relative path inside the sandbox"),
        (make_spec(command=[]), "the spec has no command"),
        (make_spec(health_path="health"), "health_path must start with '/'"),
        (make_spec(env={"BAD-NAME": "x"}), "'BAD-NAME' is not a shell identifier"),
    ]
    for spec, message in cases:
        with pytest.raises(ComputeError, match=message):
            await provider.ensure(spec)

    assert fake.requests == []


async def test_a_failed_create_is_a_compute_error(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """Daytona refusing to create a sandbox is a ComputeError naming it and Daytona's reason."""
    fake.fail("create", 500, "no runner available in us")
    name = session_name("sb-1/u-1/support")

    with pytest.raises(ComputeError) as raised:
        await provider.ensure(make_spec())

    assert str(raised.value) == (
        f"compute provider daytona: creating sandbox {name} in us: "
        "Failed to create sandbox: no runner available in us"
    )
    assert raised.value.provider == "daytona"


async def test_a_refused_api_key_is_named(fake: FakeDaytona) -> None:
    """A wrong API key fails with a message saying to check it, and health is False."""
    provider = DaytonaProvider(api_key="wrong", api_url=fake.api_url)
    try:
        with pytest.raises(ComputeError, match="the API key was refused"):
            await provider.ensure(make_spec())
        assert await provider.health() is False
    finally:
        await provider.aclose()


async def test_health_answers_whether_daytona_does(fake: FakeDaytona) -> None:
    """Health is True while the API answers, False while it fails or cannot be reached."""
    provider = make_provider(fake)
    unreachable = DaytonaProvider(api_key=API_KEY, api_url=f"http://127.0.0.1:{free_port()}/api")
    try:
        assert await provider.health() is True
        fake.fail("list", 503, "maintenance")
        assert await provider.health() is False
        assert await provider.health() is True
        assert await unreachable.health() is False
    finally:
        await provider.aclose()
        await unreachable.aclose()


async def test_a_runtime_that_exits_fails_at_once_with_its_output(
    fake: FakeDaytona,
) -> None:
    """A runtime that exits before it is healthy fails ensure without waiting for the
    ready timeout, with the end of what it wrote."""
    script = "import sys; print('boom: config.yaml is missing', file=sys.stderr); sys.exit(3)"
    spec = make_spec(command=[sys.executable, "-c", script])
    provider = make_provider(fake, ready_timeout=60.0)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(ComputeError) as raised:
                await provider.ensure(spec)
    finally:
        await provider.aclose()

    message = str(raised.value)
    assert "exited with code 3 before answering /health; its last output:" in message
    assert "boom: config.yaml is missing" in message


async def test_a_runtime_that_never_answers_times_out(fake: FakeDaytona) -> None:
    """A runtime that never answers its health path fails after the ready timeout, saying
    what it last answered."""
    provider = make_provider(fake, ready_timeout=1.0)
    try:
        with pytest.raises(
            ComputeError, match=r"did not answer /health within 1s \(last: HTTP 503\)"
        ):
            await provider.ensure(make_spec("k", "--unhealthy"))
    finally:
        await provider.aclose()


async def test_a_stuck_transition_is_bounded(fake: FakeDaytona) -> None:
    """A sandbox stuck in a transitional state fails after the transition timeout."""
    spec = make_spec()
    provider = make_provider(fake, transition_timeout=0.5)
    try:
        session = await provider.ensure(spec)
        fake.held.add("stop")
        with pytest.raises(ComputeError, match="stopping sandbox"):
            await provider.suspend(session)
        with pytest.raises(ComputeError, match=r"is still stopping after 0.5s"):
            await provider.ensure(spec, session.external_id)
    finally:
        await provider.aclose()


async def test_a_sandbox_in_error_must_be_destroyed(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """A sandbox that ends in error is reported with Daytona's reason and what to do."""
    spec = make_spec()
    session = await provider.ensure(spec)
    await provider.suspend(session)
    fake.fail_transition("start", "disk quota exceeded")

    with pytest.raises(ComputeError, match="starting sandbox"):
        await provider.ensure(spec, session.external_id)
    with pytest.raises(
        ComputeError, match=r"is in error \(disk quota exceeded\): destroy it and ensure again"
    ):
        await provider.ensure(spec, session.external_id)
    assert (await provider.list())[0].status == "failed"

    await provider.destroy(session)
    assert (await provider.ensure(spec)).status == "running"


async def test_a_changed_spec_restarts_the_runtime(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """Ensure with different env or files ends the old runtime and starts one with the new."""
    spec = make_spec()
    session = await provider.ensure(spec)
    old = await info(provider, session)

    rotated = dataclasses.replace(spec, env={"RUNTIME_TOKEN": "rotated"})
    await provider.ensure(rotated, session.external_id)

    sandbox = fake.only_sandbox
    [runtime] = sandbox.sessions.values()
    assert len(fake.requests_to("session_delete")) == 1
    assert len(runtime.commands) == 1
    new = await info(provider, session)
    assert (new["token"], old["token"]) == ("rotated", SECRET)
    assert new["pid"] != old["pid"]


async def test_a_crashed_runtime_is_started_again(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """Ensure on a started sandbox whose runtime died starts the runtime again, on its disk."""
    spec = make_spec()
    session = await provider.ensure(spec)
    await count(provider, session, "POST")
    await fake.crash_runtime(fake.only_sandbox)

    await provider.ensure(spec, session.external_id)

    assert fake.only_sandbox.runtime_running
    assert len(fake.requests_to("session_exec")) == 2
    assert await count(provider, session) == 1


async def test_the_endpoint_of_a_stopped_sandbox_is_refused(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """Asking for the endpoint of a suspended session says to ensure it first."""
    session = await provider.ensure(make_spec())
    await provider.suspend(session)

    with pytest.raises(ComputeError, match="is stopped, not started: ensure it first"):
        await provider.endpoint(session)


async def test_the_endpoint_port_is_read_back_from_the_sandbox(fake: FakeDaytona) -> None:
    """A provider that did not start the runtime (a restarted router) finds its port from
    the sandbox's process session."""
    spec = make_spec()
    first = make_provider(fake)
    session = await first.ensure(spec)
    await first.aclose()
    second = make_provider(fake)
    try:
        endpoint = await second.endpoint(session)
        answer = await call(endpoint, "GET", "/health")
    finally:
        await second.aclose()

    assert endpoint.base_url.endswith(f"/{spec.port}")
    assert answer.status_code == 200


async def test_a_gone_sandbox_is_made_anew(fake: FakeDaytona, provider: DaytonaProvider) -> None:
    """Ensure with an external id Daytona no longer knows creates the key's sandbox."""
    session = await provider.ensure(make_spec(), "deleted-long-ago")
    assert session.external_id == fake.only_sandbox.id


async def test_suspending_a_gone_sandbox_says_so(provider: DaytonaProvider) -> None:
    """Suspend of a sandbox that no longer exists is a ComputeError naming it."""
    gone = ComputeSession(provider="daytona", external_id="gone-id", key="k", status="running")
    with pytest.raises(ComputeError, match="sandbox gone-id no longer exists"):
        await provider.suspend(gone)


async def test_daytona_timers_are_left_to_the_scheduler(
    fake: FakeDaytona, provider: DaytonaProvider
) -> None:
    """Sandboxes are made with auto-stop off and auto-archive at Daytona's maximum: the
    scheduler's timers stop and archive them."""
    session = await provider.ensure(make_spec())

    fake.advance(24 * 3600)

    sandbox = fake.only_sandbox
    assert sandbox.state == "started"
    assert provider.capabilities.self_idles_after == 0
    await provider.suspend(session)
    fake.advance(8 * 24 * 3600)  # past Daytona's default of 7 days
    assert sandbox.state == "stopped"


async def test_heartbeats_keep_an_auto_stopping_sandbox_alive(fake: FakeDaytona) -> None:
    """With Daytona's auto-stop as a safety net, the provider reports activity while it
    holds a session, so only a router that went away lets the sandbox stop."""
    provider = make_provider(fake, auto_stop_minutes=1, heartbeat_seconds=0.02)
    try:
        await provider.ensure(make_spec())
        sandbox = fake.only_sandbox
        assert sandbox.auto_stop_interval == 1
        assert provider.capabilities.self_idles_after == 60
        for _ in range(3):
            fake.advance(45)
            seen = len(fake.requests_to("last_activity"))
            await fake.wait_for_requests(seen + 1, "last_activity")
            await eventually(lambda: _assert_active(fake, sandbox.id))
        assert sandbox.state == "started"
    finally:
        await provider.aclose()

    fake.advance(61)
    assert sandbox.state == "stopped"
    assert sandbox.auto_stops == 1


async def _assert_active(fake: FakeDaytona, sandbox_id: str) -> None:
    assert fake.clock - fake.sandbox(sandbox_id).last_activity == 0


async def test_suspend_stops_the_heartbeat(fake: FakeDaytona) -> None:
    """A suspended session gets no more heartbeats."""
    provider = make_provider(fake, auto_stop_minutes=1, heartbeat_seconds=0.02)
    try:
        session = await provider.ensure(make_spec())
        await fake.wait_for_requests(1, "last_activity")
        await provider.suspend(session)
        seen = len(fake.requests_to("last_activity"))
        await asyncio.sleep(0.1)  # five heartbeat periods: none may come
        assert len(fake.requests_to("last_activity")) == seen
    finally:
        await provider.aclose()


async def test_secrets_never_reach_logs_or_errors(
    fake: FakeDaytona, caplog: pytest.LogCaptureFixture
) -> None:
    """The spec's env and files appear in no log line, error or sandbox metadata, through
    a lifecycle and a failure."""
    caplog.set_level(logging.DEBUG)
    file_secret = "file-secret-7f3a"
    spec = make_spec(files={"config.json": f'{{"api_key": "{file_secret}"}}'.encode()})
    provider = make_provider(fake, ready_timeout=0.5)
    try:
        with capture_logs() as logs:
            session = await provider.ensure(spec)
            await provider.suspend(session)
            await provider.ensure(spec, session.external_id)
            with pytest.raises(ComputeError) as raised:
                await provider.ensure(make_spec("other", "--unhealthy", env=spec.env))
            await provider.destroy(session)
    finally:
        await provider.aclose()

    seen = repr(logs) + caplog.text + str(raised.value)
    seen += repr([(s.labels, s.env) for s in fake.sandboxes.values()])
    seen += repr([(r.path, r.query) for r in fake.requests])
    assert SECRET not in seen
    assert file_secret not in seen


async def test_capabilities_and_price(fake: FakeDaytona, provider: DaytonaProvider) -> None:
    """The provider declares stop and archive, Daytona's regions and its published price."""
    assert provider.capabilities.suspend
    assert provider.capabilities.archive
    assert provider.capabilities.regions == ("us", "eu")
    assert provider.price.active_usd_per_second == pytest.approx(0.0000185)
    assert provider.price.price_version.startswith("daytona/")
    bigger = DaytonaProvider(api_key=API_KEY, vcpus=2, memory_gib=4)
    assert bigger.price.active_usd_per_second == pytest.approx(2 * 0.000014 + 4 * 0.0000045)

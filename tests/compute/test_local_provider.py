"""The local compute provider, with real subprocesses: tests/compute/runtime.py as the runtime."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlockd.compute.base import ComputeError, ComputeSession
from interlockd.compute.local.provider import DEFAULT_PRICE, LocalComputeProvider, session_name
from interlockd.vocabulary import SessionSpec
from tests.eventually import eventually

RUNTIME = Path(__file__).with_name("runtime.py")
REPO = Path(__file__).resolve().parents[2]

Factory = Callable[..., LocalComputeProvider]


def runtime_spec(
    key: str = "sbx-1:user-1:agent-1",
    *flags: str,
    env: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
    labels: dict[str, str] | None = None,
) -> SessionSpec:
    return SessionSpec(
        key=key,
        command=[sys.executable, str(RUNTIME), "--port", "{port}", *flags],
        port=8642,
        env=env or {},
        files=files or {},
        labels=labels or {},
    )


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


async def gone(pid: int, within: float = 5.0) -> None:
    async def probe() -> None:
        assert not alive(pid), f"process {pid} still runs"

    await eventually(probe, within=within)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        yield client


@pytest.fixture
async def make_provider(tmp_path: Path) -> AsyncIterator[Factory]:
    providers: list[LocalComputeProvider] = []

    def make(**options: Any) -> LocalComputeProvider:
        settings: dict[str, Any] = {
            "startup_timeout": 10.0,
            "stop_grace": 2.0,
            "health_interval": 0.5,
            "restart_backoff": 0.05,
            "max_restarts": 3,
        }
        settings.update(options)
        provider = LocalComputeProvider(tmp_path / "compute", **settings)
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.aclose()


@pytest.fixture
def provider(make_provider: Factory) -> LocalComputeProvider:
    return make_provider()


class Runtime:
    """Talks to a session's runtime through the provider's endpoint."""

    def __init__(
        self, provider: LocalComputeProvider, session: ComputeSession, http: httpx.AsyncClient
    ) -> None:
        self.provider, self.session, self.http = provider, session, http

    async def call(self, method: str, path: str) -> Any:
        endpoint = await self.provider.endpoint(self.session)
        response = await self.http.request(method, endpoint.base_url + path)
        response.raise_for_status()
        return response.json()

    async def count(self) -> int:
        return int((await self.call("GET", "/counter"))["count"])

    async def increment(self) -> int:
        return int((await self.call("POST", "/counter"))["count"])

    async def pid(self) -> int:
        return int((await self.call("GET", "/info"))["pid"])


async def port_closed(base_url: str, http: httpx.AsyncClient) -> bool:
    try:
        await http.get(base_url + "/health")
    except httpx.ConnectError:
        return True
    return False


async def test_lifecycle_keeps_state_through_suspend_and_archive(
    provider: LocalComputeProvider, http: httpx.AsyncClient
) -> None:
    """Create, suspend, resume, archive, resume from the archive and destroy, keeping the state."""
    spec = runtime_spec()
    session = await provider.ensure(spec)
    assert session.status == "running"
    assert session.external_id == session_name(spec.key)
    runtime = Runtime(provider, session, http)
    assert await runtime.increment() == 1
    pid = await runtime.pid()
    base_url = (await provider.endpoint(session)).base_url
    directory = provider.root / session.external_id

    suspended = await provider.suspend(session)

    assert suspended.status == "suspended"
    await gone(pid)
    assert await port_closed(base_url, http)
    assert (directory / "state" / "counter").read_text() == "1"
    with pytest.raises(ComputeError, match="not running here"):
        await provider.endpoint(session)

    resumed = await provider.ensure(spec, session.external_id)

    assert resumed.status == "running"
    assert resumed.external_id == session.external_id
    assert await runtime.count() == 1
    assert await runtime.increment() == 2

    archived = await provider.archive(resumed)

    assert archived.status == "archived"
    assert (directory / "state.tar.gz").is_file()
    assert not (directory / "state").exists()
    assert [s.status for s in await provider.list()] == ["archived"]

    restored = await provider.ensure(spec, session.external_id)

    assert restored.status == "running"
    assert not (directory / "state.tar.gz").exists()
    assert await runtime.count() == 2
    last_pid = await runtime.pid()

    await provider.destroy(restored)

    await gone(last_pid)
    assert not directory.exists()
    assert await provider.list() == []
    await provider.destroy(restored)  # idempotent


async def test_ensure_is_idempotent_and_serialised_per_key(
    provider: LocalComputeProvider, http: httpx.AsyncClient
) -> None:
    """Concurrent and repeated ensures of one key share one process."""
    spec = runtime_spec()

    first, second = await asyncio.gather(provider.ensure(spec), provider.ensure(spec))
    again = await provider.ensure(spec, first.external_id)

    assert first == second == again
    pid = await Runtime(provider, first, http).pid()
    assert (provider.root / first.external_id / "state" / "runtime.pid").read_text() == str(pid)
    assert len(await provider.list()) == 1


async def test_runtime_gets_port_files_home_and_only_its_environment(
    provider: LocalComputeProvider, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime runs in its state dir with its port, files and env, not the daemon's env."""
    monkeypatch.setenv("INTERLOCK_DAEMON_SECRET", "not for runtimes")
    spec = runtime_spec(
        env={"RUNTIME_TOKEN": "token-for-{port}"},
        files={"config.json": b'{"model": "smollm2"}', "nested/key.env": b"KEY=1"},
    )

    session = await provider.ensure(spec)

    info = await Runtime(provider, session, http).call("GET", "/info")
    endpoint = await provider.endpoint(session)
    port = endpoint.base_url.rsplit(":", 1)[1]
    state = provider.root / session.external_id / "state"
    assert endpoint.base_url == f"http://127.0.0.1:{port}"
    assert dict(endpoint.headers) == {}
    assert info["cwd"] == info["home"] == str(state)
    assert info["port"] == port
    assert info["token"] == f"token-for-{port}"
    assert info["config"] == '{"model": "smollm2"}'
    assert "INTERLOCK_DAEMON_SECRET" not in info["env_keys"]
    assert (state / "nested" / "key.env").stat().st_mode & 0o777 == 0o600


async def test_crashed_runtime_is_restarted_with_its_state(
    provider: LocalComputeProvider, http: httpx.AsyncClient
) -> None:
    """A runtime killed while running is restarted on the same state."""
    session = await provider.ensure(runtime_spec())
    runtime = Runtime(provider, session, http)
    await runtime.increment()
    pid = await runtime.pid()

    os.kill(pid, signal.SIGKILL)

    async def restarted() -> int:
        try:
            new_pid = await runtime.pid()
        except httpx.HTTPError as exc:
            raise AssertionError("not serving yet") from exc
        assert new_pid != pid
        return new_pid

    new_pid = await eventually(restarted, within=5)
    assert await runtime.count() == 1
    assert [s.status for s in await provider.list()] == ["running"]

    async def recorded() -> None:
        record = json.loads((provider.root / session.external_id / "session.json").read_text())
        assert record["pid"] == new_pid  # for a later daemon to find it

    await eventually(recorded, within=2)


async def test_runtime_that_keeps_crashing_is_given_up_then_ensured_again(
    make_provider: Factory, http: httpx.AsyncClient
) -> None:
    """After max_restarts failed restarts the session is failed; a later ensure starts it anew."""
    provider = make_provider(max_restarts=2)
    spec = runtime_spec()
    session = await provider.ensure(spec)
    runtime = Runtime(provider, session, http)
    marker = provider.root / session.external_id / "state" / "crash-on-start"
    marker.write_text("")

    os.kill(await runtime.pid(), signal.SIGKILL)

    async def failed() -> None:
        assert [s.status for s in await provider.list()] == ["failed"]

    await eventually(failed, within=5)
    with pytest.raises(ComputeError, match="not running here"):
        await provider.endpoint(session)
    log = (provider.root / session.external_id / "runtime.log").read_text()
    assert "crash-on-start is present" in log

    marker.unlink()
    again = await provider.ensure(spec, session.external_id)

    assert again.status == "running"
    assert await runtime.count() == 0


async def test_unresponsive_runtime_is_killed_and_restarted(
    make_provider: Factory, http: httpx.AsyncClient
) -> None:
    """A runtime whose health probes fail three times in a row is replaced."""
    provider = make_provider(health_interval=0.1)
    session = await provider.ensure(runtime_spec())
    runtime = Runtime(provider, session, http)
    pid = await runtime.pid()

    await runtime.call("POST", "/freeze")

    await gone(pid)

    async def healthy_again() -> None:
        try:
            assert await runtime.pid() != pid
        except httpx.HTTPError as exc:
            raise AssertionError("not serving yet") from exc

    await eventually(healthy_again, within=5)


async def test_command_that_exits_at_once_reports_its_output(
    provider: LocalComputeProvider,
) -> None:
    """A runtime that exits during startup is a ComputeError carrying its stderr."""
    script = "import sys; print('boom: config.yaml is missing', file=sys.stderr); sys.exit(2)"
    spec = SessionSpec(key="k-exits", command=[sys.executable, "-c", script], port=0)

    with pytest.raises(ComputeError, match="exited during startup \\(status 2\\)") as caught:
        await provider.ensure(spec)

    assert "boom: config.yaml is missing" in str(caught.value)
    assert [s.status for s in await provider.list()] == ["failed"]


async def test_runtime_never_healthy_is_killed_after_the_startup_timeout(
    make_provider: Factory,
) -> None:
    """A runtime that never answers 2xx on its health path is stopped and reported."""
    provider = make_provider(startup_timeout=1.0)
    spec = runtime_spec("k-unhealthy", "--unhealthy")

    with pytest.raises(ComputeError, match="did not answer GET /health within 1s") as caught:
        await provider.ensure(spec)

    assert "serving on 127.0.0.1" in str(caught.value)
    pid_file = provider.root / session_name(spec.key) / "state" / "runtime.pid"
    await gone(int(pid_file.read_text()))


async def test_missing_program_is_reported(provider: LocalComputeProvider) -> None:
    """A command that cannot be executed is a ComputeError naming it."""
    spec = SessionSpec(key="k-missing", command=["/nonexistent/hermes"], port=0)

    with pytest.raises(ComputeError, match="cannot start '/nonexistent/hermes'"):
        await provider.ensure(spec)


async def test_bad_specs_are_refused(provider: LocalComputeProvider) -> None:
    """Files outside the state dir, other regions and empty commands are refused."""
    escaping = runtime_spec(files={"../outside": b"x"})
    other_region = SessionSpec(key="k", command=["true"], port=0, region="us-east")
    no_command = SessionSpec(key="k", command=[], port=0)

    for spec in (escaping, other_region, no_command):
        with pytest.raises(ComputeError):
            await provider.ensure(spec)
    assert not (provider.root.parent / "outside").exists()


async def test_sigterm_ignoring_runtime_and_its_children_are_killed(
    make_provider: Factory, http: httpx.AsyncClient
) -> None:
    """Suspend kills the whole process group, with SIGKILL once the grace has passed."""
    provider = make_provider(stop_grace=0.3)
    session = await provider.ensure(runtime_spec("k-stubborn", "--ignore-term", "--spawn-child"))
    info = await Runtime(provider, session, http).call("GET", "/info")

    started = time.monotonic()
    await provider.suspend(session)

    assert time.monotonic() - started >= 0.3
    await gone(info["pid"])
    await gone(info["child_pid"])


async def test_daemon_restart_lists_session_as_suspended_and_resumes_it(
    make_provider: Factory, http: httpx.AsyncClient
) -> None:
    """A new provider on the same root lists a session as suspended and resumes its state."""
    spec = runtime_spec(labels={"user_id": "u1", "agent_id": "support"})
    first = make_provider()
    session = await first.ensure(spec)
    await Runtime(first, session, http).increment()
    await first.aclose()

    second = make_provider()
    listed = await second.list()

    assert [(s.external_id, s.status, s.key) for s in listed] == [
        (session.external_id, "suspended", spec.key)
    ]
    assert dict(listed[0].labels) == {"user_id": "u1", "agent_id": "support"}
    resumed = await second.ensure(spec, session.external_id)
    assert await Runtime(second, resumed, http).count() == 1


ORPHANING_DAEMON = """
import asyncio, os, sys
from pathlib import Path
from interlockd.vocabulary import SessionSpec
from interlockd.compute.local.provider import LocalComputeProvider

async def main():
    provider = LocalComputeProvider(Path(sys.argv[1]))
    session = await provider.ensure(SessionSpec(key=sys.argv[2], command=sys.argv[3:], port=0))
    print("external_id", session.external_id, flush=True)
    os._exit(0)  # like a daemon killed outright: nothing is stopped

asyncio.run(main())
"""


async def test_runtime_left_by_a_killed_daemon_is_stopped_before_resuming(
    make_provider: Factory, http: httpx.AsyncClient
) -> None:
    """A runtime orphaned by a killed daemon is stopped by the next one, which resumes the state."""
    provider = make_provider()
    spec = runtime_spec("k-orphan")
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ORPHANING_DAEMON,
        str(provider.root),
        spec.key,
        *spec.command,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'server'}{os.pathsep}{REPO / 'clients/python'}"},
    )
    async with asyncio.timeout(20):
        output, _ = await daemon.communicate()
    assert daemon.returncode == 0, output
    state = provider.root / session_name(spec.key) / "state"
    orphan = int((state / "runtime.pid").read_text())
    assert alive(orphan)

    assert [s.status for s in await provider.list()] == ["suspended"]
    session = await provider.ensure(spec)

    await gone(orphan)
    assert await Runtime(provider, session, http).pid() != orphan


async def test_different_keys_start_independently(
    provider: LocalComputeProvider, http: httpx.AsyncClient
) -> None:
    """A slow start of one key does not hold up another; each has its own process and state."""
    slow = runtime_spec("k-slow", "--start-delay", "1.5")
    fast = runtime_spec("k-fast")
    finished: list[str] = []

    async def ensure(spec: SessionSpec) -> ComputeSession:
        session = await provider.ensure(spec)
        finished.append(spec.key)
        return session

    slow_session, fast_session = await asyncio.gather(ensure(slow), ensure(fast))

    assert finished == ["k-fast", "k-slow"]
    slow_runtime = Runtime(provider, slow_session, http)
    fast_runtime = Runtime(provider, fast_session, http)
    await fast_runtime.increment()
    await fast_runtime.increment()
    assert (await slow_runtime.count(), await fast_runtime.count()) == (0, 2)
    assert await slow_runtime.pid() != await fast_runtime.pid()
    assert [s.key for s in await provider.list({"user_id": "nobody"})] == []


async def test_aclose_leaves_no_process(make_provider: Factory, http: httpx.AsyncClient) -> None:
    """aclose stops every runtime and what it spawned; later ensures are refused."""
    provider = make_provider()
    sessions = await asyncio.gather(
        provider.ensure(runtime_spec("k-a", "--spawn-child")), provider.ensure(runtime_spec("k-b"))
    )
    infos = [await Runtime(provider, s, http).call("GET", "/info") for s in sessions]

    await provider.aclose()

    for info in infos:
        assert not alive(info["pid"])
    await gone(infos[0]["child_pid"])
    assert {s.status for s in await provider.list()} == {"suspended"}
    assert not await provider.health()
    with pytest.raises(ComputeError, match="shut down"):
        await provider.ensure(runtime_spec("k-a"))


async def test_capabilities_price_and_measured_start_times(
    provider: LocalComputeProvider, http: httpx.AsyncClient
) -> None:
    """It declares suspend and archive, the local region, a zero price, and measures its starts."""
    assert provider.name == "local"
    assert provider.price == DEFAULT_PRICE
    assert provider.price.active_usd_per_second == 0.0
    assert provider.price.price_version
    caps = provider.capabilities
    assert (caps.suspend, caps.archive, caps.self_idles_after, caps.regions) == (
        True,
        True,
        0.0,
        ("local",),
    )
    assert await provider.health()
    spec = runtime_spec()

    session = await provider.ensure(spec)
    await provider.suspend(session)
    await provider.ensure(spec, session.external_id)

    measured = provider.capabilities
    assert 0 < measured.cold_start_seconds < 5.0
    assert 0 < measured.resume_seconds < 5.0


async def test_list_filters_by_labels(provider: LocalComputeProvider) -> None:
    """list(labels) returns only the sessions carrying every given label."""
    await provider.ensure(runtime_spec("k-1", labels={"user_id": "u1", "agent_id": "a"}))
    await provider.ensure(runtime_spec("k-2", labels={"user_id": "u2", "agent_id": "a"}))

    by_user = await provider.list({"user_id": "u1"})
    by_agent = await provider.list({"agent_id": "a"})

    assert [s.key for s in by_user] == ["k-1"]
    assert sorted(s.key for s in by_agent) == ["k-1", "k-2"]


async def test_operations_on_absent_sessions(provider: LocalComputeProvider) -> None:
    """Suspend and archive of an unknown session report it destroyed; destroy is a no-op."""
    ghost = ComputeSession(provider="local", external_id="ghost-0123", key="k", status="running")
    sneaky = ComputeSession(provider="local", external_id="../../etc", key="k", status="running")

    assert (await provider.suspend(ghost)).status == "destroyed"
    assert (await provider.archive(sneaky)).status == "destroyed"
    await provider.destroy(ghost)
    await provider.destroy(sneaky)


async def test_interrupted_archive_is_settled_by_the_record(
    provider: LocalComputeProvider, http: httpx.AsyncClient
) -> None:
    """The record's status decides which of a leftover state dir and archive is the state."""
    spec = runtime_spec()
    session = await provider.ensure(spec)
    runtime = Runtime(provider, session, http)
    await runtime.increment()
    archived = await provider.archive(session)
    directory = provider.root / session.external_id
    (directory / "state").mkdir()  # killed after the commit, before the directory was removed
    (directory / "state" / "counter").write_text("99")

    resumed = await provider.ensure(spec, archived.external_id)

    assert await runtime.count() == 1
    suspended = await provider.suspend(resumed)
    (directory / "state.tar.gz").write_bytes(b"an archive that was never committed")

    await provider.ensure(spec, suspended.external_id)

    assert await runtime.count() == 1
    assert not (directory / "state.tar.gz").exists()

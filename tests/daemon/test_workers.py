"""``interlockd serve --workers N`` as real processes: one port served by every worker,
one bootstrap and one banner, SIGTERM draining every worker, a killed worker restarted while
the others serve, and ``workers = 1`` staying one process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from interlock.v1 import router_pb2, router_pb2_grpc
from tests.daemon.process import DaemonProcess, serve_until_exit, write_config
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI, Reply

pytestmark = pytest.mark.timeout(180)

#: Runs sent each on a new connection: the chance that the kernel puts all on one of
#: two workers is 2 ** -(RUNS - 1).
RUNS = 30
#: Without it, channels to one address share one connection (gRPC's global subchannel
#: pool): the kernel would see one connection, and place it once.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def config(tmp_path: Path, upstream: FakeOpenAI, **top: Any) -> Path:
    return write_config(
        tmp_path / "interlock.toml",
        tmp_path / "data",
        {"fake": {"kind": "openai", "base_url": upstream.base_url, "default_model": "m"}},
        default_provider="fake",
        shutdown_announce_seconds=0.5,
        shutdown_grace_seconds=5,
        **top,
    )


@pytest.fixture
async def workers(tmp_path: Path, fake_a: FakeOpenAI) -> AsyncIterator[DaemonProcess]:
    daemon = DaemonProcess(config(tmp_path, fake_a, workers=2))
    await daemon.start()
    yield daemon
    await daemon.kill()


def events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    """The log records named ``name``, in the order they were written."""
    found = []
    for line in daemon.logs().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


def worker_pids(daemon: DaemonProcess) -> dict[int, int]:
    """Each worker's current pid, from the supervisor's log."""
    pids = {}
    for record in events(daemon, "worker_started"):
        pids[record["worker"]] = record["pid"]
    return pids


def children(pid: int) -> list[str]:
    """The pids of the child processes of ``pid`` (Linux' /proc)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [child for task in tasks for child in (task / "children").read_text().split()]


async def run_once(daemon: DaemonProcess, message: str) -> str:
    """One Run on a new connection; the text it streamed (it must finish)."""
    async with grpc.aio.insecure_channel(daemon.address, options=OWN_CONNECTION) as channel:
        call = router_pb2_grpc.AgentRouterStub(channel).Run(
            router_pb2.RunRequest(end_user_id="u", message=message),
            metadata=daemon.metadata(),
            timeout=30,
        )
        received = [event async for event in call]
    assert received[-1].HasField("finish"), received[-1]
    return "".join(e.text_delta.text for e in received if e.HasField("text_delta"))


async def serving_workers(daemon: DaemonProcess, runs: int, *, after: int = 0) -> set[int]:
    """Send ``runs`` runs, each on a new connection; the workers that finished them.

    ``after``: how many run_finished records there were before (those are not counted).
    """
    texts = await asyncio.gather(*(run_once(daemon, f"hi {i}") for i in range(runs)))
    assert all(text == "Hello from the fake." for text in texts)

    async def logged() -> list[dict[str, Any]]:
        finished = events(daemon, "run_finished")[after:]
        assert len(finished) == runs
        return finished

    return {record["worker"] for record in await eventually(logged)}


async def health(daemon: DaemonProcess, channel: grpc.aio.Channel | None = None) -> int:
    """The overall health status through the shared port (a new connection unless given)."""
    if channel is not None:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        return int(reply.status)
    async with grpc.aio.insecure_channel(daemon.address, options=OWN_CONNECTION) as fresh:
        return await health(daemon, fresh)


async def test_two_workers_serve_runs_through_one_port(workers: DaemonProcess) -> None:
    """With --workers 2, runs sent on new connections to the one port are served by both
    workers; the banner (keys, listening line) is printed once and the store bootstrapped once."""
    assert sum(line.startswith("interlockd listening on") for line in workers.banner) == 1
    assert sum("INTERLOCK_API_KEY=" in line for line in workers.banner) == 1
    assert sorted(worker_pids(workers)) == [1, 2]
    assert {r["port"] for r in events(workers, "listening")} == {workers.port}
    assert {r["worker"] for r in events(workers, "listening")} == {1, 2}
    for _ in range(4):
        assert await health(workers) == health_pb2.HealthCheckResponse.SERVING
    assert await serving_workers(workers, RUNS) == {1, 2}


async def test_a_second_daemon_cannot_join_the_workers_port(
    workers: DaemonProcess, tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    """A plain interlockd started on the workers' port is refused, as on a single process's."""
    other = tmp_path / "other"
    other.mkdir()
    path = config(other, fake_a)
    path.write_text(path.read_text().replace("127.0.0.1:0", workers.address, 1))
    refused = await serve_until_exit(path, within=60)
    assert refused.returncode == 1
    assert f"cannot listen on {workers.address}" in refused.stderr


async def test_sigterm_drains_every_worker(workers: DaemonProcess, fake_a: FakeOpenAI) -> None:
    """SIGTERM to the supervisor: health goes NOT_SERVING, an in-flight run finishes, every
    worker stops and the supervisor exits 0 after them."""
    pids = worker_pids(workers)
    fake_a.enqueue(Reply().text("slow ").delay(1.5).text("but finished"))
    async with workers.channel() as channel:
        call = router_pb2_grpc.AgentRouterStub(channel).Run(
            router_pb2.RunRequest(end_user_id="u", message="take your time"),
            metadata=workers.metadata(),
        )
        first = await call.read()
        workers.signal(signal.SIGTERM)

        async def not_serving() -> None:
            assert await health(workers, channel) == health_pb2.HealthCheckResponse.NOT_SERVING

        await eventually(not_serving, within=5)
        rest = []
        while (event := await call.read()) is not grpc.aio.EOF:
            rest.append(event)
    assert rest[-1].HasField("finish")
    text = "".join(e.text_delta.text for e in [first, *rest] if e.HasField("text_delta"))
    assert text == "slow but finished"
    assert await workers.wait(within=60) == 0
    assert {r["worker"] for r in events(workers, "stopped")} == {1, 2}
    assert events(workers, "workers_stopped")[-1]["failed"] == 0
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_killed_worker_is_restarted_while_the_other_serves(
    workers: DaemonProcess,
) -> None:
    """kill -9 of one worker: runs keep being served meanwhile, the supervisor restarts it
    after a backoff, and then both workers serve again."""
    killed = worker_pids(workers)[1]
    os.kill(killed, signal.SIGKILL)

    async def exit_logged() -> dict[str, Any]:
        found = events(workers, "worker_exited")
        assert len(found) == 1
        return found[0]

    exited = await eventually(exit_logged)
    assert (exited["worker"], exited["pid"], exited["exit_code"]) == (1, killed, -9)
    assert exited["restart_in"] > 0
    before = len(events(workers, "run_finished"))
    assert await serving_workers(workers, 5, after=before) <= {2}

    async def restarted() -> int:
        found = events(workers, "worker_restarted")
        assert len(found) == 1
        assert found[0]["worker"] == 1
        return int(found[0]["pid"])

    pid = await eventually(restarted, within=60)
    assert pid != killed
    assert worker_pids(workers)[1] == pid
    assert await health(workers) == health_pb2.HealthCheckResponse.SERVING
    before = len(events(workers, "run_finished"))
    assert await serving_workers(workers, RUNS, after=before) == {1, 2}


async def test_one_worker_is_one_process(tmp_path: Path, fake_a: FakeOpenAI) -> None:
    """With the default workers = 1 the serving process is the one started: no supervisor,
    no children, no worker field in its log."""
    daemon = DaemonProcess(config(tmp_path, fake_a))
    await daemon.start()
    try:
        assert daemon.proc is not None
        assert await run_once(daemon, "hi") == "Hello from the fake."
        assert children(daemon.proc.pid) == []
        (listening,) = events(daemon, "listening")
        assert "worker" not in listening
        assert events(daemon, "workers_starting") == []
    finally:
        await daemon.kill()

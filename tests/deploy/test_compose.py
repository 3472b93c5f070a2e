"""deploy/compose.yaml's topology, run as processes: each interlockd service of the file is
started as a real ``interlockd serve`` with the environment compose would give its
container (the image's ENV, the env files' committed templates, ``environment``, the
mounted interlock.toml), on the session's throwaway PostgreSQL in place of the postgres
service, and a conversation is driven over gRPC's round_robin across the replicas.

Only what a container changes is rewritten: listen addresses become free loopback
ports, data_dir a temp directory, the provider's base URL a loopback fake. Each
distinct store URL of the file gets a database of its own and each distinct master key
a key of its own, so replicas given different ones by the file do not share here either.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from interlock import Client
from interlock.v1 import conversations_pb2 as cpb
from tests.daemon.process import DaemonProcess
from tests.deploy.files import (
    DEPLOY,
    compose,
    interlockd_services,
    mounted_source,
    port_of,
    seconds,
    service_env,
)
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI, Reply
from tests.postgres import PostgresCluster

#: Turns of a throwaway conversation at most, until round_robin has used every replica.
MAX_WARM_UPS = 6


def _served_by(replicas: dict[str, DaemonProcess], run_id: str) -> str:
    """The service whose replica logged the end of run ``run_id``."""
    finishers = []
    for name, replica in replicas.items():
        for line in replica.logs().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "run_finished" and record.get("run_id") == run_id:
                finishers.append(name)
    assert len(finishers) == 1, f"run {run_id} finished on {finishers}"
    return finishers[0]


async def _setup(config: Path, env: dict[str, str]) -> tuple[str, str]:
    """``interlockd setup`` as the README runs it in a replica's container; its keys."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "interlockd.cli",
        "setup",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    keys = dict(re.findall(r"export (INTERLOCK_\w+_KEY)=(\S+)", out.decode()))
    return keys["INTERLOCK_OPERATOR_KEY"], keys["INTERLOCK_API_KEY"]


#: deploy/healthcheck.py with its imports done, run when a line arrives on stdin: the check
#: itself then takes milliseconds, well inside a stopping replica's announce, however
#: slowly a loaded machine starts Python.
_PRIMED = (
    "import runpy, sys, grpc; from grpc_health.v1 import health_pb2_grpc; "
    "print('primed', flush=True); sys.stdin.readline(); sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


async def _health_script(address: str) -> asyncio.subprocess.Process:
    """deploy/healthcheck.py (the image's HEALTHCHECK) for ``address``, imported and waiting:
    :func:`_check` runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PRIMED,
        str(DEPLOY / "healthcheck.py"),
        address,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        assert await proc.stdout.readline() == b"primed\n"
    return proc


async def _check(script: asyncio.subprocess.Process) -> tuple[int, str]:
    """Let a primed health check run; its exit code and output."""
    async with asyncio.timeout(10):
        out, _ = await script.communicate(b"go\n")
    assert script.returncode is not None
    return script.returncode, out.decode().strip()


def _replica_env(
    service: dict[str, Any],
    postgres: tuple[str, dict[str, Any]],
    cluster: PostgresCluster,
    databases: dict[str, str],
    keys: dict[str, str],
    home: Path,
    fake: FakeOpenAI,
) -> tuple[Path, dict[str, str]]:
    """A service's container environment, rewritten for a process on this machine."""
    env = service_env(service)
    # The file's store URL names the postgres service with the user, password and
    # database that service is created with.
    store_url = env["INTERLOCK_STORE_URL"]
    url = urlsplit(store_url)
    postgres_name, postgres_service = postgres
    postgres_env = service_env(postgres_service)
    assert (url.scheme, url.hostname, url.port) == ("postgresql", postgres_name, 5432)
    assert url.username == postgres_env["POSTGRES_USER"]
    assert url.password == postgres_env["POSTGRES_PASSWORD"]
    assert url.path == "/" + postgres_env["POSTGRES_DB"]
    if store_url not in databases:
        databases[store_url] = cluster.create_database()
    env["INTERLOCK_STORE_URL"] = databases[store_url]
    master_key = env["INTERLOCK_KEYS__MASTER_KEY"]
    if master_key not in keys:
        keys[master_key] = base64.b64encode(secrets.token_bytes(32)).decode()
    env["INTERLOCK_KEYS__MASTER_KEY"] = keys[master_key]
    # The container's ports are published; here each replica takes free ones.
    published = {int(mapping.rsplit(":", 1)[1]) for mapping in service["ports"]}
    assert {port_of(env["INTERLOCK_LISTEN"]), port_of(env["INTERLOCK_HTTP_LISTEN"])} <= published
    env["INTERLOCK_LISTEN"] = "127.0.0.1:0"
    env["INTERLOCK_HTTP_LISTEN"] = "127.0.0.1:0"
    env["INTERLOCK_DATA_DIR"] = str(home / "data")
    env["INTERLOCK_PROVIDERS__OPENAI__BASE_URL"] = fake.base_url
    # The fake requires the env file's API key: it must reach the provider.
    assert env["INTERLOCK_PROVIDERS__OPENAI__API_KEY"] == fake.api_key
    config = home / "interlock.toml"
    shutil.copyfile(mounted_source(service, env.pop("INTERLOCK_CONFIG")), config)
    return config, env


async def test_compose_replicas_continue_one_conversation_over_round_robin(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """Both interlockd services of compose.yaml, started with the environment compose gives
    them, set up once through one of them, serve one conversation over a round_robin
    channel: turn 1 lands on one replica, turn 2 on the other, turn 3 on the first again,
    and each sees the whole history; the window holds every turn once. The image's health
    check says SERVING, then NOT_SERVING while a stopping replica announces it, and the
    replicas stop cleanly within their stop_grace_period."""
    data = compose()
    services = interlockd_services(data)
    assert len(services) == 2
    postgres = next(
        (name, service)
        for name, service in data["services"].items()
        if str(service.get("image", "")).startswith("postgres:15")
    )
    for service in services.values():
        assert service["command"] == ["serve"]
        assert postgres[0] in service["depends_on"]
    api_key = service_env(next(iter(services.values())))["INTERLOCK_PROVIDERS__OPENAI__API_KEY"]
    databases: dict[str, str] = {}
    keys: dict[str, str] = {}
    replicas: dict[str, DaemonProcess] = {}
    configs: dict[str, tuple[Path, dict[str, str]]] = {}
    async with FakeOpenAI(api_key=api_key) as fake:
        fake.responder = lambda body: Reply().text(f"heard {len(body['messages'])} messages")
        for name, service in services.items():
            home = tmp_path / name
            home.mkdir()
            configs[name] = _replica_env(
                service, postgres, postgres_cluster, databases, keys, home, fake
            )
            replicas[name] = DaemonProcess(*configs[name], bootstrap=False)
        channel: grpc.aio.Channel | None = None
        try:
            await asyncio.gather(*(replica.start() for replica in replicas.values()))
            first = next(iter(services))
            operator_key, sandbox_key = await _setup(*configs[first])

            # The client-side balancing compose.yaml documents, over the published ports.
            published = [
                int(mapping.split(":")[-2])
                for service in services.values()
                for mapping in service["ports"][:1]
            ]
            target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in published)
            documented = (DEPLOY / "compose.yaml").read_text()
            assert f'"{target}"' in documented
            assert '("grpc.lb_policy_name", "round_robin")' in documented
            channel = grpc.aio.insecure_channel(
                "ipv4:" + ",".join(replica.address for replica in replicas.values()),
                options=[("grpc.lb_policy_name", "round_robin")],
            )
            client = Client(channel=channel, api_key=sandbox_key, operator_key=operator_key)

            # round_robin sends each call to the next READY replica: once a turn has
            # landed on each (a replica's connection may still be opening at first),
            # calls alternate between them.
            warmed: set[str] = set()
            for _ in range(MAX_WARM_UPS):
                warm = await client.run_text("warm up", end_user_id="u-0", timeout=30)
                assert warm.ok, warm.error
                warmed.add(_served_by(replicas, warm.run_id))
                if warmed == set(services):
                    break
            assert warmed == set(services), f"round_robin used only {warmed}"

            session = ""
            said: list[tuple[str, str, str]] = []
            served: list[str] = []
            for number in (1, 2, 3):
                message = f"turn {number}"
                turn = await client.run_text(
                    message, end_user_id="u-1", session_id=session, timeout=30
                )
                assert turn.ok, turn.error
                session = session or turn.session_id
                assert turn.session_id == session
                said.append((message, turn.text, turn.run_id))
                served.append(_served_by(replicas, turn.run_id))
                # Whichever replica ran it, the model was sent the whole conversation.
                history = [(m["role"], m["content"]) for m in fake.requests[-1].body["messages"]]
                expected = [
                    pair
                    for message, answer, _ in said[:-1]
                    for pair in (("user", message), ("assistant", answer))
                ]
                assert history[-len(expected) - 1 :] == [*expected, ("user", message)]
            assert served[0] != served[1], f"turns 1 and 2 both ran on {served[0]}"
            assert served[2] == served[0]

            window = await client.conversations.get(session, end_user_id="u-1")
            assert [(e.kind, e.text, e.run_id) for e in window.entries] == [
                entry
                for message, answer, run_id in said
                for entry in (
                    (cpb.ENTRY_KIND_USER, message, run_id),
                    (cpb.ENTRY_KIND_ASSISTANT, answer, run_id),
                )
            ]

            stopping = replicas[first]
            addresses = [replica.address for replica in replicas.values()]
            *scripts, script = await asyncio.gather(
                *(_health_script(address) for address in [*addresses, stopping.address])
            )
            for address, serving in zip(addresses, scripts, strict=True):
                assert await _check(serving) == (0, f"{address}: SERVING")
            for replica in replicas.values():
                replica.signal(signal.SIGTERM)
            async with grpc.aio.insecure_channel(stopping.address) as direct:
                health = health_pb2_grpc.HealthStub(direct)

                async def not_serving() -> None:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

                await eventually(not_serving)
            assert await _check(script) == (1, f"{stopping.address}: NOT_SERVING")
            assert stopping.proc is not None
            assert stopping.proc.returncode is None, "the port must stay open while announcing"
            for name, replica in replicas.items():
                assert await replica.wait(within=seconds(services[name]["stop_grace_period"])) == 0
        finally:
            if channel is not None:
                await channel.close(None)
            await asyncio.gather(*(_stop(replica) for replica in replicas.values()))


async def _stop(replica: DaemonProcess) -> None:
    """SIGTERM a replica still running and wait for it (SIGKILL if it lingers)."""
    if replica.proc is None or replica.proc.returncode is not None:
        return
    replica.signal(signal.SIGTERM)
    try:
        await replica.wait(within=20)
    except TimeoutError:
        await replica.kill()

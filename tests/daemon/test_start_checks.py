"""What `interlockd serve` checks before it serves: the master key, its ports, and its banner.

Each test runs the real daemon process. A refused start must end the process
by itself, non-zero, with one structured line saying what is wrong and what
to do, and must leave the data directory as it found it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shlex
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from interlock.v1 import router_pb2, router_pb2_grpc
from tests.daemon.process import DaemonProcess, Exited, serve_until_exit, write_config
from tests.fakes.openai import FakeOpenAI, Reply

#: A refused start ends well within this (the port checks run before the
#: daemon's modules load; the key check before the store opens).
EXITS_WITHIN = 20.0


def fresh_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def snapshot(data_dir: Path) -> dict[str, str]:
    """The data directory's files by name and content hash.

    The shared-memory index is left out: SQLite maintains it for any reader,
    and it holds no data. A WAL counts by its content, so an empty one that a
    read-only open left behind equals none.
    """
    found: dict[str, str] = {}
    for path in sorted(data_dir.iterdir()):
        if path.name.endswith("-shm"):
            continue
        content = path.read_bytes()
        if path.name.endswith("-wal") and not content:
            continue
        found[path.name] = hashlib.sha256(content).hexdigest()
    return found


def refusal(exited: Exited) -> dict[str, object]:
    """The one structured line a refused start logs; asserts there is nothing else."""
    assert exited.returncode == 1, exited
    assert exited.seconds < EXITS_WITHIN
    assert "listening" not in exited.stdout
    lines = exited.stderr.splitlines()
    assert len(lines) == 1, exited.stderr
    line: dict[str, object] = json.loads(lines[0])
    assert line["event"] == "cannot_start"
    assert line["level"] == "error"
    return line


@pytest.fixture
def config(tmp_path: Path, fake_a: FakeOpenAI) -> Path:
    return write_config(
        tmp_path / "interlock.toml",
        tmp_path / "data",
        {"fake": {"kind": "openai", "base_url": fake_a.base_url, "default_model": "m"}},
        default_provider="fake",
        shutdown_announce_seconds=0,
    )


@pytest.fixture
async def populated(config: Path, fake_a: FakeOpenAI) -> Path:
    """A data directory whose store holds a sandbox and a sealed turn; the daemon stopped."""
    daemon = await DaemonProcess(config).start()
    try:
        fake_a.enqueue(Reply().text("sealed at rest"))
        async with daemon.channel() as channel:
            events = [
                e
                async for e in router_pb2_grpc.AgentRouterStub(channel).Run(
                    router_pb2.RunRequest(end_user_id="u", message="remember me"),
                    metadata=daemon.metadata(),
                )
            ]
        assert events[-1].HasField("finish")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    finally:
        await daemon.kill()
    return config.parent / "data"


async def test_wrong_master_key_in_env_refuses_to_start(config: Path, populated: Path) -> None:
    """Another key in INTERLOCK_KEYS__MASTER_KEY against a populated store: exit 1 at once,
    naming the variable and the database, nothing written."""
    before = snapshot(populated)
    exited = await serve_until_exit(config, env={"INTERLOCK_KEYS__MASTER_KEY": fresh_key()})
    message = str(refusal(exited)["error"])
    assert "INTERLOCK_KEYS__MASTER_KEY" in message
    assert str(populated / "interlock.db") in message
    assert snapshot(populated) == before


async def test_deleted_key_file_refuses_to_start_and_creates_none(
    config: Path, populated: Path
) -> None:
    """A deleted master.key against a populated store: exit 1 naming the file; no new key file."""
    key_file = populated / "master.key"
    key_file.unlink()
    before = snapshot(populated)
    message = str(refusal(await serve_until_exit(config))["error"])
    assert str(key_file) in message
    assert "missing" in message
    assert not key_file.exists()
    assert snapshot(populated) == before


async def test_other_key_file_refuses_to_start(config: Path, populated: Path) -> None:
    """A key file holding another key against a populated store: exit 1 naming the file."""
    key_file = populated / "master.key"
    key_file.write_text(json.dumps({"current": "mk1", "keys": {"mk1": fresh_key()}}))
    before = snapshot(populated)
    message = str(refusal(await serve_until_exit(config))["error"])
    assert f"master key file {key_file}" in message
    assert snapshot(populated) == before


async def test_the_right_env_key_restarts_its_store(tmp_path: Path, fake_a: FakeOpenAI) -> None:
    """A store created under an environment-given key starts again under that key, and
    no key file is ever created for it."""
    config = write_config(
        tmp_path / "interlock.toml",
        tmp_path / "data",
        {"fake": {"kind": "openai", "base_url": fake_a.base_url, "default_model": "m"}},
        default_provider="fake",
        shutdown_announce_seconds=0,
    )
    env = {"INTERLOCK_KEYS__MASTER_KEY": fresh_key()}
    for _ in range(2):
        daemon = await DaemonProcess(config, env=env).start()
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert not (tmp_path / "data" / "master.key").exists()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process's listener holds."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield holder.getsockname()[1]


@pytest.mark.parametrize(
    ("setting", "named"),
    [("listen", "--listen HOST:PORT"), ("http_listen", "http_listen setting")],
)
async def test_a_taken_port_exits_at_once_naming_the_setting(
    tmp_path: Path, fake_a: FakeOpenAI, taken_port: int, setting: str, named: str
) -> None:
    """A taken gRPC or HTTP port: exit 1 by itself with one line naming the address and the
    setting that moves it, before anything is written."""
    config = write_config(
        tmp_path / "interlock.toml",
        tmp_path / "data",
        {"fake": {"kind": "openai", "base_url": fake_a.base_url, "default_model": "m"}},
        default_provider="fake",
    )
    text = config.read_text().replace(
        f'{setting} = "127.0.0.1:0"', f'{setting} = "127.0.0.1:{taken_port}"'
    )
    config.write_text(text)
    message = str(refusal(await serve_until_exit(config))["error"])
    assert f"127.0.0.1:{taken_port}" in message
    assert named in message
    assert "in use" in message
    assert not (tmp_path / "data").exists()


async def test_banner_names_a_client_command_that_works(
    config: Path, fake_a: FakeOpenAI, tmp_path: Path
) -> None:
    """The start banner's `Then:` command runs the client that is installed beside the
    daemon (not on PATH after `make serve`), and it answers."""
    daemon = await DaemonProcess(config).start()
    try:
        then = next(line for line in daemon.banner if line.startswith("Then: "))
        command = shlex.split(then.removeprefix("Then: "))
        expected = Path(sys.executable).parent / "interlock"
        assert os.path.abspath(command[0]) == os.path.abspath(expected)  # noqa: ASYNC240 (no I/O)
        fake_a.enqueue(Reply().text("Hello from the fake."))
        env = {
            **os.environ,
            "INTERLOCK_API_KEY": daemon.api_key,
            "INTERLOCK_ADDRESS": daemon.address,
            "PATH": "/usr/bin:/bin",  # as after `make serve`: the venv is not on PATH
        }
        # The command as printed, run from where the daemon was started.
        client = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(60):
            out, err = await client.communicate()
        assert client.returncode == 0, err.decode()
        assert "Hello from the fake." in out.decode()
    finally:
        await daemon.kill()

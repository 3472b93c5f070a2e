"""The throwaway PostgreSQL clusters the store's tests run on (tests/postgres.py)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.eventually import eventually
from tests.postgres import PostgresCluster, require_postgres


def _listening_addresses(port: int) -> set[str] | None:
    """The local addresses with a TCP socket listening on ``port`` (None: no /proc/net/tcp)."""
    if not Path("/proc/net/tcp").exists():
        return None
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(_proc_net_address(address))
    return found


def _proc_net_address(hex_address: str) -> str:
    """A /proc/net address (little-endian 32-bit words in hex) as text."""
    raw = b"".join(
        bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, len(hex_address), 8)
    )
    if len(raw) == 4:
        return ".".join(str(b) for b in raw)
    return raw.hex(":", 2)


def _is_running(pid: int) -> bool:
    """Whether ``pid`` names a live process (a zombie awaiting its reaper counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the server's backends and workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = entry.joinpath("stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # The fields after the command name, which sits in parentheses: state, ppid, ...
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return children


async def test_database_is_reachable_with_the_urls_password(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """A created database is reachable over TCP with the password its URL carries."""
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == urlsplit(postgres_url).path[1:]
        assert await conn.fetchval("SELECT current_user") == postgres_cluster.user
        assert await conn.fetchval("SHOW password_encryption") == "scram-sha-256"
        assert int(await conn.fetchval("SHOW max_connections")) == 300
    finally:
        await conn.close()


async def test_each_test_gets_a_database_of_its_own(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """postgres_url is a fresh, empty database, not the cluster's postgres database."""
    assert urlsplit(postgres_url).path != "/postgres"
    conn = await asyncpg.connect(postgres_url)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables == 0
    finally:
        await conn.close()


async def test_a_wrong_password_is_refused(postgres_url: str) -> None:
    """A login with any other password fails authentication (scram-sha-256 on TCP)."""
    parts = urlsplit(postgres_url)
    netloc = f"{parts.username}:not-the-password@{parts.hostname}:{parts.port}"
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(urlunsplit(parts._replace(netloc=netloc)))


async def test_cluster_listens_on_loopback_only(postgres_cluster: PostgresCluster) -> None:
    """The server's TCP socket is bound to 127.0.0.1 alone, on the cluster's port."""
    conn = await asyncpg.connect(postgres_cluster.url)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert int(await conn.fetchval("SHOW port")) == postgres_cluster.port
    finally:
        await conn.close()
    listening = _listening_addresses(postgres_cluster.port)
    if listening is None:
        pytest.skip("no /proc/net/tcp to list the listening sockets")
    assert listening == {"127.0.0.1"}


async def test_stop_leaves_no_process_and_no_directory() -> None:
    """stop() ends the server and every process it started, and removes its directory."""
    require_postgres()
    with PostgresCluster() as cluster:
        assert cluster.directory is not None
        directory = cluster.directory
        conn = await asyncpg.connect(cluster.url)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        server = cluster.postmaster_pid
        processes = [server, *_children(server)]
        assert len(processes) > 1, "a running server has its background workers"
        assert all(_is_running(pid) for pid in processes)
    assert not directory.exists()

    async def all_ended() -> None:
        assert [pid for pid in processes if _is_running(pid)] == []

    # pg_ctl waits for the server; a worker may outlive it by a moment.
    await eventually(all_ended)
    assert cluster.directory is None
    cluster.stop()  # a second stop is a no-op


def test_cluster_owner_is_not_root() -> None:
    """As root the cluster is created by the postgres account (initdb refuses root)."""
    require_postgres()
    if os.geteuid() != 0:
        pytest.skip("only root runs initdb as another account")
    with PostgresCluster() as cluster:
        assert cluster.directory is not None
        data = cluster.directory / "data"
        assert data.stat().st_uid != 0
        assert Path(f"/proc/{cluster.postmaster_pid}").stat().st_uid == data.stat().st_uid

"""Throwaway PostgreSQL clusters for tests and benchmarks, and the pytest fixtures over them.

A ``PostgresCluster`` is a real server of the installed binaries in a temp
directory of its own: initdb with a random superuser password and
scram-sha-256, listening only on 127.0.0.1 on a free port, its unix socket
inside that directory; ``stop()`` ends it and removes the directory. The
fixtures give a session one cluster (``postgres_cluster``) and each test a
fresh database on it (``postgres_url``), dropped after the test.

Without the binaries the fixtures skip, saying how to install them, except in
CI (``CI=true``), where a missing PostgreSQL is a failure: the CI machine
installs it (``make test``). Nothing here ever touches a cluster it did not
create, e.g. the one Debian's package starts as a service.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self
from urllib.parse import quote

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

#: The superuser initdb creates; its password is random per cluster.
SUPERUSER = "interlock"

#: Where Debian (and Ubuntu) install each major version's server binaries.
_DEBIAN_ROOT = Path("/usr/lib/postgresql")

#: The system account that owns clusters when we run as root (initdb refuses root).
_OWNER = "postgres"

_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: `make test` installs them "
    "(Debian: apt-get install postgresql), or put the bin directory's pg_config on PATH"
)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (or no account to run them as root)."""


def find_bindir() -> Path | None:
    """The server binaries: ``pg_config --bindir`` when it has initdb, else Debian's newest."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        bindir = Path(result.stdout.strip())
        if result.returncode == 0 and (bindir / "initdb").is_file():
            return bindir
    installed = [
        initdb.parent
        for initdb in _DEBIAN_ROOT.glob("*/bin/initdb")
        if initdb.parent.parent.name.isdigit()
    ]
    if not installed:
        return None
    return max(installed, key=lambda bindir: int(bindir.parent.name))


def _free_port() -> int:
    """A port free on 127.0.0.1 right now (the kernel picks it: bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresCluster:
    """One throwaway PostgreSQL cluster: ``start()`` it (or use it as a context manager).

    ``durable=False`` (tests) turns fsync, synchronous_commit and full page
    writes off: a crash loses the cluster, which nobody keeps. Benchmarks pass
    ``durable=True`` to measure what a deployment's settings cost.
    """

    def __init__(self, *, durable: bool = False, max_connections: int = 300) -> None:
        self.durable = durable
        self.max_connections = max_connections
        self.user = SUPERUSER
        self.password = secrets.token_urlsafe(24)
        self.host = "127.0.0.1"
        self.port = 0
        self.directory: Path | None = None
        self._bindir: Path | None = None
        self._as_owner: list[str] = []

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Self:
        """initdb into a new temp directory and start the server; return when it accepts logins."""
        if self.directory is not None:
            raise RuntimeError("this PostgresCluster is already started")
        bindir = find_bindir()
        if bindir is None:
            raise PostgresUnavailable(INSTALL_HINT)
        self._bindir = bindir
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(_OWNER)
            except KeyError as exc:
                raise PostgresUnavailable(
                    f"running as root, and initdb refuses root: no {_OWNER!r} account to run "
                    "it as (Debian's postgresql package creates it)"
                ) from exc
            self._as_owner = ["runuser", "-u", _OWNER, "--"]
        self.directory = Path(tempfile.mkdtemp(prefix="interlock-pg-"))
        atexit.register(self.stop)
        try:
            self._init()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (immediate: nothing in it is kept) and remove its directory."""
        directory, self.directory = self.directory, None
        if directory is None:
            return
        atexit.unregister(self.stop)
        data = directory / "data"
        if (data / "postmaster.pid").exists():
            self._run(
                "pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w", "-t", "60", check=False
            )
        shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The superuser's URL to the ``postgres`` database."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """The superuser's URL to database ``name`` on this cluster."""
        password = quote(self.password, safe="")
        return f"postgresql://{self.user}:{password}@{self.host}:{self.port}/{name}"

    @property
    def postmaster_pid(self) -> int:
        """The server's process id (the first line of postmaster.pid)."""
        return int(self._data.joinpath("postmaster.pid").read_text().split("\n", 1)[0])

    # -- databases -------------------------------------------------------------

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh, empty database (a random name by default); return its URL."""
        name = name or f"t_{secrets.token_hex(8)}"
        self._sql(f"CREATE DATABASE {_identifier(name)}")
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, ending the sessions still connected to it."""
        self._sql(f"DROP DATABASE IF EXISTS {_identifier(name)} WITH (FORCE)")

    def psql(self, *args: str, database: str = "postgres") -> str:
        """Run psql against ``database`` as the superuser over TCP; return its output."""
        result = subprocess.run(
            [
                str(self._binary("psql")),
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                *args,
            ],
            capture_output=True,
            text=True,
            env=self._client_env(),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    # -- internals -------------------------------------------------------------

    @property
    def _data(self) -> Path:
        if self.directory is None:
            raise RuntimeError("this PostgresCluster is not started")
        return self.directory / "data"

    def _binary(self, name: str) -> Path:
        if self._bindir is None:
            raise RuntimeError("this PostgresCluster is not started")
        return self._bindir / name

    def _run(self, binary: str, *args: str, check: bool = True) -> None:
        """Run a server binary as the cluster's owner; its output only in the error."""
        result = subprocess.run(
            [*self._as_owner, str(self._binary(binary)), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{binary} failed ({result.returncode}): {result.stderr.strip() or result.stdout}"
            )

    def _client_env(self) -> dict[str, str]:
        # Only what a client needs: no PG* settings of the caller leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = self.password
        env["PGCONNECT_TIMEOUT"] = "10"
        return env

    def _init(self) -> None:
        assert self.directory is not None
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._as_owner:
            for path in (self.directory, pwfile):
                shutil.chown(path, _OWNER, _OWNER)
        self._run(
            "initdb",
            "-D",
            str(self._data),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        )
        pwfile.unlink()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.directory}'",
            "max_connections": str(self.max_connections),
            "logging_collector": "off",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        # Appending keeps the file's owner; the last setting of a name wins.
        with self._data.joinpath("postgresql.conf").open("a") as conf:
            conf.write("\n# Throwaway test cluster (tests/postgres.py)\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _start_server(self) -> None:
        # The port is free when picked; if another process takes it first, the
        # server fails to bind and a new port is tried.
        failures: list[str] = []
        for _attempt in range(3):
            self.port = _free_port()
            log = self._data / "server.log"
            result = subprocess.run(
                [
                    *self._as_owner,
                    str(self._binary("pg_ctl")),
                    "start",
                    "-D",
                    str(self._data),
                    "-l",
                    str(log),
                    "-o",
                    f"-p {self.port}",
                    "-w",
                    "-t",
                    "60",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                self._wait_ready()
                return
            failures.append(log.read_text() if log.exists() else result.stderr)
        raise RuntimeError("PostgreSQL did not start:\n" + "\n".join(failures))

    def _wait_ready(self, within: float = 30.0) -> None:
        """Until a login with the password over TCP succeeds (pg_ctl -w watched the socket file)."""
        deadline = time.monotonic() + within
        while True:
            try:
                self.psql("-tAc", "SELECT 1")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def _sql(self, statement: str) -> None:
        self.psql("-c", statement)


def _identifier(name: str) -> str:
    """``name`` as a quoted identifier; only simple lowercase names are accepted."""
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"database name {name!r}: use lowercase letters, digits and _")
    return f'"{name}"'


def _unavailable(reason: str) -> None:
    """Skip outside CI, fail in CI: CI must run the PostgreSQL tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def require_postgres() -> None:
    """For a test that starts clusters of its own: skip (fail in CI) without the binaries."""
    if find_bindir() is None:
        _unavailable(INSTALL_HINT)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway cluster for the whole test session."""
    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database for one test (dropped after it): its superuser URL."""
    url = postgres_cluster.create_database()
    try:
        yield url
    finally:
        postgres_cluster.drop_database(url.rsplit("/", 1)[1])

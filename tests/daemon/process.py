"""Run ``interlockd serve`` as a real child process, for signal and crash tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


def write_config(
    path: Path, data_dir: Path, providers: dict[str, dict[str, Any]], **top: Any
) -> Path:
    """A TOML config listening on port 0 with the given provider tables."""
    lines = [
        'listen = "127.0.0.1:0"',
        'http_listen = "127.0.0.1:0"',
        f'data_dir = "{data_dir}"',
        'log_format = "json"',
    ]
    for key, value in top.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    for name, table in providers.items():
        lines.append(f"[providers.{name}]")
        for key, value in table.items():
            lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _env(extra: Mapping[str, str | None]) -> dict[str, str]:
    """The test's environment with ``extra`` applied (None removes a variable)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@dataclass(frozen=True)
class Exited:
    """A child interlockd that ended on its own: how, what it printed, how long it took."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


async def serve_until_exit(
    config: Path, *, env: Mapping[str, str | None] | None = None, within: float = 30
) -> Exited:
    """Run ``interlockd serve --bootstrap`` expecting it to exit by itself within ``within`` s."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "interlockd.cli",
        "serve",
        "--config",
        str(config),
        "--bootstrap",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(env or {}),
    )
    try:
        async with asyncio.timeout(within):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Exited(proc.returncode, out.decode(), err.decode(), time.monotonic() - started)


class DaemonProcess:
    """A child interlockd; ``start()`` waits for its listening line and keys.

    ``env`` changes the child's environment (None removes a variable);
    ``bootstrap=False`` serves without ``--bootstrap`` (a replica that must not
    set up the store); ``banner`` holds the stdout lines read up to the listening line.
    """

    def __init__(
        self,
        config: Path,
        env: Mapping[str, str | None] | None = None,
        *,
        bootstrap: bool = True,
    ) -> None:
        self.config = config
        self.env = dict(env or {})
        self.bootstrap = bootstrap
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.api_key = ""
        self.operator_key = ""
        self.banner: list[str] = []
        self.log_path = config.parent / "interlockd.log"

    async def start(self) -> DaemonProcess:
        # stderr (the logs) goes to a file: an undrained pipe could block the child.
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "interlockd.cli",
                "serve",
                "--config",
                str(self.config),
                *(["--bootstrap"] if self.bootstrap else []),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=_env(self.env),
            )
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"interlockd exited: {self.logs()[-2000:]}")
                self.banner.append(line.rstrip("\n"))
                if "INTERLOCK_API_KEY=" in line:
                    self.api_key = line.split("=", 1)[1].split()[0]
                elif "INTERLOCK_OPERATOR_KEY=" in line:
                    self.operator_key = line.split("=", 1)[1].split()[0]
                elif line.startswith("interlockd listening on"):
                    self.port = int(line.rsplit(":", 1)[1])
                    return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, within: float = 30) -> int:
        assert self.proc is not None
        async with asyncio.timeout(within):
            return await self.proc.wait()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address)

"""Run ``python -m benchmarks.compare`` against a daemon whose providers are loopback fakes.

For trying the comparison (and CI's smoke of it) where there are no provider
credentials, from the repository root::

    python -m benchmarks.compare.loopback [--budget SECONDS] -- \\
        --providers anthropic:claude-sonnet-4-6,google:gemini-3.1-flash,local:smollm2-135m \\
        --workload benchmarks/workloads/support.yaml

It starts two :class:`~benchmarks.compare.fake_provider.FakeProvider` servers in
this process and ``interlockd serve --bootstrap`` (a fresh data directory,
port 0) configured with three providers:

- ``anthropic``: an OpenAI-compatible provider on the first fake (first token
  after 300 ms, 100 tokens/s), default model ``claude-sonnet-4-6``;
- ``google``: the same on the second fake (150 ms, 200 tokens/s), default
  model ``gemini-3.1-flash``;
- ``local``: the daemon's real local model (SmolLM2-135M on this machine's CPU).

The fakes accept any model name. The daemon prices a run by provider name and
model, so the fakes' turns are billed at those models' list prices: the
ledger's figures are real, the latencies are the profiles above, not
Anthropic's or Google's. To measure the real providers, run the same
``python -m benchmarks.compare`` against a daemon configured with their credentials.

The comparison runs in this process with ``--address`` and ``--api-key`` of the
daemon and the arguments after ``--``; its exit code is returned. The daemon is
stopped on exit, error, Ctrl-C or when ``--budget`` (default 120 s) runs out (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.compare.command import amain as compare
from benchmarks.compare.fake_provider import FakeProvider, Profile

__all__ = ["PROFILES", "LoopbackDaemon", "loopback_daemon", "main"]

#: The fakes' pace, named by the provider they stand in for (made-up figures of
#: the right order, not measurements).
PROFILES: dict[str, tuple[str, Profile]] = {
    "anthropic": ("claude-sonnet-4-6", Profile(first_token_s=0.3, tokens_per_s=100)),
    "google": ("gemini-3.1-flash", Profile(first_token_s=0.15, tokens_per_s=200)),
}
_LISTENING = re.compile(r"listening on ([0-9.]+:\d+)")
_API_KEY = re.compile(r"export INTERLOCK_API_KEY=(\S+)")
_START_LIMIT = 60.0
_STOP_GRACE = 10.0


class DaemonFailed(Exception):
    """interlockd exited or did not start listening; the message has its output's tail."""


@dataclass(frozen=True)
class LoopbackDaemon:
    """Where the started daemon listens and the sandbox API key it printed."""

    address: str
    api_key: str


def _interlockd() -> list[str]:
    script = Path(sys.executable).parent / "interlockd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "interlockd.cli"]


def _config(workdir: Path, fakes: dict[str, str]) -> Path:
    lines = [
        'listen = "127.0.0.1:0"',
        'http_listen = "127.0.0.1:0"',
        f"data_dir = {json.dumps(str(workdir / 'data'))}",
        'default_provider = "local"',
        'log_level = "warning"',
        "shutdown_grace_seconds = 1.0",
        "",
    ]
    for name, base_url in fakes.items():
        lines += [
            f"[providers.{name}]",
            'kind = "openai"',
            f"base_url = {json.dumps(base_url)}",
            'api_key = "loopback"',
            f"default_model = {json.dumps(PROFILES[name][0])}",
            "",
        ]
    lines += ["[providers.local]", 'kind = "local"', ""]
    path = workdir / "interlockd.toml"
    path.write_text("\n".join(lines))
    return path


@contextlib.asynccontextmanager
async def loopback_daemon() -> AsyncIterator[LoopbackDaemon]:
    """The fakes and interlockd in front of them, for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="interlock-loopback-") as tmp:
        workdir = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            fakes = {
                name: (await stack.enter_async_context(FakeProvider(profile))).base_url
                for name, (_, profile) in PROFILES.items()
            }
            config = _config(workdir, fakes)
            # INTERLOCK_* variables would override the file; a proxy must not see loopback.
            env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
            env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
            errors = workdir / "interlockd.err"
            with errors.open("wb") as stderr:
                proc = await asyncio.create_subprocess_exec(
                    *_interlockd(),
                    "serve",
                    "--config",
                    str(config),
                    "--bootstrap",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                    env=env,
                    start_new_session=True,  # Ctrl-C reaches us only; we stop it
                )
            tail: deque[str] = deque(maxlen=40)
            try:
                daemon = await _started(proc, tail, errors)
                drain = asyncio.create_task(_drain(proc, tail))
                try:
                    yield daemon
                finally:
                    drain.cancel()
            finally:
                await _stop(proc)


async def _started(
    proc: asyncio.subprocess.Process, tail: deque[str], errors: Path
) -> LoopbackDaemon:
    """Read the daemon's stdout until it listens; its address and API key."""
    assert proc.stdout is not None
    api_key = ""
    try:
        async with asyncio.timeout(_START_LIMIT):
            while line := (await proc.stdout.readline()).decode(errors="replace"):
                tail.append(line.rstrip())
                if key := _API_KEY.search(line):
                    api_key = key.group(1)
                if (listening := _LISTENING.search(line)) and api_key:
                    return LoopbackDaemon(listening.group(1), api_key)
    except TimeoutError:
        pass
    raise _failure(tail, errors)


def _failure(tail: deque[str], errors: Path) -> DaemonFailed:
    output = "\n".join([*tail, *errors.read_text(errors="replace").splitlines()[-20:]])
    return DaemonFailed(f"interlockd did not start listening:\n{output}")


async def _drain(proc: asyncio.subprocess.Process, tail: deque[str]) -> None:
    # A full stdout pipe would block the daemon.
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        tail.append(line.decode(errors="replace").rstrip())


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        async with asyncio.timeout(_STOP_GRACE):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def amain(argv: Sequence[str]) -> int:
    """Parse ``[--budget S] -- COMPARE-ARGUMENTS...``, start everything, compare."""
    argv = list(argv)
    ours, command = ([], argv)
    if "--" in argv:
        split = argv.index("--")
        ours, command = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare.loopback",
        description="Run python -m benchmarks.compare against a daemon in front of loopback fakes.",
    )
    parser.add_argument("--budget", type=float, default=120.0, metavar="SECONDS")
    args = parser.parse_args(ours)
    if not command:
        parser.error("give the comparison's arguments after --, e.g. -- --providers ...")
    try:
        async with asyncio.timeout(args.budget), loopback_daemon() as daemon:
            print(f"loopback daemon on {daemon.address}", file=sys.stderr, flush=True)
            return await compare(
                ["--address", daemon.address, "--api-key", daemon.api_key, *command]
            )
    except TimeoutError:
        print(f"error: the budget of {args.budget:g} s ran out", file=sys.stderr)
        return 1
    except DaemonFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(amain(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

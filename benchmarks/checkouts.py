"""Same-run before/after of a change: interlockd from several checkouts, interleaved.

Each ``NAME=SERVER_DIR[:SYNC]`` starts ``interlockd serve`` with ``SERVER_DIR``
(a checkout's ``server/``, e.g. a ``git worktree`` at the commit before a
change) first on ``PYTHONPATH``, optionally with ``[store] sqlite_synchronous =
SYNC``, all in front of one zero-latency ``upstream.py``. After 100 warm-up
turns each, every round runs a block of sequential 1-delta turns on every
daemon (the first rotating) and reads the daemon's CPU (/proc) over its block;
it prints CPU per turn and time to the first delta (p50/p99) per daemon. The
machine is shared: compare daemons of one run, never runs.

    git worktree add --detach /tmp/before <commit>
    .venv/bin/python benchmarks/checkouts.py before=/tmp/before/server after=server
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc

from interlock.v1 import router_pb2, router_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput
from throughput import (
    Children,
    cpu_seconds,
    grpc_stream,
    model_for,
    start_interlockd,
    start_script,
    wait_for_port,
)


async def run(specs: list[str], rounds: int, block: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, Children(Path(tmp)) as children:
        workdir = Path(tmp)
        port = wait_for_port(start_script(children, "upstream", "upstream.py", 1))
        targets: list[dict[str, Any]] = []
        original = throughput.interlockd_config
        for spec in specs:
            name, _, rest = spec.partition("=")
            path, _, sync = rest.partition(":")
            home = workdir / name
            home.mkdir()
            os.environ["PYTHONPATH"] = path  # made absolute by main()

            def config(*args: Any, _sync: str = sync, **kwargs: Any) -> Path:
                written: Path = original(*args, **kwargs)
                if _sync:
                    text = written.read_text() + f'\n[store]\nsqlite_synchronous = "{_sync}"\n'
                    written.write_text(text)
                return written

            throughput.interlockd_config = config
            try:
                child, key = start_interlockd(children, home, port, False, name=name)
            finally:
                throughput.interlockd_config = original
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{wait_for_port(child)}")
            stub = router_pb2_grpc.AgentRouterStub(channel)
            metadata = (("authorization", f"Bearer {key}"),)
            targets.append(
                {"name": name, "pid": child.proc.pid, "stub": stub, "md": metadata, "cpu": 0.0}
            )
        request = router_pb2.RunRequest(end_user_id="u", message="hi", model=model_for(1))

        async def turn(target: dict[str, Any]) -> float:
            result = await grpc_stream(target["stub"], request, target["md"], 1, 10)
            if not result.ok or result.first_token is None:
                raise SystemExit(f"{target['name']}: {result.error}")
            return result.first_token

        for target in targets:
            target["ttfd"] = []
            for _ in range(100):
                await turn(target)
        for r in range(rounds):
            for target in targets[r % len(targets) :] + targets[: r % len(targets)]:
                before = cpu_seconds(target["pid"])
                for _ in range(block):
                    target["ttfd"].append(await turn(target))
                await asyncio.sleep(0.2)  # what a turn does after its finish counts too
                target["cpu"] += cpu_seconds(target["pid"]) - before
        turns = rounds * block
        for target in targets:
            ttfd = sorted(target["ttfd"])
            p50, p99 = ttfd[turns // 2] * 1e3, ttfd[int(turns * 0.99)] * 1e3
            cpu = target["cpu"] / turns * 1e3
            name = target["name"]
            print(f"{name:16s} CPU per turn {cpu:6.2f} ms   TTFD p50 {p50:6.2f}  p99 {p99:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("daemons", nargs="+", help="NAME=SERVER_DIR[:full|normal]")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=100, help="turns per daemon per round")
    args = parser.parse_args()
    specs = []
    for spec in args.daemons:
        name, _, rest = spec.partition("=")
        path, _, sync = rest.partition(":")
        specs.append(f"{name}={Path(path).resolve()}" + (f":{sync}" if sync else ""))
    asyncio.run(run(specs, args.rounds, args.block))


if __name__ == "__main__":
    main()

"""The installed `interlock` command against a real interlockd, as the README uses it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from interlock import SyncClient
from tests.conftest import RunningDaemon
from tests.fakes.openai import FakeOpenAI, Reply

INTERLOCK = str(Path(sys.executable).with_name("interlock"))


async def cli(daemon: RunningDaemon, *args: str, key: str = "") -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    env |= {
        "INTERLOCK_ADDRESS": daemon.address,
        "INTERLOCK_API_KEY": key or daemon.api_key,
        "INTERLOCK_OPERATOR_KEY": daemon.operator_key,
    }
    proc = await asyncio.create_subprocess_exec(
        INTERLOCK,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_run_streams_and_continues(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """`interlock run` prints the answer, then `--session` continues the same conversation."""
    fake_a.enqueue(Reply().text("Hello ", "there.").usage(prompt=5, completion=2))
    code, out, err = await cli(daemon, "run", "Hi!")
    assert code == 0, err
    assert out.strip() == "Hello there."
    sessions = [w for w in err.split() if w.startswith("conv_")]
    assert sessions, err
    fake_a.enqueue(Reply().text("Again."))
    code, out, err = await cli(daemon, "run", "--session", sessions[0], "More")
    assert code == 0, err
    assert [m["role"] for m in fake_a.requests[-1].body["messages"]] == [
        "user",
        "assistant",
        "user",
    ]


async def test_run_json_is_one_event_per_line(daemon: RunningDaemon) -> None:
    """`interlock run --json` prints one JSON AgentEvent per line and nothing else."""
    code, out, err = await cli(daemon, "run", "--json", "Hi")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert "run_started" in events[0]
    assert "finish" in events[-1]
    # uint64 fields are JSON strings in the protobuf JSON mapping.
    assert [e["seq"] for e in events] == [str(i) for i in range(1, len(events) + 1)]


async def test_admin_and_conversations_commands(daemon: RunningDaemon) -> None:
    """Sandbox and key commands take the operator key; conversations commands the new key."""
    code, out, err = await cli(daemon, "sandbox", "create", "acme")
    assert code == 0, err
    sandbox_id = next(w for w in out.split() if w.startswith("sbx_"))
    code, out, err = await cli(daemon, "keys", "create", "--sandbox", sandbox_id)
    assert code == 0, err
    key = out.strip()
    assert key.startswith("ilk_")
    code, _, err = await cli(daemon, "run", "--end-user", "eu", "Remember me", key=key)
    assert code == 0, err
    code, out, err = await cli(daemon, "conversations", "list", "--end-user", "eu", key=key)
    assert code == 0, err
    session = next(w for w in out.split() if w.startswith("conv_"))
    code, out, err = await cli(
        daemon, "conversations", "show", session, "--end-user", "eu", key=key
    )
    assert code == 0, err
    assert "Remember me" in out


async def test_errors_are_one_line_and_nonzero(daemon: RunningDaemon) -> None:
    """A refused call prints one `error: CODE: details` line and exits 1."""
    code, out, err = await cli(daemon, "run", "--provider", "nope", "Hi")
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: INVALID_ARGUMENT: provider:")


async def test_compute_pause_unpause_and_list(daemon: RunningDaemon) -> None:
    """`interlock compute pause` refuses the runs it covers, `pauses` lists it, `unpause`
    admits them again; the sync and async clients see the same."""
    code, out, _ = await cli(
        daemon, "compute", "pause", "agent_provider", "fake", "--reason", "drill"
    )
    assert code == 0
    assert out.startswith("paused agent_provider fake (drill)")
    code, out, _ = await cli(daemon, "run", "hi", "--provider", "fake")
    assert code != 0
    code, out, _ = await cli(daemon, "compute", "pauses")
    assert out == "agent_provider fake (drill)\n"
    code, out, _ = await cli(daemon, "compute", "unpause", "agent_provider", "fake")
    assert (code, out) == (0, "cleared\n")
    code, out, _ = await cli(daemon, "compute", "pauses", "--json")
    assert (code, out) == (0, "")

    def sync_side() -> list[str]:
        with SyncClient(daemon.address, operator_key=daemon.operator_key) as client:
            client.compute.pause("global", reason="sync")
            listed = [p.reason for p in client.compute.pauses()]
            assert client.compute.unpause("global")
            return listed

    assert await asyncio.to_thread(sync_side) == ["sync"]


async def test_agents_put_list_and_run_by_slug(daemon: RunningDaemon, fake_b: FakeOpenAI) -> None:
    """`interlock agents put` saves an agent, `list` shows it, `run --agent` runs it."""
    code, out, _ = await cli(
        daemon, "agents", "put", "helpdesk", "--provider", "fake_b", "--system", "Be brief."
    )
    assert (code, out) == (0, "saved agent helpdesk\n")
    code, out, _ = await cli(daemon, "agents", "list")
    assert out.startswith("helpdesk\tfake_b")
    fake_b.enqueue(Reply().text("Hi."))
    code, out, _ = await cli(daemon, "run", "hello", "--agent", "helpdesk")
    assert code == 0
    assert "Hi." in out
    assert fake_b.requests[-1].body["messages"][0]["content"] == "Be brief."
    code, out, _ = await cli(daemon, "agents", "delete", "helpdesk")
    assert (code, out) == (0, "deleted agent helpdesk\n")

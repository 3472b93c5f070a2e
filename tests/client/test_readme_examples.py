"""The Python client README's examples: the files it shows, run against a real interlockd.

``clients/python/README.md`` shows ``examples/quickstart_async.py`` as its
first Python block and names ``examples/quickstart.py``; both run here as a
user runs them (a subprocess with only ``INTERLOCK_ADDRESS`` and
``INTERLOCK_API_KEY`` set) against a daemon in front of the scripted
OpenAI-compatible fake, which is the daemon's default provider as ``local`` is
under ``make serve``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningDaemon
from tests.fakes.openai import FakeOpenAI, Reply

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
README = CLIENT / "README.md"
EXAMPLES = CLIENT / "examples"


def python_blocks() -> list[str]:
    """The contents of the README's ```python blocks, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


async def run_example(path: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run an example file as a script; its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(path),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def user_env(address: str, api_key: str) -> dict[str, str]:
    """This process's environment with only the two variables make serve's banner exports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    return env | {"INTERLOCK_ADDRESS": address, "INTERLOCK_API_KEY": api_key}


def test_readme_first_block_is_the_async_quickstart() -> None:
    """The README's first Python block is examples/quickstart_async.py as it is."""
    blocks = python_blocks()
    assert blocks, "clients/python/README.md has no ```python block"
    assert blocks[0] == (EXAMPLES / "quickstart_async.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("example", ["quickstart_async.py", "quickstart.py"])
async def test_quickstart_streams_then_continues_the_conversation(
    example: str, daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A quickstart prints both answers, and its second turn carries the first one's history."""
    fake_a.enqueue(Reply().text("It shipped ", "yesterday."), Reply().text("You're welcome."))
    code, out, err = await run_example(EXAMPLES / example, user_env(daemon.address, daemon.api_key))
    assert code == 0, err
    assert out == "It shipped yesterday.\nYou're welcome.\n"
    roles = [m["role"] for m in fake_a.requests[-1].body["messages"] if m["role"] != "system"]
    assert roles == ["user", "assistant", "user"]


@pytest.mark.parametrize("example", ["quickstart_async.py", "quickstart.py"])
async def test_quickstart_reports_a_wrong_key(example: str, daemon: RunningDaemon) -> None:
    """A quickstart with a key the daemon does not know exits 1 with one UNAUTHENTICATED line."""
    code, out, err = await run_example(EXAMPLES / example, user_env(daemon.address, "ilk_wrong"))
    assert (code, out) == (1, "")
    assert err.startswith("error: UNAUTHENTICATED: ")
    assert err.count("\n") == 1

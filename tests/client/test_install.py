"""Installing the Python client into a fresh project exactly as its README says.

``pip install /path/to/interlock/clients/python`` into a new virtualenv that has
nothing else, then the README's quickstart run with that virtualenv's Python
against a real interlockd, and the ``interlock`` command it installs. Also pins
that ``clients/python/lowest.txt``, the versions ``make test-python-lowest``
tests, are the floors the package declares.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tomllib
from pathlib import Path

import pytest

from tests.client.test_readme_examples import CLIENT, EXAMPLES, README, user_env
from tests.conftest import RunningDaemon
from tests.fakes.openai import FakeOpenAI, Reply

# A virtualenv and a resolver run of grpcio, protobuf and googleapis-common-protos.
pytestmark = pytest.mark.timeout(600)


async def run(*argv: str, cwd: Path | None = None) -> str:
    """Run a command to completion; its output, or a failure showing it."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(540):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")[-4000:]
    return out.decode()


def test_the_readme_says_to_install_from_the_path() -> None:
    """The install command tested below is the one the README gives another project."""
    assert "pip install /path/to/interlock/clients/python" in README.read_text(encoding="utf-8")


async def test_pip_install_from_the_path_into_a_fresh_venv(
    tmp_path: Path, daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A new project's virtualenv gets the client and its dependencies from the path, and
    the quickstart and the interlock command work from it."""
    project = tmp_path / "project"
    project.mkdir()
    await run(sys.executable, "-m", "venv", str(project / ".venv"))
    python = project / ".venv" / "bin" / "python"
    await run(str(python), "-m", "pip", "install", "--quiet", str(CLIENT), cwd=project)

    # Imported from the new venv, not from this checkout.
    where = await run(str(python), "-c", "import interlock; print(interlock.__file__)", cwd=project)
    assert where.strip().startswith(str(project / ".venv")), where

    fake_a.enqueue(Reply().text("It shipped ", "yesterday."), Reply().text("You're welcome."))
    env = user_env(daemon.address, daemon.api_key)
    proc = await asyncio.create_subprocess_exec(
        str(python),
        str(EXAMPLES / "quickstart_async.py"),
        cwd=project,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode() == "It shipped yesterday.\nYou're welcome.\n"
    assert "usage: interlock" in await run(str(project / ".venv" / "bin" / "interlock"), "--help")


def test_lowest_txt_holds_the_declared_floors() -> None:
    """Each dependency of clients/python/pyproject.toml has its lower bound, exactly, in
    lowest.txt, so the lowest-versions run tests what the package allows."""
    declared = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for requirement in declared:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([^,]+),<.+", requirement)
        assert match, f"{requirement!r} is not a range with a floor and a ceiling"
        floors[match[1]] = match[2]
    lines = (CLIENT / "lowest.txt").read_text().splitlines()
    pinned = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert pinned == floors

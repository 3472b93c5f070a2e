"""The Python client README's walk through every service: its example files, run as a user
runs them against a real interlockd.

Each file in ``clients/python/examples/`` is a script that reads ``make serve``'s
exports (``INTERLOCK_ADDRESS``, ``INTERLOCK_API_KEY``, ``INTERLOCK_OPERATOR_KEY``)
and nothing else; here each runs in a subprocess against a daemon in front of the
scripted OpenAI-compatible fake, and the README must show every one of them verbatim.
"""

from __future__ import annotations

import re

import pytest

from tests.client.test_readme_examples import EXAMPLES, README, run_example, user_env
from tests.conftest import RunningDaemon
from tests.fakes.openai import FakeOpenAI

#: The walk's examples and lines each must print (the fake answers every turn).
WALK: dict[str, list[str]] = {
    "sandboxes.py": [
        "quotas: 20",
        "keys: ['backend']",
        "secrets: ['openai_api_key']",
        "revoked: True",
        "sandboxes: ['default', 'example-tenant']",
    ],
    "conversations.py": [
        "conversation: True",
        "entries: 2 Remember: my order is #42.",
        "other user: NOT_FOUND",
    ],
    "agents.py": [
        "agents: ['support']",
        "system: You answer questions about orders, briefly.",
        "ran on: fake",
        "refused: ['agent.slug']",
    ],
    "ledger.py": ["entry: True u-ledger", "end user: u-ledger 1 runs"],
    "compute.py": [
        "pauses: [('u-abuser', 'investigating')]",
        "cleared: True",
        "placed on: no compute",
    ],
    "integrations.py": ["connected: []"],
    "cancel_and_retry.py": ["first words: True", "replayed: True True"],
}


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_every_example_is_in_the_readme() -> None:
    """Each example file of the walk, and no other, appears verbatim as a README block."""
    files = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("quickstart"))
    assert files == sorted(WALK)
    blocks = readme_blocks()
    for name in WALK:
        assert (EXAMPLES / name).read_text(encoding="utf-8") in blocks, name


@pytest.mark.parametrize("example", sorted(WALK))
async def test_the_example_runs_against_a_daemon(
    example: str, daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """The example exits 0 and prints what each call it walks returned."""
    env = user_env(daemon.address, daemon.api_key) | {"INTERLOCK_OPERATOR_KEY": daemon.operator_key}
    args = ["fake"] if example == "agents.py" else []
    code, out, err = await run_example(EXAMPLES / example, env, *args)
    assert code == 0, err
    lines = out.splitlines()
    for expected in WALK[example]:
        assert any(line.startswith(expected) for line in lines), (expected, out)

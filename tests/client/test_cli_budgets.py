"""The CLI's spend budgets against a real daemon: `sandbox set-quotas` sets them and
`interlock usage` shows each beside what is reserved and spent."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from interlock.cli import amain
from tests.fakes.openai import FakeOpenAI, Reply

if TYPE_CHECKING:
    from tests.conftest import RunningDaemon


async def _cli(daemon: RunningDaemon, capsys: pytest.CaptureFixture[str], *argv: str):
    connection = ["--address", daemon.address, "--api-key", daemon.api_key]
    connection += ["--operator-key", daemon.operator_key]
    code = await amain([*connection, *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_usage_shows_budgets_beside_the_spend(
    daemon: RunningDaemon, fake_a: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    """Budgets set with set-quotas appear in `interlock usage` with their limit, what is
    reserved and spent, what is left and when they reset; per end user with --user."""
    code, _, _ = await _cli(
        daemon,
        capsys,
        "sandbox",
        "set-quotas",
        daemon.sandbox_id,
        "--usd-per-day",
        "2.5",
        "--end-user-usd-per-month",
        "4",
    )
    assert code == 0
    fake_a.enqueue(Reply().text("hi"))
    await daemon.run("hello")
    code, out, _ = await _cli(daemon, capsys, "usage", "--by", "day", "--user", "u-1")
    assert code == 0
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("BUDGET"))
    assert lines[header].split() == [
        "BUDGET", "PERIOD", "LIMIT", "$", "RESERVED", "$", "SPENT", "$", "LEFT", "$", "RESETS"
    ]  # fmt: skip
    rows = [line.split() for line in lines[header + 1 :]]
    assert rows[0][:6] == ["sandbox", "day", "2.5000", "0.0000", "0.0000", "2.5000"]
    assert rows[1][:3] == ["sandbox", "month", "-"]
    assert rows[3][:7] == ["end_user", "u-1", "month", "4.0000", "0.0000", "0.0000", "4.0000"]


async def test_a_negative_budget_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """set-quotas refuses a negative amount before any call (exit 2)."""
    assert await amain(["sandbox", "set-quotas", "sbx_1", "--usd-per-day", "-1"]) == 2
    assert "must be 0 or more" in capsys.readouterr().err

"""`python -m benchmarks.compare` against a real interlockd in front of scripted fake providers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.compare.command import amain
from benchmarks.compare.workload import WorkloadError, load_workload
from interlock import Client
from tests.conftest import DaemonFactory, RunningDaemon
from tests.fakes.openai import FakeOpenAI, Reply

REPO = Path(__file__).resolve().parents[2]

WORKLOAD = {
    "name": "support-test",
    "system": "You are a support agent.",
    "tools": ["search_conversations"],
    "users": 2,
    "turns": [
        {"message": "Hi, my order 4412 arrived broken."},
        {
            "message": "Which order number did I give you earlier?",
            "expect_tool": "search_conversations",
            "max_output_tokens": 32,
        },
    ],
}


def _workload(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "workload.json"
    path.write_text(json.dumps({**WORKLOAD, **changes}))
    return path


async def _compare(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any], str]:
    """Run the command in-process with --json; its exit code, the report and stderr."""
    capsys.readouterr()
    connection = ["--address", daemon.address, "--api-key", daemon.api_key]
    code = await amain([*connection, "--json", *args])
    out, err = capsys.readouterr()
    # The in-process daemon logs to stdout too; the report is the one JSON line.
    (line,) = [line for line in out.splitlines() if line.startswith("{")]
    return code, json.loads(line), err


def _answer(text: str) -> Reply:
    return Reply().text(text).usage(prompt=20, completion=3)


async def test_compare_reports_each_provider_from_its_events_and_the_ledger(
    daemon: RunningDaemon,
    fake_a: FakeOpenAI,
    fake_b: FakeOpenAI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Per provider: turns, errors by code and tool-call success as the runs went, every run
    labelled with the cohort, the cost read from the ledger; --report writes the same data."""
    # One conversation at a time, so each fake answers its requests in this order:
    # the warm-up, then per user turn 1, turn 2's tool call and turn 2's answer.
    fake_a.enqueue(_answer("Warm."))
    for _ in range(2):
        fake_a.enqueue(
            _answer("Sorry to hear that."),
            Reply().tool_call("search_conversations", '{"query": "order"}'),
            _answer("It was 4412."),
        )
    # fake_b calls the tool without its required argument (a failed tool call),
    # and drops user 2's first turn mid-answer.
    fake_b.enqueue(
        _answer("Warm."),
        _answer("Sorry."),
        Reply().tool_call("search_conversations", "{}"),
        _answer("I could not find it."),
        Reply().text("Sor").disconnect(),
        Reply().tool_call("search_conversations", "{}"),
        _answer("I could not find it."),
    )
    report_dir = tmp_path / "report"
    code, report, err = await _compare(
        daemon,
        capsys,
        "--providers",
        "fake:fake-model,fake_b:fake-model-b",
        "--workload",
        str(_workload(tmp_path)),
        "--cohort",
        "exp-42",
        "--report",
        str(report_dir),
    )

    assert code == 1, err  # a turn failed
    a, b = report["providers"]
    assert (a["target"], b["target"]) == ("fake:fake-model", "fake_b:fake-model-b")
    assert (a["turns_sent"], a["turns_completed"], a["errors"]) == (4, 4, {})
    assert (a["tool_calls"], a["tool_results_ok"], a["tool_call_success"]) == (2, 2, 1.0)
    assert (a["expected_tool_turns"], a["expected_tool_called"]) == (2, 2)
    assert (b["turns_sent"], b["turns_completed"], b["errors"]) == (4, 3, {"UNAVAILABLE": 1})
    assert (b["tool_calls"], b["tool_results_ok"], b["tool_call_success"]) == (2, 0, 0.0)
    assert (b["expected_tool_turns"], b["expected_tool_called"]) == (2, 2)
    for summary in (a, b):
        assert summary["first_event_p50_ms"] > 0
        assert summary["first_event_p95_ms"] >= summary["first_event_p50_ms"]
        assert summary["output_tokens_per_s"] > 0
    assert len(fake_a.requests) == 7
    assert len(fake_b.requests) == 7
    # Each user's turns share one conversation; users and providers never share one.
    sessions = {(t["target"], t["user"]): set() for t in report["turns"]}
    for t in report["turns"]:
        sessions[(t["target"], t["user"])].add(t["session_id"])
    assert all(len(s) == 1 for s in sessions.values())
    assert len(set().union(*sessions.values())) == 4

    # Every run made (a warm-up per provider, then 4 turns) carries the labels.
    measured = {t["run_id"]: t for t in report["turns"]}
    warmups = {t["run_id"]: t for t in report["warmup_turns"]}
    assert len(measured) == 8
    assert len(warmups) == 2
    for run_id, turn in (measured | warmups).items():
        run = await daemon.daemon.store.get_run(daemon.sandbox_id, run_id)
        assert run.labels == {
            "cohort": "exp-42",
            "workload": "support-test",
            "provider": run.provider,
            "model": run.model,
            "user": turn["user"],
            "turn": str(turn["turn"]),
            "phase": "warmup" if run_id in warmups else "measured",
        }
        assert run.end_user_id == turn["end_user_id"]

    # The cost is the ledger's, over exactly the provider's measured runs.
    async with Client(daemon.address, daemon.api_key) as client:
        by_run = await client.ledger.summarize_all("run")
    for summary in (a, b):
        runs = {r for r, t in measured.items() if t["target"] == summary["target"]}
        rows = [s for s in by_run.summaries if s.key in runs]
        assert summary["ledger"]["runs"] == len(rows)
        assert summary["ledger"]["entries"] == sum(s.entry_count for s in rows)
        assert summary["ledger"]["total_usd"] == pytest.approx(sum(s.total_cost_usd for s in rows))
        assert summary["cost_per_turn_usd"] == pytest.approx(
            summary["ledger"]["total_usd"] / summary["turns_completed"]
        )

    assert json.loads((report_dir / "report.json").read_text()) == report
    markdown = (report_dir / "report.md").read_text()
    assert "cohort `exp-42`" in markdown
    assert "| fake_b:fake-model-b | 3/4 | UNAVAILABLE 1 |" in markdown


async def test_cost_per_turn_is_the_ledgers_price_of_the_runs(
    start_daemon: DaemonFactory,
    fake_a: FakeOpenAI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A provider the daemon prices (openai/gpt-4o-mini: $0.15 in, $0.60 out per 1M tokens)
    costs per completed turn what the ledger billed for its runs."""
    daemon = await start_daemon(
        default_provider="openai",
        providers={
            "openai": {
                "kind": "openai",
                "base_url": fake_a.base_url,
                "default_model": "gpt-4o-mini",
                "api_key": "sk-test",
            }
        },
    )
    fake_a.enqueue(*(Reply().text("Done.").usage(prompt=1000, completion=500) for _ in range(2)))
    code, report, err = await _compare(
        daemon,
        capsys,
        "--providers",
        "openai",
        "--workload",
        str(_workload(tmp_path, turns=["Hello"], tools=[])),
        "--warmup",
        "0",
    )

    assert code == 0, err
    (summary,) = report["providers"]
    assert summary["turns_completed"] == 2
    per_turn = (1000 * 0.15 + 500 * 0.60) / 1_000_000
    assert summary["ledger"]["runs"] == 2
    assert summary["ledger"]["token_usd"] == pytest.approx(2 * per_turn)
    assert summary["cost_per_turn_usd"] == pytest.approx(per_turn)
    assert report["cohort"].startswith("support-test-")


def test_the_support_workload_parses() -> None:
    """benchmarks/workloads/support.yaml, the README's workload, is a valid workload."""
    pytest.importorskip("yaml")
    workload = load_workload(REPO / "benchmarks" / "workloads" / "support.yaml")
    assert workload.name == "support"
    assert workload.tools == ("search_conversations",)
    assert any(turn.expect_tool for turn in workload.turns)


async def test_an_invalid_workload_is_a_usage_error(
    daemon: RunningDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A workload naming an expected tool outside its allow-list exits 2, naming the field."""
    path = _workload(tmp_path, turns=[{"message": "Hi", "expect_tool": "nope"}])
    connection = ["--address", daemon.address, "--api-key", daemon.api_key]
    code = await amain([*connection, "--providers", "fake", "--workload", str(path)])
    assert code == 2
    assert "turns[0].expect_tool" in capsys.readouterr().err
    with pytest.raises(WorkloadError, match="users must be an integer"):
        load_workload(_workload(tmp_path, users=0))

"""Run one workload on several providers through a daemon, and measure each.

First a warm-up of every target at once (``warmup`` first turns each, not
reported: a cold model server or connection pool would otherwise dominate the
first figures). Then for every target (a provider and a model), one after
another: the workload's conversation held by ``users`` end users, at most
``concurrency`` of them at once, each sending the turns in order in one
conversation. Every run carries labels saying what it was (``cohort``,
``provider``, ``model``, ``workload``, ``user``, ``turn``, ``phase``), so the
ledger and the store can be read by cohort afterwards.

Each target gets end users of its own (``bench-<token>-p<k>-u<i>``, reported
by the ``user`` label ``u<i>``): what one provider's conversations stored is
never found by another's ``search_conversations``.

Figures per target (:class:`ProviderSummary`), all from what the API returns:

- time to first event: from the call to its first event, p50/p95 over every
  turn that produced one (interlockd sends ``run_started`` with the provider's
  first event, so this is also the time to the first token or tool call);
- output tokens/s: the ``Finish`` usage's output tokens of the completed turns
  over the time from their first event to their end, summed over turns;
- tool-call success: tool results without an error over tool calls;
- errors by code: an ``Error`` event's code, or the status of a call refused
  before its first event;
- cost: the ledger's token and compute cost of the runs made, failed ones
  included (``SummarizeUsage`` by run), per completed turn. It is read once,
  after the last turn: the daemon writes a run's entries as it closes the run.

This module never prints; :mod:`benchmarks.compare.report` renders the result.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from benchmarks.compare.workload import Turn, Workload
from interlock.client import Client
from interlock.errors import InterlockError

__all__ = [
    "Comparison",
    "LedgerCost",
    "ProviderSummary",
    "Target",
    "TurnRecord",
    "compare",
    "parse_targets",
    "percentile",
]

#: How far before the benchmark's start the ledger is read: the daemon's clock
#: may differ from ours (entries are matched by run id, so a wider window only
#: reads more).
LEDGER_CLOCK_MARGIN = timedelta(minutes=10)
_LEDGER_PAGE = 1000

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """A provider configured on the daemon and the model to run on it ("" = its default)."""

    provider: str
    model: str = ""

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}" if self.model else self.provider


def parse_targets(text: str) -> list[Target]:
    """``anthropic:claude-sonnet-4-6,local`` as targets (the model after the first ':').

    ValueError for an empty list, an empty provider or a target given twice.
    """
    targets: list[Target] = []
    for part in text.split(","):
        provider, _, model = part.strip().partition(":")
        if not provider:
            raise ValueError(f"expected PROVIDER[:MODEL], got {part.strip()!r}")
        target = Target(provider, model)
        if target in targets:
            raise ValueError(f"{target} is given twice")
        targets.append(target)
    return targets


@dataclass
class TurnRecord:
    """What one run did, as its events (or its refusal) said."""

    target: str
    #: The ``user`` label (u1, u2, ...; "warmup").
    user: str
    #: 1-based position in the workload; 0 for a warm-up turn.
    turn: int
    end_user_id: str = ""
    run_id: str = ""
    session_id: str = ""
    #: Seconds from the call to its first event; None when none came.
    first_event_s: float | None = None
    #: Seconds from the first event to the end of the stream; None when none came.
    stream_s: float | None = None
    completed: bool = False
    output_tokens: int = 0
    tool_calls: int = 0
    tool_results_ok: int = 0
    tools_called: list[str] = field(default_factory=list)
    expect_tool: str = ""
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True)
class LedgerCost:
    """The ledger's sums over a target's runs."""

    runs: int = 0
    entries: int = 0
    token_usd: float = 0.0
    compute_usd: float = 0.0

    @property
    def total_usd(self) -> float:
        return self.token_usd + self.compute_usd


@dataclass
class ProviderSummary:
    """The figures of one target over its measured turns (warm-up excluded)."""

    target: str
    provider: str
    model: str
    turns_sent: int
    turns_completed: int
    errors: dict[str, int]
    first_event_p50_ms: float | None
    first_event_p95_ms: float | None
    output_tokens: int
    output_tokens_per_s: float | None
    tool_calls: int
    tool_results_ok: int
    #: tool_results_ok / tool_calls; None when no tool was called.
    tool_call_success: float | None
    expected_tool_turns: int
    expected_tool_called: int
    ledger: LedgerCost
    #: The ledger's total over the runs made ÷ turns completed; None when none completed.
    cost_per_turn_usd: float | None
    seconds: float
    #: One error message per code, the first seen, to say what went wrong.
    error_examples: dict[str, str] = field(default_factory=dict)


@dataclass
class Comparison:
    """Everything one ``bench compare`` measured."""

    cohort: str
    workload: Workload
    users: int
    concurrency: int
    warmup: int
    started: datetime
    seconds: float
    summaries: list[ProviderSummary]
    turns: list[TurnRecord]
    #: The warm-up turns, in no figure (kept so that every run made is on record).
    warmup_turns: list[TurnRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every measured turn completed."""
        return all(s.turns_completed == s.turns_sent for s in self.summaries)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) by linear interpolation between ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def compare(
    client: Client,
    workload: Workload,
    targets: Sequence[Target],
    *,
    cohort: str,
    users: int | None = None,
    concurrency: int = 1,
    warmup: int = 1,
    turn_timeout: float | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Run ``workload`` on every target in turn and read what it cost from the ledger."""
    users = workload.users if users is None else users
    if users < 1 or concurrency < 1 or warmup < 0:
        raise ValueError("users and concurrency must be 1 or more, warmup 0 or more")
    say = progress or (lambda _line: None)
    token = secrets.token_hex(3)
    plans = [
        _Plan(
            target,
            prefix=f"bench-{token}-p{index}",
            labels={
                "cohort": cohort,
                "provider": target.provider,
                "model": target.model,
                "workload": workload.name,
            },
        )
        for index, target in enumerate(targets, start=1)
    ]
    started = datetime.now(UTC)
    began = time.perf_counter()
    if warmup:
        # Every target at once: a cold start (a local model server loading)
        # overlaps the others' instead of adding to the benchmark's time.
        say(f"warming up: {warmup} turn(s) per provider")
        async with asyncio.TaskGroup() as group:
            warming = [
                group.create_task(_warm_up(client, workload, plan, warmup, turn_timeout, say))
                for plan in plans
            ]
        warmups = [record for task in warming for record in task.result()]
    else:
        warmups = []
    measured: list[TurnRecord] = []
    durations: dict[str, float] = {}
    for plan in plans:
        say(f"{plan.target}: {users} user(s) x {len(workload.turns)} turn(s)")
        target_began = time.perf_counter()
        gate = asyncio.Semaphore(concurrency)

        async def conversation(
            i: int, plan: _Plan = plan, gate: asyncio.Semaphore = gate
        ) -> list[TurnRecord]:
            async with gate:
                return await _conversation(
                    client,
                    workload,
                    plan.target,
                    user=f"u{i}",
                    end_user_id=f"{plan.prefix}-u{i}",
                    labels={**plan.labels, "user": f"u{i}", "phase": "measured"},
                    turn_timeout=turn_timeout,
                )

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(conversation(i)) for i in range(1, users + 1)]
        name = str(plan.target)
        durations[name] = time.perf_counter() - target_began
        records = [r for task in tasks for r in task.result()]
        measured.extend(records)
        done = sum(r.completed for r in records)
        say(f"{name}: {done}/{len(records)} turns completed in {durations[name]:.1f} s")
    costs = await _ledger_costs(client, measured, since=started - LEDGER_CLOCK_MARGIN)
    summaries = [
        _summarize(
            target,
            [r for r in measured if r.target == str(target)],
            costs.get(str(target), LedgerCost()),
            durations[str(target)],
        )
        for target in targets
    ]
    return Comparison(
        cohort=cohort,
        workload=workload,
        users=users,
        concurrency=concurrency,
        warmup=warmup,
        started=started,
        seconds=time.perf_counter() - began,
        summaries=summaries,
        turns=measured,
        warmup_turns=warmups,
    )


@dataclass(frozen=True)
class _Plan:
    target: Target
    #: The start of its end user ids.
    prefix: str
    #: The labels every run of the target carries.
    labels: dict[str, str]


async def _warm_up(
    client: Client,
    workload: Workload,
    plan: _Plan,
    turns: int,
    turn_timeout: float | None,
    say: Progress,
) -> list[TurnRecord]:
    """``turns`` first turns of the workload on the target, each in a new conversation."""
    records = []
    for n in range(1, turns + 1):
        record = await _run_turn(
            client,
            workload,
            plan.target,
            workload.turns[0],
            number=0,
            user="warmup",
            end_user_id=f"{plan.prefix}-warmup{n}",
            session_id="",
            labels={**plan.labels, "user": "warmup", "turn": "0", "phase": "warmup"},
            turn_timeout=turn_timeout,
        )
        if not record.completed:
            say(f"{plan.target}: warm-up failed: {record.error_code}: {record.error_message}")
        records.append(record)
    return records


async def _conversation(
    client: Client,
    workload: Workload,
    target: Target,
    *,
    user: str,
    end_user_id: str,
    labels: Mapping[str, str],
    turn_timeout: float | None,
) -> list[TurnRecord]:
    """One end user's turns in order, in one conversation (a new one if the first failed)."""
    records: list[TurnRecord] = []
    session_id = ""
    for number, turn in enumerate(workload.turns, start=1):
        record = await _run_turn(
            client,
            workload,
            target,
            turn,
            number=number,
            user=user,
            end_user_id=end_user_id,
            session_id=session_id,
            labels={**labels, "turn": str(number)},
            turn_timeout=turn_timeout,
        )
        session_id = session_id or record.session_id
        records.append(record)
    return records


async def _run_turn(
    client: Client,
    workload: Workload,
    target: Target,
    turn: Turn,
    *,
    number: int,
    user: str,
    end_user_id: str,
    session_id: str,
    labels: Mapping[str, str],
    turn_timeout: float | None,
) -> TurnRecord:
    """Run one turn to its end and record what its events said."""
    record = TurnRecord(
        target=str(target),
        user=user,
        turn=number,
        end_user_id=end_user_id,
        expect_tool=turn.expect_tool,
    )
    stream = client.run(
        turn.message,
        end_user_id=end_user_id,
        session_id=session_id,
        provider=target.provider,
        model=target.model,
        system=workload.system,
        tools=workload.tools,
        labels=labels,
        max_output_tokens=turn.max_output_tokens,
        timeout=turn_timeout,
    )
    start = time.perf_counter()
    first: float | None = None
    try:
        async with stream:
            async for event in stream:
                now = time.perf_counter()
                if first is None:
                    first = now
                    record.first_event_s = now - start
                record.run_id = record.run_id or event.run_id
                kind = event.WhichOneof("event")
                if kind == "run_started":
                    record.session_id = event.run_started.session_id
                elif kind == "tool_call":
                    record.tool_calls += 1
                    record.tools_called.append(event.tool_call.name)
                elif kind == "tool_result":
                    record.tool_results_ok += not event.tool_result.error
                elif kind == "finish":
                    record.completed = True
                    record.output_tokens = event.finish.usage.output_tokens
                    record.session_id = record.session_id or event.finish.session_id
                elif kind == "error":
                    record.error_code = event.error.code or "UNKNOWN"
                    record.error_message = event.error.message
    except InterlockError as exc:
        record.completed = False
        record.error_code = exc.code.name
        record.error_message = exc.details
    if first is not None:
        record.stream_s = time.perf_counter() - first
    if not record.completed and not record.error_code:
        record.error_code = "INCOMPLETE"
        record.error_message = "the stream ended without a finish or error event"
    return record


async def _ledger_costs(
    client: Client, records: Iterable[TurnRecord], *, since: datetime
) -> dict[str, LedgerCost]:
    """The ledger's sums per target over the runs of ``records``.

    One paged ``SummarizeUsage`` by run over the time the benchmark ran,
    matched by run id: it adds token and compute entries alike (a filter by
    provider would miss compute entries, which name the compute provider).
    """
    target_of = {r.run_id: r.target for r in records if r.run_id}
    if not target_of:
        return {}
    summary = await client.ledger.summarize_all("run", since=since, page_size=_LEDGER_PAGE)
    sums: dict[str, list[float]] = {}
    for row in summary.summaries:
        target = target_of.get(row.key)
        if target is None:
            continue
        acc = sums.setdefault(target, [0, 0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += row.entry_count
        acc[2] += row.token_cost_usd
        acc[3] += row.compute_cost_usd
    return {
        target: LedgerCost(
            runs=int(acc[0]), entries=int(acc[1]), token_usd=acc[2], compute_usd=acc[3]
        )
        for target, acc in sums.items()
    }


def _summarize(
    target: Target, records: list[TurnRecord], cost: LedgerCost, seconds: float
) -> ProviderSummary:
    completed = [r for r in records if r.completed]
    firsts = [r.first_event_s * 1000 for r in records if r.first_event_s is not None]
    streamed = [r for r in completed if r.stream_s]
    stream_seconds = sum(r.stream_s or 0.0 for r in streamed)
    output = sum(r.output_tokens for r in streamed)
    tool_calls = sum(r.tool_calls for r in records)
    tool_ok = sum(r.tool_results_ok for r in records)
    expected = [r for r in records if r.expect_tool]
    errors = Counter(r.error_code for r in records if r.error_code)
    examples: dict[str, str] = {}
    for r in records:
        if r.error_code:
            examples.setdefault(r.error_code, r.error_message)
    return ProviderSummary(
        target=str(target),
        provider=target.provider,
        model=target.model,
        turns_sent=len(records),
        turns_completed=len(completed),
        errors=dict(sorted(errors.items())),
        first_event_p50_ms=percentile(firsts, 0.50),
        first_event_p95_ms=percentile(firsts, 0.95),
        output_tokens=sum(r.output_tokens for r in completed),
        output_tokens_per_s=output / stream_seconds if stream_seconds > 0 else None,
        tool_calls=tool_calls,
        tool_results_ok=tool_ok,
        tool_call_success=tool_ok / tool_calls if tool_calls else None,
        expected_tool_turns=len(expected),
        expected_tool_called=sum(r.expect_tool in r.tools_called for r in expected),
        ledger=cost,
        cost_per_turn_usd=cost.total_usd / len(completed) if completed else None,
        seconds=seconds,
        error_examples=examples,
    )

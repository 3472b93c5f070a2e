"""The Ledger service against a real daemon: runs on the fake providers leave ledger entries,
summaries add them up exactly, pages follow each other, tenants stay apart, and the client
and the ``interlock usage`` / ``interlock ledger`` commands show the same numbers."""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from interlock import Client, SyncClient
from interlock.cli import amain
from interlock.v1 import agents_pb2, agents_pb2_grpc, ledger_pb2, ledger_pb2_grpc
from interlockd.backends import catalog
from interlockd.ids import new_id
from interlockd.store.base import LedgerRow, NewRun
from interlockd.vocabulary import Usage
from tests.conftest import DaemonFactory, RunningDaemon
from tests.fakes.openai import FakeOpenAI, Reply

MODEL = "gpt-4o-mini"  # a model the price table knows, so token costs are not zero
TODAY_KEY = "%Y-%m-%d"


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI) -> Any:
    """A daemon whose default provider is named "openai" (priced) and a second one, fake_b
    (unpriced)."""
    return await start_daemon(
        default_provider="openai",
        providers={
            "openai": {
                "kind": "openai",
                "base_url": fake_a.base_url,
                "default_model": MODEL,
                "api_key": "sk-test-a",
            },
            "fake_b": {
                "kind": "openai",
                "base_url": fake_b.base_url,
                "default_model": "fake-model-b",
                "api_key": "sk-test-b",
            },
        },
    )


def ledger(daemon: RunningDaemon) -> ledger_pb2_grpc.LedgerStub:
    return ledger_pb2_grpc.LedgerStub(daemon.channel)


async def run(
    daemon: RunningDaemon,
    fake: FakeOpenAI,
    end_user: str,
    prompt: int,
    completion: int,
    *,
    key: str | None = None,
    **fields: Any,
) -> str:
    """One finished run with the given usage; return its id."""
    fake.enqueue(Reply().text("ok").usage(prompt=prompt, completion=completion))
    events = await daemon.run("hi", end_user_id=end_user, key=key, **fields)
    assert events[-1].WhichOneof("event") == "finish", events[-1]
    return events[0].run_id


async def list_all(
    daemon: RunningDaemon, *, key: str | None = None, page_size: int = 1000, **request: Any
) -> list[ledger_pb2.LedgerEntry]:
    entries: list[ledger_pb2.LedgerEntry] = []
    token = ""
    while True:
        page = await ledger(daemon).ListLedgerEntries(
            ledger_pb2.ListLedgerEntriesRequest(page_size=page_size, page_token=token, **request),
            metadata=daemon.auth(key),
        )
        entries += page.entries
        token = page.next_page_token
        if not token:
            return entries


async def summarize(
    daemon: RunningDaemon,
    group_by: ledger_pb2.UsageGroupBy.ValueType,
    *,
    key: str | None = None,
    **request: Any,
) -> ledger_pb2.SummarizeUsageResponse:
    return await ledger(daemon).SummarizeUsage(
        ledger_pb2.SummarizeUsageRequest(group_by=group_by, **request), metadata=daemon.auth(key)
    )


def expected(
    entries: Iterable[ledger_pb2.LedgerEntry], key: Callable[[ledger_pb2.LedgerEntry], str]
) -> dict[str, dict[str, Any]]:
    """What a summary must say per group, added up here from the listed entries."""
    groups: dict[str, list[ledger_pb2.LedgerEntry]] = defaultdict(list)
    for e in entries:
        groups[key(e)].append(e)
    return {k: added_up(group) for k, group in groups.items()}


def added_up(entries: list[ledger_pb2.LedgerEntry]) -> dict[str, Any]:
    tokens = [e for e in entries if e.kind == ledger_pb2.LEDGER_ENTRY_KIND_TOKENS]
    compute = [e for e in entries if e.kind == ledger_pb2.LEDGER_ENTRY_KIND_COMPUTE]
    return {
        "token_cost_usd": math.fsum(e.cost_usd for e in tokens),
        "compute_cost_usd": math.fsum(e.cost_usd for e in compute),
        "input_tokens": sum(e.usage.input_tokens for e in entries),
        "output_tokens": sum(e.usage.output_tokens for e in entries),
        "compute_seconds": math.fsum(e.compute_seconds for e in entries),
        "run_count": len({e.run_id for e in entries}),
        "entry_count": len(entries),
    }


def said(s: ledger_pb2.UsageSummary) -> dict[str, Any]:
    """A summary row in the shape of :func:`added_up`, after checking its total."""
    assert s.total_cost_usd == pytest.approx(s.token_cost_usd + s.compute_cost_usd, abs=1e-15)
    return {
        "token_cost_usd": pytest.approx(s.token_cost_usd, abs=1e-15),
        "compute_cost_usd": pytest.approx(s.compute_cost_usd, abs=1e-15),
        "input_tokens": s.usage.input_tokens,
        "output_tokens": s.usage.output_tokens,
        "compute_seconds": pytest.approx(s.compute_seconds, abs=1e-12),
        "run_count": s.run_count,
        "entry_count": s.entry_count,
    }


def day_of(e: ledger_pb2.LedgerEntry) -> str:
    return e.create_time.ToDatetime(tzinfo=UTC).strftime(TODAY_KEY)


async def finished_with_compute(
    daemon: RunningDaemon, end_user: str, agent: str, seconds: float, cost: float
) -> str:
    """A run closed through the daemon's own store with a tokens and a compute row, as a
    self-hosted runtime's run is (runs on compute cannot be produced from here yet)."""
    store = daemon.daemon.store
    run_id = new_id("run")
    await store.begin_run(
        NewRun(run_id, daemon.sandbox_id, end_user, new_id("conv"), "hermes", "hermes-4"),
        create_conversation=True,
    )
    usage = Usage(400, 40)
    common: dict[str, Any] = {
        "run_id": run_id,
        "sandbox_id": daemon.sandbox_id,
        "end_user_id": end_user,
        "price_version": catalog.PRICE_TABLE_VERSION,
        "agent_id": agent,
    }
    rows = [
        LedgerRow(
            kind="tokens", provider="hermes", model="hermes-4", usage=usage, cost_usd=0.0, **common
        ),
        LedgerRow(
            kind="compute",
            provider="daytona",
            model="",
            usage=Usage(),
            cost_usd=cost,
            compute_seconds=seconds,
            **common,
        ),
    ]
    await store.finish_run(run_id, status="finished", usage=usage, cost_usd=cost, ledger=rows)
    return run_id


# -- sums -------------------------------------------------------------------------------


async def test_runs_leave_entries_that_summaries_add_up(
    daemon: RunningDaemon, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """Every run leaves one tokens entry priced by the table, and grouping by end user, run,
    provider and day adds the entries up exactly; the total is the sum of everything."""
    a1 = await run(daemon, fake_a, "alice", 1000, 100)
    a2 = await run(daemon, fake_a, "alice", 2000, 250)
    b1 = await run(daemon, fake_a, "bob", 500, 50)
    b2 = await run(daemon, fake_b, "bob", 10, 10, provider="fake_b")

    entries = await list_all(daemon)
    assert [e.run_id for e in entries] == [b2, b1, a2, a1]  # newest first
    price = catalog.price("openai", MODEL)
    first = entries[-1]
    assert (first.kind, first.provider, first.model, first.end_user_id, first.agent) == (
        ledger_pb2.LEDGER_ENTRY_KIND_TOKENS,
        "openai",
        MODEL,
        "alice",
        "",
    )
    assert (first.usage.input_tokens, first.usage.output_tokens) == (1000, 100)
    assert first.cost_usd == pytest.approx(catalog.cost_usd(price, Usage(1000, 100)))
    assert first.cost_usd > 0
    assert first.price_version == catalog.PRICE_TABLE_VERSION
    assert entries[0].cost_usd == 0  # fake_b's model has no price

    groupings: list[tuple[ledger_pb2.UsageGroupBy.ValueType, Any]] = [
        (ledger_pb2.USAGE_GROUP_BY_END_USER, lambda e: e.end_user_id),
        (ledger_pb2.USAGE_GROUP_BY_RUN, lambda e: e.run_id),
        (ledger_pb2.USAGE_GROUP_BY_PROVIDER, lambda e: e.provider),
        (ledger_pb2.USAGE_GROUP_BY_AGENT, lambda e: e.agent),
        (ledger_pb2.USAGE_GROUP_BY_DAY, day_of),
    ]
    for group_by, key in groupings:
        response = await summarize(daemon, group_by)
        want = expected(entries, key)
        assert [s.key for s in response.summaries] == sorted(want), group_by
        assert {s.key: said(s) for s in response.summaries} == want, group_by
        assert said(response.total) == added_up(entries)
        assert response.total.key == ""

    by_user = await summarize(daemon, ledger_pb2.USAGE_GROUP_BY_END_USER)
    alice = by_user.summaries[0]
    assert (alice.key, alice.usage.input_tokens, alice.usage.output_tokens) == ("alice", 3000, 350)
    assert alice.token_cost_usd == pytest.approx(catalog.cost_usd(price, Usage(3000, 350)))


async def test_compute_entries_count_apart_from_tokens(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """Compute entries (active seconds x rate) add up as compute cost and seconds, group under
    their agent and compute provider, and the kind filter separates them from tokens."""
    plain = await run(daemon, fake_a, "alice", 1000, 100)
    built = await finished_with_compute(daemon, "alice", "builder", 90.5, 0.125)
    await finished_with_compute(daemon, "bob", "builder", 9.5, 0.03125)

    compute = await list_all(
        daemon, filter=ledger_pb2.LedgerFilter(kind=ledger_pb2.LEDGER_ENTRY_KIND_COMPUTE)
    )
    assert [(e.provider, e.compute_seconds, e.cost_usd, e.agent) for e in compute] == [
        ("daytona", 9.5, 0.03125, "builder"),
        ("daytona", 90.5, 0.125, "builder"),
    ]
    by_agent = await summarize(daemon, ledger_pb2.USAGE_GROUP_BY_AGENT)
    assert [s.key for s in by_agent.summaries] == ["", "builder"]
    none, builder = by_agent.summaries
    assert (none.run_count, none.compute_cost_usd, none.compute_seconds) == (1, 0.0, 0.0)
    assert (builder.run_count, builder.entry_count) == (2, 4)
    assert (builder.compute_cost_usd, builder.compute_seconds) == (0.15625, 100.0)
    assert builder.token_cost_usd == 0.0
    assert builder.usage.input_tokens == 800
    assert by_agent.total.compute_cost_usd == 0.15625
    assert by_agent.total.token_cost_usd == pytest.approx(none.token_cost_usd)

    by_provider = await summarize(daemon, ledger_pb2.USAGE_GROUP_BY_PROVIDER)
    assert [s.key for s in by_provider.summaries] == ["daytona", "hermes", "openai"]
    one_run = await summarize(
        daemon, ledger_pb2.USAGE_GROUP_BY_RUN, filter=ledger_pb2.LedgerFilter(run_id=built)
    )
    assert [(s.key, s.entry_count, s.total_cost_usd) for s in one_run.summaries] == [
        (built, 2, 0.125)
    ]
    tokens_of_alice = await summarize(
        daemon,
        ledger_pb2.USAGE_GROUP_BY_RUN,
        filter=ledger_pb2.LedgerFilter(
            end_user_id="alice", kind=ledger_pb2.LEDGER_ENTRY_KIND_TOKENS
        ),
    )
    assert sorted(s.key for s in tokens_of_alice.summaries) == sorted([plain, built])
    assert tokens_of_alice.total.compute_cost_usd == 0.0


async def test_a_saved_agents_runs_group_under_its_slug(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A run by a saved agent's slug is billed to that agent; other runs to no agent."""
    agents = agents_pb2_grpc.AgentsStub(daemon.channel)
    await agents.PutAgent(
        agents_pb2.PutAgentRequest(agent=agents_pb2.Agent(slug="support", provider="openai")),
        metadata=daemon.auth(),
    )
    await run(daemon, fake_a, "alice", 1000, 100, agent="support")
    await run(daemon, fake_a, "alice", 500, 50)
    by_agent = await summarize(daemon, ledger_pb2.USAGE_GROUP_BY_AGENT)
    assert [(s.key, s.run_count, s.usage.input_tokens) for s in by_agent.summaries] == [
        ("", 1, 500),
        ("support", 1, 1000),
    ]
    only = await list_all(daemon, filter=ledger_pb2.LedgerFilter(agent="support"))
    assert [e.usage.input_tokens for e in only] == [1000]


async def test_time_range_selects_by_write_time(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """start_time is inclusive and end_time exclusive; a range after the entries holds none."""
    await run(daemon, fake_a, "alice", 1000, 100)
    (entry,) = await list_all(daemon)
    written = entry.create_time

    def moment(delta: timedelta) -> Timestamp:
        ts = Timestamp()
        ts.FromDatetime(written.ToDatetime(tzinfo=UTC) + delta)
        return ts

    cases = [
        ({"start_time": written}, 1),
        ({"end_time": written}, 0),
        ({"start_time": moment(timedelta(microseconds=1))}, 0),
        ({"start_time": moment(-timedelta(hours=1)), "end_time": moment(timedelta(hours=1))}, 1),
    ]
    for bounds, count in cases:
        response = await summarize(
            daemon, ledger_pb2.USAGE_GROUP_BY_DAY, filter=ledger_pb2.LedgerFilter(**bounds)
        )
        assert response.total.entry_count == count, bounds
        assert len(response.summaries) == count, bounds


# -- pages ------------------------------------------------------------------------------


async def test_pages_follow_each_other(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """Listing 2 at a time gives every entry once, newest first; summaries page by key with
    the same total on every page; a token of another listing is INVALID_ARGUMENT."""
    runs = [await run(daemon, fake_a, f"user-{i}", 100 * (i + 1), 10) for i in range(5)]
    first = await ledger(daemon).ListLedgerEntries(
        ledger_pb2.ListLedgerEntriesRequest(page_size=2), metadata=daemon.auth()
    )
    assert len(first.entries) == 2
    assert first.next_page_token
    paged = await list_all(daemon, page_size=2)
    assert [e.run_id for e in paged] == runs[::-1]
    assert paged == await list_all(daemon)

    keys: list[str] = []
    totals: list[ledger_pb2.UsageSummary] = []
    token = ""
    while True:
        page = await summarize(
            daemon, ledger_pb2.USAGE_GROUP_BY_END_USER, page_size=2, page_token=token
        )
        assert len(page.summaries) <= 2
        keys += [s.key for s in page.summaries]
        totals.append(page.total)
        token = page.next_page_token
        if not token:
            break
    assert keys == [f"user-{i}" for i in range(5)]
    assert len(totals) == 3
    assert all(t == totals[0] for t in totals)
    assert totals[0].entry_count == 5

    for call in (
        summarize(daemon, ledger_pb2.USAGE_GROUP_BY_END_USER, page_token=first.next_page_token),
        ledger(daemon).ListLedgerEntries(
            ledger_pb2.ListLedgerEntriesRequest(page_token="bm90IGEgdG9rZW4="),
            metadata=daemon.auth(),
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith("page_token:")


# -- tenants ----------------------------------------------------------------------------


async def test_a_sandbox_key_reads_only_its_sandbox(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """Sandbox A's key never sees B's entries, even by B's run id, and may not name B;
    the operator reads B by naming it and must name one."""
    other_id, other_key = await daemon.new_sandbox("other")
    mine = await run(daemon, fake_a, "alice", 1000, 100)
    theirs = await run(daemon, fake_a, "alice", 2000, 200, key=other_key)

    assert [e.run_id for e in await list_all(daemon)] == [mine]
    assert [e.run_id for e in await list_all(daemon, key=other_key)] == [theirs]
    assert await list_all(daemon, filter=ledger_pb2.LedgerFilter(run_id=theirs)) == []
    by_run = await summarize(daemon, ledger_pb2.USAGE_GROUP_BY_RUN)
    assert [s.key for s in by_run.summaries] == [mine]
    own_named = await list_all(daemon, sandbox_id=daemon.sandbox_id)
    assert [e.run_id for e in own_named] == [mine]

    operator = await list_all(daemon, key=daemon.operator_key, sandbox_id=other_id)
    assert [(e.run_id, e.sandbox_id) for e in operator] == [(theirs, other_id)]
    summed = await summarize(
        daemon, ledger_pb2.USAGE_GROUP_BY_END_USER, key=daemon.operator_key, sandbox_id=other_id
    )
    assert [(s.key, s.usage.input_tokens) for s in summed.summaries] == [("alice", 2000)]

    refusals: list[tuple[Any, grpc.StatusCode, str]] = [
        (
            summarize(daemon, ledger_pb2.USAGE_GROUP_BY_RUN, sandbox_id=other_id),
            grpc.StatusCode.PERMISSION_DENIED,
            "sandbox_id",
        ),
        (
            list_all(daemon, sandbox_id=other_id),
            grpc.StatusCode.PERMISSION_DENIED,
            "sandbox_id",
        ),
        (
            list_all(daemon, key=daemon.operator_key),
            grpc.StatusCode.INVALID_ARGUMENT,
            "sandbox_id",
        ),
        (
            list_all(daemon, key=daemon.operator_key, sandbox_id="sbx_unknown"),
            grpc.StatusCode.NOT_FOUND,
            "",
        ),
        (list_all(daemon, key="ilk_not-a-key"), grpc.StatusCode.UNAUTHENTICATED, ""),
    ]
    for call, code, field in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == code
        assert (refused.value.details() or "").startswith(field)
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await ledger(daemon).ListLedgerEntries(ledger_pb2.ListLedgerEntriesRequest())
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- bad input --------------------------------------------------------------------------


def _ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"group_by": ledger_pb2.USAGE_GROUP_BY_UNSPECIFIED}, "group_by"),
        ({"group_by": 42}, "group_by"),
        ({"filter": ledger_pb2.LedgerFilter(kind=7)}, "filter.kind"),  # type: ignore[arg-type]
        ({"filter": ledger_pb2.LedgerFilter(run_id="run 1!")}, "filter.run_id"),
        ({"filter": ledger_pb2.LedgerFilter(end_user_id="a b")}, "filter.end_user_id"),
        ({"filter": ledger_pb2.LedgerFilter(agent="x" * 129)}, "filter.agent"),
        ({"filter": ledger_pb2.LedgerFilter(provider="a\nb")}, "filter.provider"),
        ({"filter": ledger_pb2.LedgerFilter(start_time=_ts(0, -1))}, "filter.start_time"),
        ({"filter": ledger_pb2.LedgerFilter(end_time=_ts(10**12))}, "filter.end_time"),
        (
            {"filter": ledger_pb2.LedgerFilter(start_time=_ts(100), end_time=_ts(100))},
            "filter.end_time",
        ),
        ({"page_size": -1}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_token": "garbage"}, "page_token"),
        ({"sandbox_id": "not an id!"}, "sandbox_id"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    daemon: RunningDaemon, request_fields: dict[str, Any], field: str
) -> None:
    """A malformed summary or listing request is INVALID_ARGUMENT whose message starts with
    the field at fault (a sandbox key naming a malformed sandbox is refused by name too)."""
    request_fields.setdefault("group_by", ledger_pb2.USAGE_GROUP_BY_END_USER)
    summary = ledger_pb2.SummarizeUsageRequest(**request_fields)
    requests: list[tuple[str, Any]] = [("SummarizeUsage", summary)]
    if field != "group_by":  # the same request, listed
        requests.append(
            (
                "ListLedgerEntries",
                ledger_pb2.ListLedgerEntriesRequest(
                    **{k: v for k, v in request_fields.items() if k != "group_by"}
                ),
            )
        )
    key = daemon.operator_key if field == "sandbox_id" else None
    for method, request in requests:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(ledger(daemon), method)(request, metadata=daemon.auth(key))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        assert (refused.value.details() or "").startswith(f"{field}:"), refused.value.details()


# -- clients ----------------------------------------------------------------------------


async def test_python_clients_page_through_the_ledger(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """client.ledger (asyncio and blocking) lists every entry across pages and merges every
    page of a summary; the operator reads another sandbox by naming it."""
    other_id, other_key = await daemon.new_sandbox("other")
    runs = [await run(daemon, fake_a, f"user-{i}", 100, 10) for i in range(3)]
    theirs = await run(daemon, fake_a, "zed", 100, 10, key=other_key)
    async with Client(daemon.address, daemon.api_key, operator_key=daemon.operator_key) as client:
        listed = [e.run_id async for e in client.ledger.list_all(page_size=1)]
        assert listed == runs[::-1]
        merged = await client.ledger.summarize_all("end_user", page_size=2)
        assert [s.key for s in merged.summaries] == ["user-0", "user-1", "user-2"]
        assert merged.total.entry_count == 3
        since = datetime.now(UTC) - timedelta(hours=1)
        mine = await client.ledger.summarize("run", since=since, end_user_id="user-1")
        assert [s.key for s in mine.summaries] == [runs[1]]
        operator = await client.ledger.summarize_all("run", sandbox_id=other_id)
        assert [s.key for s in operator.summaries] == [theirs]
        with pytest.raises(ValueError, match="group by"):
            await client.ledger.summarize("week")  # type: ignore[arg-type]

    def blocking() -> tuple[list[str], list[str]]:
        with SyncClient(daemon.address, daemon.api_key) as sync:
            entries = [e.run_id for e in sync.ledger.list_all(page_size=2, timeout=10)]
            days = sync.ledger.summarize_all("day", kind="tokens", timeout=10)
            return entries, [s.key for s in days.summaries]

    entries, days = await asyncio.to_thread(blocking)
    assert entries == runs[::-1]
    assert days == [datetime.now(UTC).strftime(TODAY_KEY)]


async def cli(daemon: RunningDaemon, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """Run `interlock <argv>` in-process with both keys; return (code, stdout, stderr)."""
    capsys.readouterr()  # drop what the in-process daemon logged before (its runs)
    code = await amain(
        [
            "--address",
            daemon.address,
            "--api-key",
            daemon.api_key,
            "--operator-key",
            daemon.operator_key,
            *argv,
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


async def test_usage_and_ledger_commands(
    daemon: RunningDaemon, fake_a: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    """`interlock usage` prints a row per group and a TOTAL line with the API's numbers,
    `--json` the API's own response, `interlock ledger --run` that run's entries only."""
    a1 = await run(daemon, fake_a, "alice", 1000, 100)
    await run(daemon, fake_a, "alice", 2000, 200)
    b1 = await run(daemon, fake_a, "bob", 500, 50)
    by_user = await summarize(daemon, ledger_pb2.USAGE_GROUP_BY_END_USER)

    code, out, err = await cli(daemon, capsys, "usage", "--by", "user")
    assert (code, err) == (0, "")
    header, alice, bob, total = out.splitlines()
    assert header.split()[:4] == ["END", "USER", "RUNS", "FAILED"]
    assert alice.split()[:5] == ["alice", "2", "0", "3000", "300"]
    assert bob.split()[:5] == ["bob", "1", "0", "500", "50"]
    assert total.split()[:5] == ["TOTAL", "3", "0", "3500", "350"]
    cost = f"${by_user.total.total_cost_usd:.6f}"
    assert total.split()[-1] == cost

    code, out, err = await cli(daemon, capsys, "usage", "--by", "run", "--user", "bob", "--json")
    assert code == 0, err
    (line,) = out.splitlines()
    shown = json.loads(line)
    assert [s["key"] for s in shown["summaries"]] == [b1]
    assert shown["total"]["run_count"] == "1"  # int64 as JSON strings, as protobuf prints them

    code, out, err = await cli(daemon, capsys, "usage", "--by", "day", "--since", "1h")
    assert code == 0, err
    assert out.splitlines()[1].split()[0] == datetime.now(UTC).strftime(TODAY_KEY)

    code, out, err = await cli(daemon, capsys, "ledger", "--run", a1)
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split()[:3] == ["TIME", "RUN", "KIND"]
    assert row.split()[1:4] == [a1, "tokens", f"openai/{MODEL}"]
    assert "1000 in / 100 out" in row

    code, out, err = await cli(daemon, capsys, "ledger", "--limit", "2", "--json")
    assert code == 0, err
    assert [json.loads(line)["end_user_id"] for line in out.splitlines()] == ["bob", "alice"]
    assert "--limit 0" in err

    code, out, err = await cli(daemon, capsys, "usage", "--until", "2000-01-01")
    assert (code, out) == (0, "")
    assert "no usage" in err


async def test_usage_command_reads_another_sandbox_with_the_operator_key(
    daemon: RunningDaemon,
    fake_a: FakeOpenAI,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--sandbox` switches to the operator key and that sandbox; bad times are usage errors."""
    monkeypatch.delenv("INTERLOCK_OPERATOR_KEY", raising=False)
    other_id, other_key = await daemon.new_sandbox("other")
    await run(daemon, fake_a, "zed", 100, 10, key=other_key)
    code, out, err = await cli(daemon, capsys, "usage", "--sandbox", other_id)
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["zed", "TOTAL"]

    capsys.readouterr()
    code = await amain(["--address", daemon.address, "usage", "--sandbox", other_id])
    out, err = capsys.readouterr()
    assert code == 2
    assert "operator key" in err

    code, out, err = await cli(daemon, capsys, "usage", "--since", "last tuesday")
    assert code == 2
    assert "--since" in err


async def test_a_failed_hermes_run_is_billed_under_hermes_on_its_compute_provider(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Hermes run that fails (its runtime never starts) bills its compute seconds in an
    entry naming the agent provider (hermes), the compute provider (local) and the failure;
    summaries count it among the runs and as failed, and `interlock usage` / `ledger` show
    both."""
    daemon = await start_daemon(
        providers={
            "fake": {"kind": "openai", "base_url": fake_a.base_url, "default_model": MODEL},
            "hermes": {
                "kind": "hermes",
                "executable": "/bin/false",  # exits at once: the session never starts
                "base_url": fake_a.base_url,
                "default_model": "hermes-model",
            },
        },
        compute={"providers": {"local": {"kind": "local", "usd_per_hour": 3600.0}}},
    )
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await daemon.run("Hello.", provider="hermes", deadline=60)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    ok = await run(daemon, fake_a, "u-1", 100, 10, provider="fake")

    [tokens, compute] = await list_all(daemon)  # newest first
    assert compute.kind == ledger_pb2.LEDGER_ENTRY_KIND_COMPUTE
    assert (compute.agent_provider, compute.provider, compute.model) == (
        "hermes",
        "local",
        "hermes-model",
    )
    assert compute.run_failed
    assert compute.cost_usd > 0
    assert (tokens.run_id, tokens.agent_provider, tokens.provider) == (ok, "fake", "fake")
    assert not tokens.run_failed

    by_provider = await summarize(daemon, ledger_pb2.USAGE_GROUP_BY_PROVIDER)
    assert [(s.key, s.run_count, s.failed_run_count) for s in by_provider.summaries] == [
        ("fake", 1, 0),
        ("local", 1, 1),
    ]
    assert (by_provider.total.run_count, by_provider.total.failed_run_count) == (2, 1)

    code, out, err = await cli(daemon, capsys, "usage", "--by", "provider")
    assert code == 0, err
    header, fake, local, total = out.splitlines()
    assert header.split()[:3] == ["PROVIDER", "RUNS", "FAILED"]
    assert fake.split()[:3] == ["fake", "1", "0"]
    assert local.split()[:3] == ["local", "1", "1"]
    assert total.split()[:3] == ["TOTAL", "2", "1"]

    code, out, err = await cli(daemon, capsys, "ledger")
    assert code == 0, err
    header, newest, oldest = out.splitlines()
    assert header.split()[-1] == "FAILED"
    assert newest.split()[-1] == "-"
    assert "hermes/hermes-model on local" in oldest
    assert oldest.split()[-1] == "yes"

"""The Ledger servicer: a sandbox's ledger rows, listed and added up.

A sandbox API key reads its own sandbox's ledger; the operator key reads the
sandbox it names in ``sandbox_id``. This module authorises, validates and
converts; the sums are the store's, computed in the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from interlock.v1 import ledger_pb2 as pb
from interlockd.api import validation as v
from interlockd.api.auth import Authenticator
from interlockd.api.handlers import Context, unary
from interlockd.api.router import usage_proto
from interlockd.api.sandboxes import timestamp
from interlockd.errors import InvalidArgument, PermissionDenied
from interlockd.store.base import (
    BudgetStatus,
    LedgerEntry,
    LedgerFilter,
    LedgerKind,
    Store,
    UsageGroup,
    UsageTotals,
)

_KINDS: dict[pb.LedgerEntryKind.ValueType, LedgerKind] = {
    pb.LEDGER_ENTRY_KIND_TOKENS: "tokens",
    pb.LEDGER_ENTRY_KIND_COMPUTE: "compute",
}
_PROTO_KINDS = {name: value for value, name in _KINDS.items()}
_GROUPS: dict[pb.UsageGroupBy.ValueType, UsageGroup] = {
    pb.USAGE_GROUP_BY_END_USER: "end_user",
    pb.USAGE_GROUP_BY_AGENT: "agent",
    pb.USAGE_GROUP_BY_RUN: "run",
    pb.USAGE_GROUP_BY_PROVIDER: "provider",
    pb.USAGE_GROUP_BY_DAY: "day",
}
# The range google.protobuf.Timestamp allows: 0001-01-01 to 9999-12-31, UTC.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
_MAX_PAGE = 1000


class _Scoped(Protocol):
    """What both requests carry: the sandbox to read and the filter."""

    @property
    def sandbox_id(self) -> str: ...

    @property
    def filter(self) -> pb.LedgerFilter: ...


def _time(f: pb.LedgerFilter, name: str) -> datetime | None:
    if not f.HasField(name):  # type: ignore[arg-type]
        return None
    ts = getattr(f, name)
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos < 1_000_000_000):
        raise InvalidArgument(f"filter.{name}", "is not a valid timestamp")
    moment: datetime = ts.ToDatetime(tzinfo=UTC)
    return moment


def ledger_filter(f: pb.LedgerFilter) -> LedgerFilter:
    """The validated filter of a request, in store terms."""
    kind = None
    if f.kind:
        kind = _KINDS.get(f.kind)
        if kind is None:
            raise InvalidArgument("filter.kind", "must be tokens or compute (or unset for both)")
    since, until = _time(f, "start_time"), _time(f, "end_time")
    if since is not None and until is not None and until <= since:
        raise InvalidArgument("filter.end_time", "must be after filter.start_time")
    return LedgerFilter(
        run_id=v.identifier(f.run_id, "filter.run_id", required=False),
        end_user_id=v.end_user_id(f.end_user_id, "filter.end_user_id") if f.end_user_id else "",
        agent_id=v.short_text(f.agent, "filter.agent", 128),
        provider=v.short_text(f.provider, "filter.provider", 64),
        kind=kind,
        since=since,
        until=until,
    )


def entry_proto(e: LedgerEntry) -> pb.LedgerEntry:
    r = e.row
    return pb.LedgerEntry(
        sandbox_id=r.sandbox_id,
        run_id=r.run_id,
        end_user_id=r.end_user_id,
        agent=r.agent_id,
        kind=_PROTO_KINDS[r.kind],
        provider=r.provider,
        model=r.model,
        usage=usage_proto(r.usage),
        compute_seconds=r.compute_seconds,
        cost_usd=r.cost_usd,
        price_version=r.price_version,
        create_time=timestamp(e.created_at),
        agent_provider=e.agent_provider,
        run_failed=e.run_failed,
    )


def budget_proto(b: BudgetStatus) -> pb.Budget:
    return pb.Budget(
        scope=b.scope,
        target=b.target,
        period=b.period,
        period_start=timestamp(b.period_start),
        reset_time=timestamp(b.resets_at),
        limit_usd=b.limit_usd,
        reserved_usd=b.reserved_usd,
        spent_usd=b.spent_usd,
    )


def summary_proto(t: UsageTotals) -> pb.UsageSummary:
    return pb.UsageSummary(
        key=t.key,
        token_cost_usd=t.token_cost_usd,
        compute_cost_usd=t.compute_cost_usd,
        total_cost_usd=t.total_cost_usd,
        usage=usage_proto(t.usage),
        compute_seconds=t.compute_seconds,
        run_count=t.run_count,
        entry_count=t.entry_count,
        failed_run_count=t.failed_run_count,
    )


class LedgerServicer:
    def __init__(self, auth: Authenticator, store: Store) -> None:
        self._auth = auth
        self._store = store

    async def _sandbox(self, request: _Scoped, context: Context) -> str:
        """The sandbox the call may read: the key's own, or the operator's choice."""
        caller = await self._auth.sandbox_or_operator(context)
        if caller is None:
            if not request.sandbox_id:
                raise InvalidArgument(
                    "sandbox_id", "is required with the operator key: name the sandbox to read"
                )
            sandbox_id = v.identifier(request.sandbox_id, "sandbox_id")
            await self._store.get_sandbox(sandbox_id)  # NOT_FOUND for an unknown sandbox
            return sandbox_id
        if request.sandbox_id and request.sandbox_id != caller:
            raise PermissionDenied(
                "sandbox_id: a sandbox API key reads only its own sandbox's ledger; "
                "leave sandbox_id empty, or use the operator key"
            )
        return caller

    @unary
    async def ListLedgerEntries(
        self, request: pb.ListLedgerEntriesRequest, context: Context
    ) -> pb.ListLedgerEntriesResponse:
        sandbox_id = await self._sandbox(request, context)
        page = await self._store.list_ledger_entries(
            sandbox_id,
            ledger_filter(request.filter),
            v.page_size(request.page_size, default=100, maximum=_MAX_PAGE),
            v.short_text(request.page_token, "page_token", 512),
        )
        return pb.ListLedgerEntriesResponse(
            entries=[entry_proto(e) for e in page.items], next_page_token=page.next_page_token
        )

    @unary
    async def SummarizeUsage(
        self, request: pb.SummarizeUsageRequest, context: Context
    ) -> pb.SummarizeUsageResponse:
        sandbox_id = await self._sandbox(request, context)
        group_by = _GROUPS.get(request.group_by)
        if group_by is None:
            raise InvalidArgument("group_by", "is required: end_user, agent, run, provider or day")
        where = ledger_filter(request.filter)
        page = await self._store.summarize_usage(
            sandbox_id,
            group_by,
            where,
            v.page_size(request.page_size, default=100, maximum=_MAX_PAGE),
            v.short_text(request.page_token, "page_token", 512),
        )
        total = await self._store.usage_total(sandbox_id, where)
        budgets = await self._store.read_budgets(
            sandbox_id, end_user_id=where.end_user_id, agent=where.agent_id
        )
        return pb.SummarizeUsageResponse(
            summaries=[summary_proto(t) for t in page.items],
            total=summary_proto(total),
            next_page_token=page.next_page_token,
            budgets=[budget_proto(b) for b in budgets],
        )

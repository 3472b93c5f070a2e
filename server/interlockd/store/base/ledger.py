"""The ledger read back: rows of money per run, listed and added up (the Ledger service).

Rows are written by :meth:`~interlockd.store.base.runs.RunStore.finish_run`; this
interface only reads them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from datetime import datetime

    from interlockd.store.base.paging import Page
    from interlockd.store.base.runs import LedgerRow
    from interlockd.vocabulary import Usage


LedgerKind = Literal["tokens", "compute"]


#: What :meth:`LedgerStore.summarize_usage` adds up by; ``day`` is the UTC day a row was written.
UsageGroup = Literal["end_user", "agent", "run", "provider", "day"]


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    """Which ledger rows a listing or a summary covers: every field set must match.

    Empty strings and None match everything. ``since`` is inclusive, ``until``
    exclusive; both compare with the time a row was written. ``provider`` matches
    a row's own provider or its run's agent provider (so a Hermes run's compute
    rows on ``local`` match both "hermes" and "local").
    """

    run_id: str = ""
    end_user_id: str = ""
    agent_id: str = ""
    provider: str = ""
    kind: LedgerKind | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A ledger row as stored: the row and when it was written (its run's end).

    ``agent_provider`` and ``run_failed`` are read from the row's run: its agent
    provider (a compute row's ``provider`` is the compute provider) and whether
    it ended failed.
    """

    row: LedgerRow
    created_at: datetime
    agent_provider: str = ""
    run_failed: bool = False


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Ledger rows added up: one group of a summary (``key``), or all of them (``key`` "")."""

    key: str
    token_cost_usd: float
    compute_cost_usd: float
    usage: Usage  # tokens of the rows (compute rows carry none)
    compute_seconds: float  # of the compute rows
    run_count: int  # distinct runs
    entry_count: int  # rows
    failed_run_count: int = 0  # distinct runs among them that ended failed

    @property
    def total_cost_usd(self) -> float:
        return self.token_cost_usd + self.compute_cost_usd


class LedgerStore(abc.ABC):
    """Listings and sums of a sandbox's ledger rows."""

    @abc.abstractmethod
    async def list_ledger(self, sandbox_id: str, run_id: str = "") -> list[LedgerRow]:
        """Ledger rows of the sandbox (of one run when ``run_id`` is given)."""

    @abc.abstractmethod
    async def list_ledger_entries(
        self, sandbox_id: str, where: LedgerFilter, page_size: int, page_token: str
    ) -> Page[LedgerEntry]:
        """The sandbox's ledger rows matching ``where``, newest first, paged by an opaque token.

        Newest first means by the time a row was written, descending; rows
        written at the same microsecond come latest-written first. Paging is
        by position (keyset), so rows written while a client pages never
        shift or repeat a page. Raise InvalidArgument naming ``page_token``
        for a token that is not from this listing, ValueError for a
        ``page_size`` below 1. Never returns another sandbox's rows; an
        unknown sandbox simply has none.
        """

    @abc.abstractmethod
    async def summarize_usage(
        self,
        sandbox_id: str,
        group_by: UsageGroup,
        where: LedgerFilter,
        page_size: int,
        page_token: str,
    ) -> Page[UsageTotals]:
        """The sandbox's ledger rows matching ``where``, added up per group, by key ascending.

        The key is the row's ``end_user_id``, ``agent_id`` ('' for runs of no
        saved agent), ``run_id`` or ``provider``, or for ``day`` the UTC date
        the row was written as ``YYYY-MM-DD`` (so keys sort chronologically).
        Only groups with at least one matching row appear. Grouping and
        summing happen in the database, in one query per page, never by
        loading rows into the caller. Paging and errors as for
        :meth:`list_ledger_entries`.
        """

    @abc.abstractmethod
    async def usage_total(self, sandbox_id: str, where: LedgerFilter) -> UsageTotals:
        """Every ledger row of the sandbox matching ``where``, added up (``key`` ''); all
        zeros when none match."""

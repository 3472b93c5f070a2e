"""The ledger: listings and sums, computed by the database (GROUP BY), so a summary
costs one query however many rows it covers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from interlockd.errors import (
    InvalidArgument,
)
from interlockd.store.base import (
    LedgerEntry,
    LedgerFilter,
    LedgerRow,
    LedgerStore,
    Page,
    UsageGroup,
    UsageTotals,
)
from interlockd.store.sql.core import (
    MAX_INT,
    SqlCore,
    check_page_size,
    make_page_token,
    read_page_token,
)
from interlockd.store.sql.rows import (
    end_user_of,
    to_time,
    to_us,
)
from interlockd.store.sql.tables import (
    LEDGER,
    USAGE_TOTALS,
)

if TYPE_CHECKING:
    pass


#: The key of each summary grouping. Days are UTC dates, which sort chronologically.
_USAGE_KEYS: dict[str, str] = {
    "end_user": "end_user_id",
    "agent": "agent_id",
    "run": "run_id",
    "provider": "provider",
    "day": "",  # the dialect's (Dialect.day_of)
}
# Sums of no rows are 0, not NULL; integer sums are cast back to integers
# (PostgreSQL's SUM of a bigint is a numeric).
_USAGE_SUMS = (
    "COALESCE(SUM(CASE WHEN kind = 'tokens' THEN cost_usd END), 0.0) AS token_cost_usd, "
    "COALESCE(SUM(CASE WHEN kind = 'compute' THEN cost_usd END), 0.0) AS compute_cost_usd, "
    "CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, "
    "CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, "
    "CAST(COALESCE(SUM(cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, "
    "CAST(COALESCE(SUM(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens, "
    "CAST(COALESCE(SUM(reasoning_tokens), 0) AS BIGINT) AS reasoning_tokens, "
    "COALESCE(SUM(compute_seconds), 0.0) AS compute_seconds, "
    "COUNT(DISTINCT run_id) AS run_count, "
    "COUNT(*) AS entry_count, "
    "COUNT(DISTINCT CASE WHEN (SELECT r.status FROM runs r WHERE r.id = ledger.run_id) "
    "= 'failed' THEN run_id END) AS failed_run_count"
)


_LEDGER_ROW_ID = re.compile(r"[0-9]{1,18}")


def _ledger_where(
    sandbox_id: str, where: LedgerFilter, blind_end_user: str
) -> tuple[list[str], list[Any]]:
    """The WHERE clauses (to be ANDed) and parameters selecting ``where``'s rows.

    ``blind_end_user`` is the blind id of ``where.end_user_id`` (the column holds blind ids).
    """
    clauses = ["sandbox_id = ?"]
    params: list[Any] = [sandbox_id]
    for column, value in (
        ("run_id", where.run_id),
        ("end_user_id", blind_end_user),
        ("agent_id", where.agent_id),
        ("kind", where.kind or ""),
    ):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.provider:
        # A compute row's provider is the compute provider; its run's, the agent provider.
        clauses.append(
            "(provider = ? OR (SELECT r.provider FROM runs r WHERE r.id = ledger.run_id) = ?)"
        )
        params += [where.provider, where.provider]
    if where.since is not None:
        clauses.append("created_at >= ?")
        params.append(to_us(where.since))
    if where.until is not None:
        clauses.append("created_at < ?")
        params.append(to_us(where.until))
    return clauses, params


class SqlLedger(SqlCore, LedgerStore):
    """The Ledger service's listings and summaries."""

    async def list_ledger(self, sandbox_id: str, run_id: str = "") -> list[LedgerRow]:
        if run_id:
            rows = await self._fetch(
                f"SELECT {LEDGER.columns} FROM ledger WHERE run_id = ? AND sandbox_id = ? "
                "ORDER BY id",
                (run_id, sandbox_id),
            )
        else:
            rows = await self._fetch_scan(
                f"SELECT {LEDGER.columns} FROM ledger WHERE sandbox_id = ? ORDER BY id",
                (sandbox_id,),
            )
        if not rows:
            return []
        return await self._opened(sandbox_id, lambda keys: [LEDGER.load(r, keys) for r in rows])

    async def list_ledger_entries(
        self, sandbox_id: str, where: LedgerFilter, page_size: int, page_token: str
    ) -> Page[LedgerEntry]:
        size = check_page_size(page_size)
        before = (MAX_INT, MAX_INT)
        if page_token:
            at, row_id = read_page_token(page_token, "ledger")
            if not _LEDGER_ROW_ID.fullmatch(row_id):
                raise InvalidArgument(
                    "page_token", "is not a token from a previous page of this listing"
                )
            before = (at, int(row_id))
        blind = await self._blind_end_user(sandbox_id, where.end_user_id)
        clauses, params = _ledger_where(sandbox_id, where, blind)
        # Rows are ordered by (created_at, id): id breaks ties in the order written.
        rows = await self._fetch(
            f"SELECT id, created_at, {LEDGER.columns}, "
            "(SELECT r.provider FROM runs r WHERE r.id = ledger.run_id) AS run_provider, "
            "(SELECT r.status FROM runs r WHERE r.id = ledger.run_id) AS run_status FROM ledger "
            f"WHERE {' AND '.join(clauses)} AND (created_at, id) < (?, ?) "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, *before, size + 1),
        )
        page = rows[:size]
        items = []
        if page:
            items = await self._opened(
                sandbox_id,
                lambda keys: [
                    LedgerEntry(
                        LEDGER.load(r, keys),
                        to_time(r["created_at"]),
                        agent_provider=r["run_provider"] or "",
                        run_failed=r["run_status"] == "failed",
                    )
                    for r in page
                ],
            )
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = make_page_token("ledger", last["created_at"], str(last["id"]))
        return Page(items, token)

    async def summarize_usage(
        self,
        sandbox_id: str,
        group_by: UsageGroup,
        where: LedgerFilter,
        page_size: int,
        page_token: str,
    ) -> Page[UsageTotals]:
        size = check_page_size(page_size)
        key = _USAGE_KEYS.get(group_by)
        if key is None:
            raise ValueError(f"group_by must be one of {sorted(_USAGE_KEYS)}, got {group_by!r}")
        key = key or self.dialect.day_of("created_at")
        listing = f"usage/{group_by}"
        blind = await self._blind_end_user(sandbox_id, where.end_user_id)
        clauses, params = _ledger_where(sandbox_id, where, blind)
        if group_by == "end_user":
            return await self._summarize_by_end_user(sandbox_id, clauses, params, size, page_token)
        if page_token:
            _, after = read_page_token(page_token, listing)
            clauses.append(f"{key} > ?")
            params.append(after)
        rows = await self._fetch_scan(
            f"SELECT {key} AS group_key, {_USAGE_SUMS} FROM ledger "
            f"WHERE {' AND '.join(clauses)} GROUP BY group_key ORDER BY group_key LIMIT ?",
            (*params, size + 1),
        )
        items = [USAGE_TOTALS.load(r, key=r["group_key"]) for r in rows[:size]]
        token = ""
        if len(rows) > size:
            token = make_page_token(listing, 0, rows[size - 1]["group_key"])
        return Page(items, token)

    async def _summarize_by_end_user(
        self,
        sandbox_id: str,
        clauses: list[str],
        params: list[Any],
        size: int,
        page_token: str,
    ) -> Page[UsageTotals]:
        """Groups by end user, in the order of the end users' own ids.

        The column holds blind ids, whose order means nothing, so every group
        is read, its end user opened, and the groups sorted and paged here.
        The database has already visited every matching row to add the groups
        up, so this adds work in proportion to the groups, not the rows.
        """
        listing = "usage/end_user"
        after = read_page_token(page_token, listing)[1] if page_token else None
        rows = await self._fetch_scan(
            f"SELECT end_user_id, {_USAGE_SUMS}, "
            "(SELECT u.id_sealed FROM end_users u WHERE u.sandbox_id = ? "
            "AND u.id = ledger.end_user_id) AS end_user_sealed FROM ledger "
            f"WHERE {' AND '.join(clauses)} GROUP BY end_user_id",
            (sandbox_id, *params),
        )
        if not rows:
            return Page([])
        groups = await self._opened(
            sandbox_id,
            lambda keys: sorted(((end_user_of(keys, r), r) for r in rows), key=lambda g: g[0]),
        )
        if after is not None:
            groups = [(key, r) for key, r in groups if key > after]
        items = [USAGE_TOTALS.load(r, key=key) for key, r in groups[:size]]
        token = ""
        if len(groups) > size:
            token = make_page_token(listing, 0, items[-1].key)
        return Page(items, token)

    async def usage_total(self, sandbox_id: str, where: LedgerFilter) -> UsageTotals:
        blind = await self._blind_end_user(sandbox_id, where.end_user_id)
        clauses, params = _ledger_where(sandbox_id, where, blind)
        rows = await self._fetch_scan(
            f"SELECT {_USAGE_SUMS} FROM ledger WHERE {' AND '.join(clauses)}", params
        )
        return USAGE_TOTALS.load(rows[0], key="")

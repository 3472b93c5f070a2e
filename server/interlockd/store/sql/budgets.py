"""Spend budgets in SQL: the admission's budget checks, reservations, settlements, read-back.

A run's reservation is written by its admission (``runs.py``), in the same
transaction and under the same per-sandbox serialization, so a check here
sees every reservation committed before it, on any replica. Amounts are
integer micro-dollars: sums stay exact on both engines. The admission
statement reads the facts (:data:`BUDGET_FACTS`) and refuses by them
(:data:`BUDGET_REFUSALS`); this module also holds what happens to a
reservation afterwards (:func:`reserve`, :func:`settle`, :func:`release_held`)
and the read of the current periods (:class:`SqlBudgets`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from interlockd.errors import BudgetExhausted
from interlockd.store.base import BudgetPeriod, BudgetScope, BudgetStatus, BudgetStore
from interlockd.store.sql.core import US_PER_DAY, SqlCore
from interlockd.store.sql.rows import blind_end_user, now_us, to_time, to_us

if TYPE_CHECKING:
    from collections.abc import Iterable

    from interlockd.store.sql.core import Tx
    from interlockd.store.sql.rows import Row

MICROS_PER_USD = 1_000_000

#: (scope, period, the limit as the admission's facts read it).
_BUDGETS: tuple[tuple[BudgetScope, BudgetPeriod, str], ...] = (
    ("sandbox", "day", "s.usd_per_day"),
    ("sandbox", "month", "s.usd_per_month"),
    ("end_user", "day", "s.end_user_usd_per_day"),
    ("end_user", "month", "s.end_user_usd_per_month"),
    ("agent", "day", "(SELECT usd_per_day FROM agents WHERE sandbox_id = :sbx AND slug = :agent)"),
    (
        "agent",
        "month",
        "(SELECT usd_per_month FROM agents WHERE sandbox_id = :sbx AND slug = :agent)",
    ),
)
_TARGET = {"sandbox": "''", "end_user": ":user", "agent": ":agent"}


def _used(scope: BudgetScope, period: BudgetPeriod) -> str:
    return (
        "coalesce((SELECT reserved_micros + spent_micros FROM budget_spend "
        f"WHERE sandbox_id = :sbx AND scope = '{scope}' AND target = {_TARGET[scope]} "
        f"AND period = '{period}' AND period_start = :{period}_start), 0)"
    )


#: Columns of the admission's facts (``FROM ... sandboxes s``): each budget's
#: limit (USD; NULL: no such agent) and what its period holds (micro-dollars),
#: with the run's reservation and the day it falls in, for the refusal's message.
#: Parameters: :sbx, :user (blind), :agent, :day_start, :month_start.
BUDGET_FACTS = ", ".join(
    [
        "CAST(:reserve AS BIGINT) AS reserve",
        "CAST(:day_start AS BIGINT) AS day_start",
        *(
            f"{limit} AS {scope}_{period}_limit, {_used(scope, period)} AS {scope}_{period}_used"
            for scope, period, limit in _BUDGETS
        ),
    ]
)

#: WHEN clauses of the admission's refusal: a budget whose period cannot take
#: the run's reservation (:reserve, micro-dollars). The run's own agent budget
#: is checked only when it runs as one (:agent <> '').
BUDGET_REFUSALS = " ".join(
    f"WHEN {scope}_{period}_limit > 0 "
    + ("AND :agent <> '' " if scope == "agent" else "")
    + f"AND {scope}_{period}_used + :reserve > {scope}_{period}_limit * {MICROS_PER_USD} "
    f"THEN 'budget:{scope}:{period}'"
    for scope, period, _ in _BUDGETS
)


@dataclass(frozen=True, slots=True)
class Periods:
    """The UTC day and calendar month around a moment, as microsecond bounds."""

    day_start: int
    day_end: int
    month_start: int
    month_end: int

    @classmethod
    def at(cls, now: int) -> Periods:
        day_start = now - now % US_PER_DAY
        moment = to_time(now)
        month = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        following = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
        return cls(day_start, day_start + US_PER_DAY, to_us(month), to_us(following))

    def start(self, period: BudgetPeriod) -> int:
        return self.day_start if period == "day" else self.month_start

    def end(self, period: BudgetPeriod) -> int:
        return self.day_end if period == "day" else self.month_end


def to_micros(usd: float) -> int:
    """USD as micro-dollars, rounded up (a reservation never holds less than asked)."""
    if usd < 0 or not math.isfinite(usd):
        raise ValueError(f"a cost must be a non-negative finite USD amount, got {usd!r}")
    return math.ceil(round(usd * MICROS_PER_USD, 6))


def admission_params(agent: str, reserve_micros: int, periods: Periods) -> dict[str, Any]:
    """The parameters :data:`BUDGET_FACTS` and :data:`BUDGET_REFUSALS` take, but :sbx and :user."""
    return {
        "agent": agent,
        "reserve": reserve_micros,
        "day_start": periods.day_start,
        "month_start": periods.month_start,
    }


def refusal(sandbox_id: str, end_user_id: str, agent: str, facts: Row) -> BudgetExhausted:
    """The error for the admission's ``budget:<scope>:<period>`` refusal in ``facts``."""
    _, scope, period = str(facts["refusal"]).split(":")
    limit = float(facts[f"{scope}_{period}_limit"])
    used = int(facts[f"{scope}_{period}_used"]) / MICROS_PER_USD
    reserve = int(facts["reserve"]) / MICROS_PER_USD
    periods = Periods.at(int(facts["day_start"]))
    resets_at = to_time(periods.end("day" if period == "day" else "month"))
    whose = {
        "sandbox": f"sandbox {sandbox_id}",
        "end_user": f"end user {end_user_id!r} (the sandbox's per-end-user budget)",
        "agent": f"agent {agent!r}",
    }[scope]
    field = {"sandbox": "usd", "end_user": "end_user_usd", "agent": "usd"}[scope]
    iso = resets_at.isoformat().replace("+00:00", "Z")
    return BudgetExhausted(
        f"the {period}ly budget of {whose} is ${limit:.2f} per UTC {period}; "
        f"${used:.6f} is spent or reserved by running runs and this run reserves up to "
        f"${reserve:.6f}; it resets at {iso}: retry then, or raise {field}_per_{period}",
        budget=scope,
        period=period,
        resets_at=iso,
    )


def _spend_rows(
    sandbox_id: str,
    user: str,
    agent: str,
    day_start: int,
    month_start: int,
    reserved: int,
    spent: int,
) -> list[tuple[str, str, str, str, int, int, int]]:
    """The (budget, period) rows a run counts in, each with the change it makes."""
    targets: list[tuple[str, str]] = [("sandbox", ""), ("end_user", user)]
    if agent:
        targets.append(("agent", agent))
    return [
        (sandbox_id, scope, target, period, start, reserved, spent)
        for scope, target in targets
        for period, start in (("day", day_start), ("month", month_start))
    ]


async def _add(db: Tx, rows: Iterable[tuple[str, str, str, str, int, int, int]]) -> None:
    rows = list(rows)
    if not rows:
        return
    await db.executemany(
        "INSERT INTO budget_spend (sandbox_id, scope, target, period, period_start, "
        "reserved_micros, spent_micros) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (sandbox_id, scope, target, period, period_start) DO UPDATE SET "
        "reserved_micros = budget_spend.reserved_micros + excluded.reserved_micros, "
        "spent_micros = budget_spend.spent_micros + excluded.spent_micros",
        rows,
    )


async def reserve(
    db: Tx, sandbox_id: str, user: str, agent: str, micros: int, periods: Periods
) -> None:
    """Hold ``micros`` in every budget of the admitted run (its row says so already)."""
    if micros:
        await _add(
            db,
            _spend_rows(sandbox_id, user, agent, periods.day_start, periods.month_start, micros, 0),
        )


_HELD = "sandbox_id, end_user_id, agent, reserved_micros, budget_day, budget_month"


async def settle(db: Tx, run_id: str, cost_usd: float) -> None:
    """Replace what the run holds with its actual cost, in the periods it reserved in."""
    spent = to_micros(cost_usd)
    # The row is this transaction's (finish_run's UPDATE holds it): read, then write.
    rows = list(await db.fetch(f"SELECT {_HELD} FROM runs WHERE id = ?", (run_id,)))
    if not rows:
        return
    held = rows[0]
    if not held["reserved_micros"] and not spent:
        return
    if held["reserved_micros"]:
        await db.execute("UPDATE runs SET reserved_micros = 0 WHERE id = ?", (run_id,))
    day, month = held["budget_day"], held["budget_month"]
    if not held["reserved_micros"]:
        # Nothing was reserved (a free model): the cost counts where the run ends.
        periods = Periods.at(now_us())
        day, month = periods.day_start, periods.month_start
    await _add(
        db,
        _spend_rows(
            held["sandbox_id"],
            held["end_user_id"],
            held["agent"],
            day,
            month,
            -held["reserved_micros"],
            spent,
        ),
    )


async def release_held(db: Tx, where: str, params: Any = ()) -> None:
    """Give back what running runs matching ``where`` (a condition on ``runs``) hold.

    For runs that end without a settlement (interrupted under a dead
    process): their cost is unknown, so nothing is charged. Exactly once per
    run however many processes sweep at once: the UPDATE that zeroes the hold
    decides, and what it held is the run's reservation.
    """
    held = list(
        await db.fetch(
            "UPDATE runs SET reserved_micros = 0 "
            f"WHERE reserved_micros > 0 AND ({where}) "
            "RETURNING sandbox_id, end_user_id, agent, reservation_micros, budget_day, "
            "budget_month",
            params,
        )
    )
    await _add(
        db,
        (
            row
            for h in held
            for row in _spend_rows(
                h["sandbox_id"],
                h["end_user_id"],
                h["agent"],
                h["budget_day"],
                h["budget_month"],
                -h["reservation_micros"],
                0,
            )
        ),
    )


class SqlBudgets(SqlCore, BudgetStore):
    """The current periods of a sandbox's budgets, read back."""

    async def read_budgets(
        self, sandbox_id: str, *, end_user_id: str = "", agent: str = ""
    ) -> list[BudgetStatus]:
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        user = blind_end_user(keys, end_user_id)
        periods = Periods.at(now_us())
        limits = await self._fetch(
            "SELECT usd_per_day, usd_per_month, end_user_usd_per_day, end_user_usd_per_month "
            "FROM sandboxes WHERE id = ?",
            (sandbox_id,),
        )
        if not limits:
            return []
        wanted: list[tuple[BudgetScope, str, str, float, float]] = [
            ("sandbox", "", "", limits[0]["usd_per_day"], limits[0]["usd_per_month"])
        ]
        if end_user_id:
            wanted.append(
                (
                    "end_user",
                    end_user_id,
                    user,
                    limits[0]["end_user_usd_per_day"],
                    limits[0]["end_user_usd_per_month"],
                )
            )
        if agent:
            own = await self._fetch(
                "SELECT usd_per_day, usd_per_month FROM agents WHERE sandbox_id = ? AND slug = ?",
                (sandbox_id, agent),
            )
            day, month = (own[0]["usd_per_day"], own[0]["usd_per_month"]) if own else (0.0, 0.0)
            wanted.append(("agent", agent, agent, day, month))
        spend = {
            (r["scope"], r["target"], r["period"]): r
            for r in await self._fetch(
                "SELECT scope, target, period, reserved_micros, spent_micros FROM budget_spend "
                "WHERE sandbox_id = ? AND ((period = 'day' AND period_start = ?) "
                "OR (period = 'month' AND period_start = ?)) "
                "AND ((scope = 'sandbox' AND target = '') "
                "OR (scope = 'end_user' AND target = ?) OR (scope = 'agent' AND target = ?))",
                (sandbox_id, periods.day_start, periods.month_start, user, agent),
            )
        }
        statuses = []
        for scope, shown, target, day_limit, month_limit in wanted:
            period: BudgetPeriod
            for period, limit in (("day", day_limit), ("month", month_limit)):
                row = spend.get((scope, target, period))
                statuses.append(
                    BudgetStatus(
                        scope=scope,
                        target=shown,
                        period=period,
                        period_start=to_time(periods.start(period)),
                        resets_at=to_time(periods.end(period)),
                        limit_usd=float(limit),
                        reserved_usd=(row["reserved_micros"] if row else 0) / MICROS_PER_USD,
                        spent_usd=(row["spent_micros"] if row else 0) / MICROS_PER_USD,
                    )
                )
        return statuses

"""Spend budgets: USD limits per UTC day and month, reserved at admission, settled at the end.

A budget is a limit (0: none) on what runs may cost in a period: the UTC day
or the UTC calendar month. Three scopes hold one: the sandbox (its
:class:`~interlockd.store.base.tenancy.Quotas`), each end user of the sandbox
(one limit, in the quotas too, applying to every end user separately) and a
saved agent (:class:`SpendLimits` beside its settings).

:meth:`RunStore.begin_run` reserves the run's worst-case cost
(``NewRun.reserve_usd``) against every budget the run falls under, in its
admission transaction, and refuses it (:class:`~interlockd.errors.BudgetExhausted`)
when what is reserved and spent in the period plus this reservation would pass
a limit. :meth:`RunStore.finish_run` replaces the reservation with the run's
actual cost (its ``cost_usd`` and its ledger's compute cost); a run that ends
without costing anything gives it all back. Both are charged to the periods the
run reserved in.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from datetime import datetime


BudgetScope = Literal["sandbox", "end_user", "agent"]
BudgetPeriod = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class SpendLimits:
    """A saved agent's budgets, in USD. Zero means no limit."""

    usd_per_day: float = 0.0
    usd_per_month: float = 0.0


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget in its current period: its limit and what is held against it."""

    scope: BudgetScope
    target: str  # '' (sandbox), the end user's id, or the agent's slug
    period: BudgetPeriod
    period_start: datetime
    resets_at: datetime
    limit_usd: float  # 0: no limit (the spend is still counted)
    reserved_usd: float  # held by running runs
    spent_usd: float  # what ended runs cost


class BudgetStore(abc.ABC):
    """What runs reserved and spent against the sandbox's budgets."""

    @abc.abstractmethod
    async def read_budgets(
        self, sandbox_id: str, *, end_user_id: str = "", agent: str = ""
    ) -> list[BudgetStatus]:
        """The budgets of the current UTC day and month, day first within each scope.

        Always the sandbox's two; with ``end_user_id`` that end user's two (the
        sandbox's per-end-user limits); with ``agent`` that saved agent's two
        (limit 0 when there is no such agent). NotFound for an unknown sandbox.
        """

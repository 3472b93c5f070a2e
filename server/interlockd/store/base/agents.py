"""Saved agents: named settings a run takes by slug. Settings are sealed at rest."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from interlockd.store.base.budgets import SpendLimits

if TYPE_CHECKING:
    from datetime import datetime


@dataclass(frozen=True, slots=True)
class SavedAgent:
    """A saved agent: what a run by its slug gets."""

    sandbox_id: str
    slug: str
    settings: dict[str, Any]  # name, system, provider, model, tools, max_output_tokens, compute...
    created_at: datetime
    updated_at: datetime
    #: Its spend budgets (see ``store/base/budgets.py``), kept in clear beside the
    #: sealed settings so admission reads them.
    budget: SpendLimits = field(default_factory=SpendLimits)


class AgentStore(abc.ABC):
    """A sandbox's saved agents, by slug."""

    @abc.abstractmethod
    async def put_agent(
        self,
        sandbox_id: str,
        slug: str,
        settings: dict[str, Any],
        budget: SpendLimits | None = None,
    ) -> SavedAgent:
        """Create or replace the sandbox's agent ``slug`` (settings sealed) with its
        ``budget`` (None: no limits). NotFound for an unknown sandbox."""

    @abc.abstractmethod
    async def get_agent(self, sandbox_id: str, slug: str) -> SavedAgent:
        """The agent; NotFound unless it is in this sandbox."""

    @abc.abstractmethod
    async def list_agents(self, sandbox_id: str) -> list[SavedAgent]:
        """The sandbox's agents by slug."""

    @abc.abstractmethod
    async def delete_agent(self, sandbox_id: str, slug: str) -> None:
        """Delete the agent; NotFound if there is none."""

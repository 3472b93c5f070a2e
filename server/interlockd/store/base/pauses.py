"""Pauses: the kill switches, daemon-wide or of one sandbox, end user or provider.

The store only records them; ``interlockd.pauses`` decides what a pause stops.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from datetime import datetime


PauseScope = Literal["global", "end_user", "agent_provider", "compute_provider"]


@dataclass(frozen=True, slots=True)
class Pause:
    """A kill switch: runs in its scope are refused, and those in flight end."""

    scope: PauseScope
    sandbox_id: str  # "" = every sandbox (global and provider scopes)
    target: str  # the end user or provider; "" for global
    reason: str
    created_at: datetime

    def describe(self) -> str:
        """How an error names it: 'the global pause', 'the pause of agent provider anthropic'."""
        if self.scope == "global":
            what = "the global pause"
        else:
            what = f"the pause of {self.scope.replace('_', ' ')} {self.target}"
        return f"{what} ({self.reason})" if self.reason else what


class PauseStore(abc.ABC):
    """The pauses in force."""

    @abc.abstractmethod
    async def set_pause(
        self, scope: PauseScope, *, sandbox_id: str = "", target: str = "", reason: str = ""
    ) -> Pause:
        """Set (or re-set, replacing its reason) a pause; return it. ValueError when the
        scope's target is missing (every scope but global needs one; end_user needs a
        sandbox) or given for global."""

    @abc.abstractmethod
    async def clear_pause(
        self, scope: PauseScope, *, sandbox_id: str = "", target: str = ""
    ) -> bool:
        """Remove a pause; whether there was one."""

    @abc.abstractmethod
    async def list_pauses(self, sandbox_id: str | None = None) -> list[Pause]:
        """Pauses in force, oldest first: all of them (None), or those that apply to a
        sandbox (its own and the daemon-wide ones)."""

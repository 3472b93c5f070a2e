"""The managed agent and environment a turn runs on, created once per configuration.

An agent is keyed by the fingerprint of everything the service bakes into it —
model, system prompt, and the tool schemas in name order — and an environment
by its configuration. The ids live in the router's store (per sandbox) behind
:class:`ProviderState`, which creates each under a lock that holds across
coroutines and replicas: fifty concurrent first turns create one agent, a
changed prompt or tool set creates a new one, an unchanged one never does.
Creates also pass through a rate budget (the service allows about 60 agent
creates a minute) and wait for room rather than fail.

Per-turn context never goes into the agent (it would change the fingerprint
every turn): the router hands over earlier turns in the user message instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiolimiter import AsyncLimiter

from interlockd.tool_schema import clean_schema
from interlockd.vocabulary import ToolSpec

#: Bump when the shape of what is created changes, so old resources are not reused.
_FINGERPRINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What an agent is created with."""

    model: str
    system: str
    tools: tuple[dict[str, Any], ...]  # custom tool definitions, in name order

    @classmethod
    def build(cls, model: str, system: str, tools: Sequence[ToolSpec]) -> AgentConfig:
        return cls(
            model=model,
            system=system,
            tools=tuple(
                {
                    "type": "custom",
                    "name": t.name,
                    "description": t.description or t.name,
                    "input_schema": clean_schema(t.parameters),
                }
                for t in sorted(tools, key=lambda t: t.name)
            ),
        )

    @property
    def fingerprint(self) -> str:
        return _digest(
            {
                "v": _FINGERPRINT_VERSION,
                "model": self.model,
                "system": self.system,
                "tools": list(self.tools),
            }
        )

    def create_params(self) -> dict[str, Any]:
        """Keyword arguments of ``client.beta.agents.create``."""
        fingerprint = self.fingerprint
        params: dict[str, Any] = {
            "model": self.model,
            "name": f"interlock-{fingerprint[:16]}",
            "tools": list(self.tools),
            "metadata": {"interlock_fingerprint": fingerprint},
        }
        if self.system:
            params["system"] = self.system
        return params


@dataclass(frozen=True, slots=True)
class EnvironmentConfig:
    """What an environment is created with."""

    networking: str  # "unrestricted" | "limited"

    @property
    def config(self) -> dict[str, Any]:
        return {"type": "cloud", "networking": {"type": self.networking}}

    @property
    def fingerprint(self) -> str:
        return _digest({"v": _FINGERPRINT_VERSION, "config": self.config})

    def create_params(self) -> dict[str, Any]:
        """Keyword arguments of ``client.beta.environments.create``."""
        fingerprint = self.fingerprint
        return {
            "name": f"interlock-{fingerprint[:16]}",
            "config": self.config,
            "metadata": {"interlock_fingerprint": fingerprint},
        }


class CreateBudget:
    """At most ``per_minute`` creates a minute; beyond it, callers wait for room.

    A leaky bucket (aiolimiter): a burst up to the budget, then one create per
    ``period / per_minute`` seconds. Per daemon process.
    """

    def __init__(self, per_minute: float, *, period: float = 60.0) -> None:
        self._limiter = AsyncLimiter(max_rate=per_minute, time_period=period)

    async def acquire(self) -> None:
        await self._limiter.acquire()


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()

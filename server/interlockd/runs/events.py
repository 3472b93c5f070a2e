"""What the orchestrator yields: the backends' events framed by a start and an end.

``api/`` turns these into ``AgentEvent`` messages and numbers them; nothing
here knows protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from interlockd.vocabulary import TextDelta, ThinkingDelta, ToolCall, ToolResult, Usage


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: str
    session_id: str
    provider: str
    model: str
    request_id: str = ""
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class RunFinished:
    stop_reason: str
    usage: Usage
    token_usd: float
    price_version: str
    session_id: str
    compute_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class RunFailed:
    code: str  # a grpc.StatusCode name
    message: str
    retryable: bool
    provider: str = ""


RunEvent: TypeAlias = (
    RunStarted | TextDelta | ThinkingDelta | ToolCall | ToolResult | RunFinished | RunFailed
)

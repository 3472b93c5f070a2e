"""A validated Run request in domain terms (``api/`` builds it from the proto)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ComputeChoice:
    """Where a self-hosted runtime should run (empty fields: the agent's or the default)."""

    provider: str = ""
    policy: str = ""
    region: str = ""


@dataclass(frozen=True, slots=True)
class RunInput:
    sandbox_id: str
    end_user_id: str
    message: str
    session_id: str = ""
    provider: str = ""
    model: str = ""
    system: str = ""
    tools: tuple[str, ...] = ()
    request_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    max_output_tokens: int = 0
    #: Provider-specific options, e.g. ``reasoning_engine_id`` and ``location`` for Google.
    options: dict[str, str] = field(default_factory=dict)
    #: A saved agent's slug: the orchestrator fills the fields above from it.
    agent: str = ""
    #: Upper bound of this run in seconds (0: the daemon's ``runs.max_run_seconds``).
    max_runtime_seconds: float = 0
    #: Self-hosted runtimes: the compute placement asked for.
    compute: ComputeChoice = field(default_factory=ComputeChoice)

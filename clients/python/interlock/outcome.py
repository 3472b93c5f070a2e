"""Folding a run's event stream into one :class:`RunOutcome`.

This module owns the meaning of the stream's shape (``run_started`` first, a
single ``finish`` or ``error`` last, text deltas concatenated into the answer)
so that :meth:`interlock.Client.run_text` and the CLI's renderer agree on it.
It never performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from interlock.errors import RunFailed, status_code_named
from interlock.v1 import events_pb2

__all__ = ["RunOutcome"]


@dataclass
class RunOutcome:
    """Everything a finished run said, collected event by event with :meth:`add`.

    ``finish`` or ``error`` is set once the stream delivered its last event;
    both are ``None`` if the stream ended early (which the router never does on
    purpose — see :meth:`raise_for_error`).
    """

    run_id: str = ""
    session_id: str = ""
    provider: str = ""
    model: str = ""
    request_id: str = ""
    #: True when the router replayed a recorded run (same ``request_id``).
    replayed: bool = False
    tool_calls: list[events_pb2.ToolCall] = field(default_factory=list)
    tool_results: list[events_pb2.ToolResult] = field(default_factory=list)
    finish: events_pb2.Finish | None = None
    error: events_pb2.Error | None = None
    # Deltas are kept as parts and joined on read: repeated string concatenation
    # would make a long answer quadratic to collect.
    _text: list[str] = field(default_factory=list, init=False, repr=False)
    _thinking: list[str] = field(default_factory=list, init=False, repr=False)

    @property
    def text(self) -> str:
        """The assistant's answer: every text delta of the run, concatenated."""
        return "".join(self._text)

    @property
    def thinking(self) -> str:
        """The model's reasoning, when the provider exposed it."""
        return "".join(self._thinking)

    @property
    def ok(self) -> bool:
        """True when the run ended with ``finish``."""
        return self.finish is not None and self.error is None

    def add(self, event: events_pb2.AgentEvent) -> None:
        """Fold one event into the outcome."""
        if event.run_id:
            self.run_id = event.run_id
        kind = event.WhichOneof("event")
        if kind == "run_started":
            started = event.run_started
            self.session_id = started.session_id
            self.provider = started.provider
            self.model = started.model
            self.request_id = started.request_id
            self.replayed = started.replayed
        elif kind == "text_delta":
            self._text.append(event.text_delta.text)
        elif kind == "thinking_delta":
            self._thinking.append(event.thinking_delta.text)
        elif kind == "tool_call":
            self.tool_calls.append(event.tool_call)
        elif kind == "tool_result":
            self.tool_results.append(event.tool_result)
        elif kind == "finish":
            self.finish = event.finish
            # Finish repeats the session id for clients that only read the last
            # event; prefer it only when run_started did not name one.
            self.session_id = self.session_id or event.finish.session_id
        elif kind == "error":
            self.error = event.error
        # Event kinds added to the API later are ignored: an older client must
        # keep working against a newer router.

    def raise_for_error(self) -> None:
        """Raise :class:`~interlock.errors.RunFailed` unless the run finished normally."""
        if self.error is not None:
            raise RunFailed(
                status_code_named(self.error.code),
                self.error.message,
                retryable=self.error.retryable,
                provider=self.error.provider,
            )
        if self.finish is None:
            raise RunFailed(
                grpc.StatusCode.UNKNOWN,
                "the stream ended without a finish or error event",
                retryable=False,
            )

"""Checks of a Run's event stream shared by the turn tests of every backend."""

from __future__ import annotations

from interlock.v1 import events_pb2 as ev


def kinds(events: list[ev.AgentEvent]) -> list[str]:
    """The oneof case of each event, in order."""
    return [e.WhichOneof("event") or "" for e in events]


def text_of(events: list[ev.AgentEvent]) -> str:
    """The answer: every text delta joined."""
    return "".join(e.text_delta.text for e in events if e.HasField("text_delta"))


def assert_well_formed(events: list[ev.AgentEvent]) -> None:
    """RunStarted first, exactly one Finish/Error last, seq 1..n, one run id."""
    assert events[0].HasField("run_started")
    assert kinds(events)[-1] in ("finish", "error")
    assert sum(k in ("finish", "error") for k in kinds(events)) == 1
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.run_id for e in events}) == 1
    assert events[0].run_id.startswith("run_")

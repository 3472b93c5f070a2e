"""Replaying a run that already happened: its recorded events, never a second run.

A Run repeated with the request_id of a run that ended on its own (finished,
or failed after its first event) gets the events that run recorded — its
assistant text, tool calls and results — framed by a RunStarted with
``replayed`` set and the run's own ending. Nothing reaches a provider.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from interlockd.backends import catalog
from interlockd.errors import FailedPrecondition, RunInProgress
from interlockd.runs.events import RunEvent, RunFailed, RunFinished, RunStarted
from interlockd.runs.request import RunInput
from interlockd.store.base import Run, Store, WindowEntry
from interlockd.tools.runner import stored_result
from interlockd.vocabulary import TextDelta, ToolCall


def check_owner(run: Run, req: RunInput) -> None:
    """Refuse a request_id that another end user's run holds, or that is still running."""
    if run.end_user_id != req.end_user_id:
        raise FailedPrecondition(
            f"request_id {req.request_id!r} was already used for another end user; "
            "use a new request_id"
        )
    if run.status == "running":
        raise RunInProgress(
            f"the run with request_id {req.request_id!r} is still in progress; "
            "retry when it has finished to get its replay"
        )


async def replay(store: Store, run: Run, req: RunInput) -> AsyncGenerator[RunEvent, None]:
    """The recorded events of ``run``, instead of running it again."""
    check_owner(run, req)
    yield RunStarted(
        run_id=run.id,
        session_id=run.conversation_id,
        provider=run.provider,
        model=run.model,
        request_id=run.request_id,
        replayed=True,
    )
    for event in recorded_events(await store.read_run_entries(run.sandbox_id, run.id)):
        yield event
    if run.status == "finished":
        ledger = await store.list_ledger(run.sandbox_id, run.id)
        yield RunFinished(
            stop_reason=run.stop_reason,
            usage=run.usage,
            token_usd=run.cost_usd,
            price_version=catalog.PRICE_TABLE_VERSION,
            session_id=run.conversation_id,
            compute_usd=sum(r.cost_usd for r in ledger if r.kind == "compute"),
        )
    else:
        yield RunFailed(
            run.error_code or "ABORTED",
            run.error_message or f"the original run ended {run.status}",
            retryable=False,
            provider=run.provider,
        )


def recorded_events(entries: Sequence[WindowEntry]) -> list[RunEvent]:
    """The stream events of what a run recorded (its user message is not one)."""
    events: list[RunEvent] = []
    for entry in entries:
        if entry.kind == "assistant":
            events.append(TextDelta(entry.text))
        elif entry.kind == "tool_call":
            events.append(ToolCall(entry.tool_call_id, entry.tool_name, entry.text))
        elif entry.kind == "tool_result":
            events.append(stored_result(entry, entry.tool_name))
    return events

"""How a turn ended: one function from what stopped it to the run's outcome.

A turn that streams to its TurnEnd is ``finished``. Everything else that can
stop it arrives as an exception, and :func:`classify` says what it means: the
run's final status, the Error event a started stream ends with, the status a
caller gets instead when nothing was streamed yet, and whether the exception
is a cancellation that must keep propagating (after the run is settled).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from interlockd.errors import (
    FailedPrecondition,
    InterlockError,
    ProviderError,
    Unavailable,
)
from interlockd.runs.events import RunFailed
from interlockd.store.base import Pause, RunStatus

#: The message of the cancellation a pause sends into a run's task.
PAUSED = "interlock: stopped by a pause"
#: The message of the cancellation the daemon's shutdown sends into a run's task.
SHUTDOWN = "interlock: stopped by the daemon's shutdown"
_SHUTDOWN_MESSAGE = (
    "interlockd is shutting down; retry with the same request_id to resume "
    "this turn (on another replica, or once the daemon is back)"
)
_CRASHED_MESSAGE = "the router failed while running the turn; what was recorded is kept"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A run's final status, with its stop reason or the Error event it ends with."""

    status: RunStatus
    stop_reason: str = ""
    error: RunFailed | None = None


@dataclass(frozen=True, slots=True)
class Ending:
    """What an exception that stopped a turn means for it."""

    outcome: Outcome
    #: Before the first event the caller gets a status: this error (None: the
    #: exception itself, already an InterlockError).
    status: InterlockError | None = None
    #: A cancellation of the run's task or stream: settle, then let it propagate.
    cancelled: bool = False
    #: Even before the first event the run streams its Error event (a time limit
    #: reached: the run did happen, for its full time).
    in_band: bool = False


@dataclass(slots=True)
class Stops:
    """Why the run's task may have been cancelled on purpose (set before cancelling)."""

    paused: Pause | None = None  # a kill switch covering the run
    shutdown: bool = False  # the daemon's shutdown, past its grace


def classify(
    exc: BaseException, provider: str, limit: float, stops: Stops, log: Any
) -> Ending | None:
    """The ending ``exc`` gives a run on ``provider`` (time limit ``limit`` seconds), or
    None for an exception that is not the turn's to handle (it propagates as is).
    ``log``: the run's bound logger."""
    if isinstance(exc, ProviderError):
        log.warning("run_provider_failed", code=exc.code, error=exc.message)
        failed = RunFailed(exc.code, exc.message, exc.retryable, provider)
        return Ending(Outcome("failed", error=failed))
    if isinstance(exc, TimeoutError):
        message = f"the turn exceeded its limit of {limit:g} s"
        failed = RunFailed("DEADLINE_EXCEEDED", message, False, provider)
        return Ending(Outcome("failed", error=failed), in_band=True)
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return _cancelled(exc, provider, stops, log)
    if isinstance(exc, Exception):
        log.exception("run_crashed")
        return Ending(Outcome("failed", error=RunFailed("INTERNAL", _CRASHED_MESSAGE, False, "")))
    return None


def _cancelled(exc: BaseException, provider: str, stops: Stops, log: Any) -> Ending:
    """A cancellation: a pause's or the shutdown's (the run ends with an Error event),
    or anyone else's (the caller went away: the run is ``cancelled``)."""
    task = asyncio.current_task()
    on_purpose = stops.paused is not None or stops.shutdown
    if (
        not on_purpose
        or not isinstance(exc, asyncio.CancelledError)
        or task is None
        or task.uncancel() > 0  # cancelled for another reason as well
    ):
        log.info("run_cancelled")
        return Ending(Outcome("cancelled"), cancelled=True)
    if stops.shutdown:
        # Resumable: the retry with the same request_id carries the turn on.
        log.warning("run_interrupted_by_shutdown")
        failed = RunFailed("UNAVAILABLE", _SHUTDOWN_MESSAGE, True, "")
        return Ending(Outcome("interrupted", error=failed), Unavailable(_SHUTDOWN_MESSAGE))
    assert stops.paused is not None
    message = f"the run was stopped by {stops.paused.describe()}"
    log.warning("run_paused", scope=stops.paused.scope, target=stops.paused.target)
    failed = RunFailed("FAILED_PRECONDITION", message, False, provider)
    return Ending(Outcome("failed", error=failed), FailedPrecondition(message))

"""Settling a turn: everything a run produced, written in one store call.

The last phase of a turn. The run's MCP grant is closed and its compute meter
stopped whatever ended it; then one :meth:`Store.finish_run` writes the final
status, the buffered assistant text, the ledger rows (tokens at the price
table's price; compute at the provider's), and the provider session the
backend bound (or lets go of it). A run that ends before its first event is
*withdrawn* when it recorded nothing (request_id released, user message taken
back: as far as its caller knows it did not happen), and left ``interrupted``
— resumable under its request_id — when it did.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import structlog

from interlockd.backends import catalog
from interlockd.compute.placement import ComputeCharge, Lease, Plan
from interlockd.compute.scheduler import ComputeScheduler
from interlockd.runs.events import RunFailed
from interlockd.runs.outcome import Outcome
from interlockd.runs.recording import TurnRecorder
from interlockd.store.base import LedgerRow, Run, Store
from interlockd.tools.grants import Grant, ToolAccess
from interlockd.vocabulary import Usage

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Progress:
    """What a turn has produced so far, for its settlement."""

    usage: Usage = dataclasses.field(default_factory=Usage)
    #: The provider session the turn ran in (backends that keep sessions);
    #: "" when the backend let go of it.
    session: str | None = None
    #: Self-hosted runtimes: the placement, the session held, the MCP access of
    #: the run's tools, and the compute charge once released.
    plan: Plan | None = None
    lease: Lease | None = None
    grant: Grant[ToolAccess] | None = None
    charge: ComputeCharge | None = None
    agent: str = ""  # the saved agent's slug, for the ledger
    resumed: bool = False  # an earlier attempt of this run recorded entries


async def settle(
    store: Store,
    compute: ComputeScheduler | None,
    run: Run,
    model: str,
    recorder: TurnRecorder,
    progress: Progress,
    outcome: Outcome,
    *,
    unstarted: bool = False,
) -> Run:
    """Close ``run`` with ``outcome``; ``unstarted``: it ends before its first event."""
    withdraw = unstarted and not (progress.resumed or recorder.recorded)
    if unstarted and not withdraw:
        outcome = _interrupted(outcome)
    if progress.grant is not None:
        progress.grant.close()
    if progress.plan is not None and compute is not None:
        # The meter stops here, whatever ended the run.
        progress.charge = await compute.release(progress.lease, progress.plan)
    usage = progress.usage
    cost = catalog.cost_usd(catalog.price(run.provider, model), usage)
    err = outcome.error
    # The provider's session: let go ("": the provider terminated it, or it holds
    # the user message a withdrawn run takes back from the window), or recorded as
    # having seen every entry of the turn, in the same transaction.
    session = progress.session
    if withdraw and session is not None:
        session = ""
    finished = await store.finish_run(
        run.id,
        status=outcome.status,
        stop_reason=outcome.stop_reason,
        error_code=err.code if err else ("CANCELLED" if outcome.status == "cancelled" else ""),
        error_message=err.message if err else "",
        usage=usage,
        cost_usd=cost,
        ledger=_ledger_rows(run, model, progress, cost),
        entries=recorder.take_text(),
        withdraw=withdraw,
        provider_session=session,
    )
    _log_finished(finished, model, usage, cost)
    return finished


def _interrupted(outcome: Outcome) -> Outcome:
    """A run that recorded something yet never streamed: resumable by its request_id."""
    err = outcome.error
    return Outcome(
        "interrupted",
        error=RunFailed(
            err.code if err else "CANCELLED",
            err.message if err else "the caller went away before the run started",
            True,
            err.provider if err else "",
        ),
    )


def _ledger_rows(run: Run, model: str, progress: Progress, cost: float) -> list[LedgerRow]:
    """The run's tokens at the price table's price, and its compute at the provider's."""
    rows = []
    if progress.usage != Usage():
        rows.append(
            LedgerRow(
                run_id=run.id,
                sandbox_id=run.sandbox_id,
                end_user_id=run.end_user_id,
                kind="tokens",
                provider=run.provider,
                model=model,
                usage=progress.usage,
                cost_usd=cost,
                price_version=catalog.PRICE_TABLE_VERSION,
                agent_id=progress.agent,
            )
        )
    if progress.charge is not None:
        rows.append(
            LedgerRow(
                run_id=run.id,
                sandbox_id=run.sandbox_id,
                end_user_id=run.end_user_id,
                kind="compute",
                provider=progress.charge.provider,
                model=model,
                usage=Usage(),
                cost_usd=progress.charge.cost_usd,
                price_version=progress.charge.price_version,
                compute_seconds=progress.charge.seconds,
                agent_id=progress.agent,
            )
        )
    return rows


def _log_finished(finished: Run, model: str, usage: Usage, cost: float) -> None:
    log.info(
        "run_finished",
        run_id=finished.id,
        provider=finished.provider,
        model=model,
        status=finished.status,
        stop_reason=finished.stop_reason,
        error_code=finished.error_code,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=cost,
        seconds=round(
            (finished.finished_at or finished.started_at).timestamp()
            - finished.started_at.timestamp(),
            3,
        ),
    )

"""Runs: admission, a run's record from begin to finish (its settlement), and its ledger rows.

Every decision that must hold across replicas (one turn at a time per
conversation, quotas, a request id used once) is made inside one store call.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from interlockd.vocabulary import Usage

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from datetime import datetime

    from interlockd.store.base.conversations import NewEntry, WindowEntry


RunStatus = Literal["running", "finished", "failed", "cancelled", "interrupted"]


@dataclass(frozen=True, slots=True)
class NewRun:
    id: str
    sandbox_id: str
    end_user_id: str
    conversation_id: str
    provider: str
    model: str
    request_id: str = ""  # "" = no idempotency key
    labels: dict[str, str] = field(default_factory=dict)  # cohorts, experiments
    #: The saved agent it runs as ('' none): its budgets apply too.
    agent: str = ""
    #: The run's worst-case cost in USD, reserved against its budgets at
    #: admission (again at each resumption) and settled at its end.
    reserve_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    sandbox_id: str
    end_user_id: str
    conversation_id: str
    provider: str
    model: str
    request_id: str
    status: RunStatus
    started_at: datetime
    labels: dict[str, str] = field(default_factory=dict)
    finished_at: datetime | None = None
    stop_reason: str = ""
    error_code: str = ""
    error_message: str = ""
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One line of money: a run's token cost, or its compute cost (active seconds x rate)."""

    run_id: str
    sandbox_id: str
    end_user_id: str
    kind: Literal["tokens", "compute"]
    provider: str  # the agent provider (tokens) or the compute provider (compute)
    model: str
    usage: Usage
    cost_usd: float
    price_version: str
    compute_seconds: float = 0.0
    agent_id: str = ""


@dataclass(frozen=True, slots=True)
class Lease:
    """Which process holds a running run, and until when (it renews while it lives)."""

    owner: str
    expires_at: datetime


class RunStore(abc.ABC):
    """Runs from admission to their end, with what they wrote to the window and the ledger."""

    @abc.abstractmethod
    async def begin_run(
        self,
        run: NewRun,
        *,
        create_conversation: bool = False,
        entries: Sequence[NewEntry] = (),
        lease: Lease | None = None,
        admitted: Callable[[Run], Awaitable[None]] | None = None,
    ) -> Run:
        """Admit and record a new running run, in one write transaction that decides everything.

        ``lease``: the run is held by ``lease.owner`` until it expires (see
        :meth:`renew_leases`, :meth:`expire_leases`); None: held by nobody,
        so never taken over.

        In that transaction, in this order:

        1. With ``create_conversation``, create the conversation
           ``run.conversation_id`` (a fresh id the caller made with
           ``ids.new_id("conv")``) for ``run.end_user_id``, empty and untitled,
           and the end user on first sight, as :meth:`create_conversation`
           would: NotFound if the sandbox does not exist, AlreadyExists if a
           conversation with that id does.
        2. Admission, on facts read inside the transaction, so that it holds
           across replicas; the sandbox's quotas are its current ones (a
           concurrent :meth:`set_quotas` applies wholly before or wholly after).
           The first failing check raises:

           - NotFound if the sandbox does not exist, or the conversation is
             not ``run.end_user_id``'s in ``run.sandbox_id``;
           - AlreadyExists if ``request_id`` is non-empty and any run of this
             sandbox, running or ended, already used it;
           - FailedPrecondition if the conversation already has a running run
             (one turn at a time per conversation);
           - ResourceExhausted if a non-zero quota is reached:
             ``max_concurrent_runs`` (running runs in the sandbox),
             ``max_concurrent_runs_per_end_user`` (running runs of this end
             user in the sandbox), ``max_tokens_per_day`` (input + output
             tokens that :meth:`finish_run` recorded for the sandbox since the
             start of the current UTC day). The message names the quota, its
             limit and the current count.
        3. Insert the run, status ``running``, ``started_at`` now.
        4. Append ``entries`` (typically the user message) to the
           conversation exactly as :meth:`append_entries` would with
           ``provider=run.provider, model=run.model``: seqs continue the
           conversation's (1..n for a created one), text sealed, search terms
           indexed, ``updated_at``/``entry_count``/``last_provider``/
           ``last_model`` updated.

        5. ``admitted``, if given, is awaited with the run this returns once
           every check has passed and every row is written, before the
           commit: the caller may start work that needs the run admitted
           (the provider call) while the commit's fsync runs. It must not
           write to the store (the transaction holds the write lock until it
           commits), and nothing it starts may reach the caller's client
           before this returns; if it raises, nothing is stored.

        All or nothing: if any step raises, nothing at all is stored (no
        conversation, no end user row, no run, no entries). When this returns
        it is all durable. Raise ValueError, before writing, if an entry's
        ``run_id`` is not ``run.id``.
        """

    @abc.abstractmethod
    async def finish_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        stop_reason: str = "",
        error_code: str = "",
        error_message: str = "",
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        ledger: Sequence[LedgerRow] = (),
        entries: Sequence[NewEntry] = (),
        withdraw: bool = False,
        provider_session: str | None = None,
    ) -> Run:
        """Close a running run, in one write transaction, and return it.

        In that transaction: set the run's final ``status`` (not ``running``),
        ``finished_at`` (now) and outcome fields; add ``usage`` and
        ``cost_usd`` to the run's totals (a resumed run closes more than once:
        see :meth:`resume_run`); append ``entries`` (the run's remaining
        output, typically its final assistant text) to the run's conversation
        exactly as :meth:`append_entries` would with the run's provider and
        model; write the ``ledger`` rows; add ``usage``'s input + output tokens
        to the sandbox's count for the current UTC day (see
        ``max_tokens_per_day``). If the conversation was deleted while the run
        was running, ``entries`` are dropped and the run still closes.

        ``withdraw``: the run never produced an event, so as far as its caller
        knows it did not happen. Its ``request_id`` is released (a retry with
        it runs again), and if the conversation holds nothing of the run but
        its user message, that message is deleted (and the conversation too,
        when it holds nothing else: a first turn that never started leaves no
        empty conversation behind). A run that recorded more than its user
        message (a tool call) keeps everything, its request_id included.

        ``provider_session`` settles the turn's provider session in the same
        transaction (one store call per turn): None leaves the conversation's
        session of the run's provider alone; '' forgets it (as
        :meth:`~interlockd.store.base.provider_state.ProviderStateStore.clear_provider_session`);
        a session id records it (sealed, as ``set_provider_session`` does) as having
        seen every entry of the conversation, this call's included (``through_seq``
        the newest seq). Nothing is recorded when the conversation is gone.

        Raise NotFound for an unknown run, FailedPrecondition if it has already
        ended (a run is finished exactly once), ValueError for ``status``
        ``running`` or a ledger row or entry that is not this run's; in every
        such case nothing is written. Durable when this returns.
        """

    @abc.abstractmethod
    async def resume_run(self, sandbox_id: str, run_id: str, *, lease: Lease | None = None) -> Run:
        """Admit an ended run of this sandbox again, as ``running``, and return it.

        ``lease`` as for :meth:`begin_run`.

        Only a run that did not end on its own can resume: status
        ``interrupted`` (the daemon stopped under it) or ``cancelled`` (its
        caller went away); anything else raises FailedPrecondition. Admission is
        :meth:`begin_run`'s, in one write transaction: NotFound if the run,
        sandbox or conversation is gone, FailedPrecondition if the
        conversation has another turn running, ResourceExhausted for a quota.
        The run keeps its id, request_id, entries and totals; ``finished_at``
        and the error fields are cleared. Nothing is written when it raises.
        """

    @abc.abstractmethod
    async def get_run(self, sandbox_id: str, run_id: str) -> Run:
        """Return the run or raise NotFound if it is not this sandbox's."""

    @abc.abstractmethod
    async def find_run_by_request_id(self, sandbox_id: str, request_id: str) -> Run | None:
        """The run started with this idempotency key in this sandbox, if any."""

    @abc.abstractmethod
    async def read_run_entries(self, sandbox_id: str, run_id: str) -> list[WindowEntry]:
        """All window entries recorded by one run, in order (for replays)."""

    @abc.abstractmethod
    async def interrupt_running_runs(self) -> int:
        """Mark runs left ``running`` by a dead process as ``interrupted``; return how many.

        Called once at startup by a deployment whose store no other process
        shares (the embedded store's one daemon, or its worker supervisor
        before the workers start); processes that share a store use leases.
        """

    @abc.abstractmethod
    async def renew_leases(self, owner: str, expires_at: datetime) -> set[str]:
        """Extend every lease ``owner`` holds on a running run; the ids of those runs.

        A run ``owner`` believes it runs but that is missing here was taken
        over (:meth:`expire_leases` of another process) or ended.
        """

    @abc.abstractmethod
    async def expire_leases(self, now: datetime) -> list[Run]:
        """Mark running runs whose lease expired before ``now`` as ``interrupted``
        (error ABORTED, as :meth:`interrupt_running_runs`) and return them.

        Atomic per run: of several processes sweeping at once, each run is
        returned to exactly one. Runs without a lease are left alone.
        """

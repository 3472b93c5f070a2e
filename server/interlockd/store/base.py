"""The sandbox store: the one durable home of tenants, conversations, runs and money.

:class:`Store` is the seam; ``sqlite.py`` is the embedded implementation and a
PostgreSQL one follows with the same conformance suite (``tests/store/``).
Callers see only these dataclasses and methods: no SQL, no connection objects,
no dialect-specific behaviour. Everything that must hold across daemon replicas
(caps, one turn at a time per conversation) is decided inside one store call,
atomically, never in caller memory.

Conversation content and secrets go in as plaintext and come out as
plaintext; the store seals them with the sandbox's data key on the way in
(see ``crypto.py``). So do the identifiers a tenant chooses (end user ids,
request ids, labels): the store keeps them sealed or as keyed hashes, never
in clear, and gives them back as they were sent. The store knows nothing of
providers or gRPC: provider names, resource kinds, fingerprints and ids are
opaque strings to it.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from interlockd.vocabulary import Usage

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from contextlib import AbstractAsyncContextManager
    from datetime import datetime

EntryKind = Literal["user", "assistant", "tool_call", "tool_result", "summary"]
RunStatus = Literal["running", "finished", "failed", "cancelled", "interrupted"]
T = TypeVar("T")

#: A sandbox secret's name: 1-64 characters of ``[a-z0-9_.-]``.
SECRET_NAME = re.compile(r"[a-z0-9_.-]{1,64}")


def check_secret_name(name: str) -> str:
    """Return ``name`` if it is a valid secret name (:data:`SECRET_NAME`), else raise ValueError."""
    if not SECRET_NAME.fullmatch(name):
        raise ValueError(f"secret name must be 1-64 characters of [a-z0-9_.-], got {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class Quotas:
    """Per-sandbox limits, read and enforced by :meth:`Store.begin_run`. Zero means unlimited."""

    max_concurrent_runs: int = 0
    max_concurrent_runs_per_end_user: int = 0
    max_tokens_per_day: int = 0


@dataclass(frozen=True, slots=True)
class Sandbox:
    id: str
    name: str
    created_at: datetime
    quotas: Quotas


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A sandbox API key. Only its hash is stored; ``prefix`` is shown to humans."""

    id: str
    sandbox_id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """One end user's session in a sandbox; its window lives in entries."""

    id: str
    sandbox_id: str
    end_user_id: str
    created_at: datetime
    updated_at: datetime
    title: str = ""  # sealed at rest
    last_provider: str = ""
    last_model: str = ""
    entry_count: int = 0


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A window entry to append. ``text`` is sealed at rest."""

    kind: EntryKind
    text: str
    run_id: str
    tokens: int  # estimated token count of ``text`` (context budgeting)
    provider: str = ""
    model: str = ""
    tool_call_id: str = ""
    tool_name: str = ""
    is_error: bool = False
    #: The integration a tool result came from ("" for anything else).
    source_id: str = ""


@dataclass(frozen=True, slots=True)
class WindowEntry:
    """A stored window entry, opened."""

    conversation_id: str
    seq: int  # strictly increasing within the conversation, starting at 1
    kind: EntryKind
    text: str
    run_id: str
    tokens: int
    created_at: datetime
    provider: str = ""
    model: str = ""
    tool_call_id: str = ""
    tool_name: str = ""
    is_error: bool = False
    source_id: str = ""


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


# ---- ledger queries: what the Ledger service reads back ------------------------------

LedgerKind = Literal["tokens", "compute"]
#: What :meth:`Store.summarize_usage` adds up by; ``day`` is the UTC day a row was written.
UsageGroup = Literal["end_user", "agent", "run", "provider", "day"]


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    """Which ledger rows a listing or a summary covers: every field set must match.

    Empty strings and None match everything. ``since`` is inclusive, ``until``
    exclusive; both compare with the time a row was written. ``provider`` matches
    a row's own provider or its run's agent provider (so a Hermes run's compute
    rows on ``local`` match both "hermes" and "local").
    """

    run_id: str = ""
    end_user_id: str = ""
    agent_id: str = ""
    provider: str = ""
    kind: LedgerKind | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A ledger row as stored: the row and when it was written (its run's end).

    ``agent_provider`` and ``run_failed`` are read from the row's run: its agent
    provider (a compute row's ``provider`` is the compute provider) and whether
    it ended failed.
    """

    row: LedgerRow
    created_at: datetime
    agent_provider: str = ""
    run_failed: bool = False


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Ledger rows added up: one group of a summary (``key``), or all of them (``key`` "")."""

    key: str
    token_cost_usd: float
    compute_cost_usd: float
    usage: Usage  # tokens of the rows (compute rows carry none)
    compute_seconds: float  # of the compute rows
    run_count: int  # distinct runs
    entry_count: int  # rows
    failed_run_count: int = 0  # distinct runs among them that ended failed

    @property
    def total_cost_usd(self) -> float:
        return self.token_cost_usd + self.compute_cost_usd


# ---- end of ledger queries -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchHit:
    conversation_id: str
    entry: WindowEntry


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str = ""  # "" = no more


@dataclass(frozen=True, slots=True)
class ProviderSession:
    """A managed runtime's own session for a conversation (e.g. ``sesn_...``).

    ``through_seq`` is the seq of the last window entry that session has seen
    (0: none); entries after it ran elsewhere and must be handed over before
    the session is reused. ``session_id`` is sealed at rest.
    """

    provider: str
    session_id: str
    through_seq: int
    updated_at: datetime


IntegrationKind = Literal["oauth", "mcp", "custom"]
IntegrationStatus = Literal["active", "broken", "disconnected"]
FlowStatus = Literal["pending", "connected", "failed", "expired"]


@dataclass(frozen=True, slots=True)
class Integration:
    """A data source of a sandbox, connected for all of it or for one end user."""

    id: str
    sandbox_id: str
    kind: IntegrationKind
    app: str
    end_user_id: str  # "" = the whole sandbox
    status: IntegrationStatus
    status_reason: str
    config: dict[str, Any]  # not secret, but sealed at rest (account logins are personal)
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConnectFlow:
    """An OAuth connect flow, from Connect to its callback."""

    id: str
    sandbox_id: str
    app: str
    end_user_id: str  # who started it
    for_end_user: bool  # connect for that end user (else for the whole sandbox)
    status: FlowStatus
    reason: str
    integration_id: str  # set once connected
    created_at: datetime
    expires_at: datetime
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SavedAgent:
    """A saved agent: what a run by its slug gets."""

    sandbox_id: str
    slug: str
    settings: dict[str, Any]  # name, system, provider, model, tools, max_output_tokens, compute...
    created_at: datetime
    updated_at: datetime


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


ComputeStatus = Literal["creating", "running", "suspended", "archived", "destroyed", "failed"]


@dataclass(frozen=True, slots=True)
class ComputeSessionRecord:
    """The router's record of one compute session (see migration 0006)."""

    id: str
    sandbox_id: str
    end_user_id: str
    agent_key: str  # the saved agent's slug, or "<provider>/<model>"
    runtime: str  # the agent provider running in it ("hermes")
    provider: str  # the compute provider ("local", "daytona", "fly_sprites")
    external_id: str  # the provider's id; "" until created
    status: ComputeStatus
    region: str
    endpoint: str  # base URL while running, without credentials
    spec_fingerprint: str
    api_key: str  # the runtime server's key (sealed at rest)
    mcp_token: str  # the session's MCP bearer token (sealed at rest)
    tags: dict[str, str]  # user_id, sandbox_id, agent_id, run_id (the latest)
    active_seconds: float
    created_at: datetime
    updated_at: datetime
    last_active_at: datetime


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one run's runtime was placed, and why."""

    run_id: str
    sandbox_id: str
    compute_session_id: str
    provider: str
    policy: str
    reason: str
    #: Every provider considered: {"provider", "verdict" ("chosen" | "eligible" |
    #: "skipped"), "note"}.
    candidates: list[dict[str, str]]
    ready_seconds: float
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RotationReport:
    master_key_id: str
    data_keys_rewrapped: int
    sandboxes_with_new_data_key: int


class Store(abc.ABC):
    """Durable, encrypted storage of sandboxes and everything inside them.

    All methods are coroutine-safe: many runs call them concurrently. Methods
    addressed by ``sandbox_id`` never read or write another sandbox's rows;
    methods addressed by ``(sandbox_id, end_user_id, ...)`` never return
    another end user's rows (they raise :class:`~interlockd.errors.NotFound`,
    revealing nothing). Timestamps are timezone-aware UTC.
    """

    # ---- lifecycle -----------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending numbered migrations. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and disconnect. Idempotent."""

    # ---- operator and sandbox keys -------------------------------------------

    @abc.abstractmethod
    async def add_operator_key(self, key_hash: str) -> None:
        """Register an operator key by its hash (sandbox administration)."""

    @abc.abstractmethod
    async def has_operator_key(self) -> bool:
        """Whether any operator key exists (false on a fresh store)."""

    @abc.abstractmethod
    async def is_operator_key(self, key_hash: str) -> bool:
        """Whether ``key_hash`` is a registered operator key."""

    # ---- sandboxes -----------------------------------------------------------

    @abc.abstractmethod
    async def create_sandbox(self, name: str, quotas: Quotas) -> Sandbox:
        """Create a sandbox with a fresh data key wrapped by the current master key.

        Raise AlreadyExists if a live sandbox already has ``name``.
        """

    @abc.abstractmethod
    async def get_sandbox(self, sandbox_id: str) -> Sandbox:
        """Return the sandbox or raise NotFound."""

    @abc.abstractmethod
    async def list_sandboxes(self, page_size: int, page_token: str) -> Page[Sandbox]:
        """Sandboxes in creation order, paged by an opaque token."""

    @abc.abstractmethod
    async def set_quotas(self, sandbox_id: str, quotas: Quotas) -> Sandbox:
        """Replace the sandbox's quotas (every later :meth:`Store.begin_run` admits by
        them; running runs are left alone); raise NotFound."""

    @abc.abstractmethod
    async def delete_sandbox(self, sandbox_id: str) -> None:
        """Delete the sandbox and everything in it, its data keys included
        (so any copy of its sealed values left elsewhere can never be opened).
        Raise NotFound."""

    # ---- API keys ------------------------------------------------------------

    @abc.abstractmethod
    async def create_api_key(
        self, sandbox_id: str, name: str, key_hash: str, prefix: str
    ) -> ApiKey:
        """Store a new key's hash for the sandbox; raise NotFound for the sandbox."""

    @abc.abstractmethod
    async def list_api_keys(self, sandbox_id: str) -> list[ApiKey]:
        """All keys of the sandbox, revoked ones included, in creation order."""

    @abc.abstractmethod
    async def revoke_api_key(self, sandbox_id: str, key_id: str) -> ApiKey:
        """Mark the key revoked (idempotent); NotFound if it is not this sandbox's."""

    @abc.abstractmethod
    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The live (not revoked) key with this hash, or None."""

    # ---- conversations and the window ----------------------------------------

    @abc.abstractmethod
    async def create_conversation(self, sandbox_id: str, end_user_id: str) -> Conversation:
        """Start a new, empty conversation with a fresh ``conv_`` id for the end user.

        Creates the end user on first sight. Raise NotFound for an unknown
        sandbox. A turn that starts a conversation uses ``begin_run(...,
        create_conversation=True)`` instead, which does the same inside its
        admission transaction.
        """

    @abc.abstractmethod
    async def get_conversation(
        self, sandbox_id: str, end_user_id: str, conversation_id: str
    ) -> Conversation:
        """Return it, or raise NotFound if it is not this end user's in this sandbox."""

    @abc.abstractmethod
    async def list_conversations(
        self, sandbox_id: str, end_user_id: str, page_size: int, page_token: str
    ) -> Page[Conversation]:
        """The end user's conversations, most recently updated first."""

    @abc.abstractmethod
    async def set_conversation_title(
        self, sandbox_id: str, end_user_id: str, conversation_id: str, title: str
    ) -> Conversation:
        """Replace the title (sealed at rest); NotFound as for :meth:`get_conversation`.

        ``updated_at`` is left alone: it tracks the window, not the metadata.
        """

    @abc.abstractmethod
    async def delete_conversation(
        self, sandbox_id: str, end_user_id: str, conversation_id: str
    ) -> None:
        """Delete the conversation, its entries, its search index rows and its provider
        sessions; NotFound otherwise."""

    @abc.abstractmethod
    async def append_entries(
        self,
        sandbox_id: str,
        conversation_id: str,
        entries: Sequence[NewEntry],
        *,
        provider: str = "",
        model: str = "",
    ) -> list[int]:
        """Append entries atomically (all or none) and return their seqs.

        Seqs continue the conversation's (``entry_count + 1``, ...), in the
        order given; concurrent appends never share or skip one. Text is
        sealed; the search index gets blind terms of user/assistant/tool text
        (not summaries). The conversation's ``updated_at`` (to now),
        ``entry_count`` and, when non-empty, ``last_provider``/``last_model``
        are updated in the same transaction. Raise NotFound if the
        conversation is not in the sandbox. Durable when this returns.
        :meth:`begin_run` and :meth:`finish_run` append the same way inside
        their own transactions.
        """

    @abc.abstractmethod
    async def read_entries(
        self,
        sandbox_id: str,
        conversation_id: str,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[WindowEntry]:
        """A page of up to ``limit`` entries with ``after_seq < seq < before_seq``.

        Both bounds are exclusive and optional. ``newest_first`` takes the page
        from the newest end of that range, highest seq first (walking back
        through the window); otherwise from the oldest end, lowest seq first
        (reading forward). Raise NotFound if the conversation is not in the
        sandbox. Cost is bounded by ``limit``, never by the conversation's length.
        """

    @abc.abstractmethod
    async def find_tool_result(
        self, sandbox_id: str, conversation_id: str, tool_call_id: str
    ) -> WindowEntry | None:
        """The stored ``tool_result`` entry answering ``tool_call_id``, if any."""

    @abc.abstractmethod
    async def find_tool_call(
        self, sandbox_id: str, conversation_id: str, tool_call_id: str
    ) -> WindowEntry | None:
        """The stored ``tool_call`` entry of ``tool_call_id``, if any (the call was started)."""

    @abc.abstractmethod
    async def search_entries(
        self,
        sandbox_id: str,
        end_user_id: str,
        query: str,
        *,
        limit: int = 10,
        exclude_conversation_id: str = "",
    ) -> list[SearchHit]:
        """Full-text search over the end user's entries (all words must match), best first.

        Only this end user's conversations in this sandbox are searched. The
        index holds keyed hashes of words, never the words themselves.
        """

    # ---- runs, admission and the ledger ---------------------------------------

    @abc.abstractmethod
    async def begin_run(
        self,
        run: NewRun,
        *,
        create_conversation: bool = False,
        entries: Sequence[NewEntry] = (),
    ) -> Run:
        """Admit and record a new running run, in one write transaction that decides everything.

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

        All or nothing: if any step raises, nothing at all is stored (no
        conversation, no end user row, no run, no entries). When this returns
        it is all durable, so the user message is on disk before any provider
        sees it. Raise ValueError, before writing, if an entry's ``run_id`` is
        not ``run.id``.
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

        Raise NotFound for an unknown run, FailedPrecondition if it has already
        ended (a run is finished exactly once), ValueError for ``status``
        ``running`` or a ledger row or entry that is not this run's; in every
        such case nothing is written. Durable when this returns.
        """

    @abc.abstractmethod
    async def resume_run(self, sandbox_id: str, run_id: str) -> Run:
        """Admit an ended run of this sandbox again, as ``running``, and return it.

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

        Called once at startup by a single-process deployment.
        """

    @abc.abstractmethod
    async def list_ledger(self, sandbox_id: str, run_id: str = "") -> list[LedgerRow]:
        """Ledger rows of the sandbox (of one run when ``run_id`` is given)."""

    # ---- ledger queries (the Ledger service) -----------------------------------

    @abc.abstractmethod
    async def list_ledger_entries(
        self, sandbox_id: str, where: LedgerFilter, page_size: int, page_token: str
    ) -> Page[LedgerEntry]:
        """The sandbox's ledger rows matching ``where``, newest first, paged by an opaque token.

        Newest first means by the time a row was written, descending; rows
        written at the same microsecond come latest-written first. Paging is
        by position (keyset), so rows written while a client pages never
        shift or repeat a page. Raise InvalidArgument naming ``page_token``
        for a token that is not from this listing, ValueError for a
        ``page_size`` below 1. Never returns another sandbox's rows; an
        unknown sandbox simply has none.
        """

    @abc.abstractmethod
    async def summarize_usage(
        self,
        sandbox_id: str,
        group_by: UsageGroup,
        where: LedgerFilter,
        page_size: int,
        page_token: str,
    ) -> Page[UsageTotals]:
        """The sandbox's ledger rows matching ``where``, added up per group, by key ascending.

        The key is the row's ``end_user_id``, ``agent_id`` ('' for runs of no
        saved agent), ``run_id`` or ``provider``, or for ``day`` the UTC date
        the row was written as ``YYYY-MM-DD`` (so keys sort chronologically).
        Only groups with at least one matching row appear. Grouping and
        summing happen in the database, in one query per page, never by
        loading rows into the caller. Paging and errors as for
        :meth:`list_ledger_entries`.
        """

    @abc.abstractmethod
    async def usage_total(self, sandbox_id: str, where: LedgerFilter) -> UsageTotals:
        """Every ledger row of the sandbox matching ``where``, added up (``key`` ''); all
        zeros when none match."""

    # ---- end of ledger queries ---------------------------------------------------

    # ---- provider state: sessions, resources, secrets --------------------------

    @abc.abstractmethod
    async def get_provider_session(
        self, sandbox_id: str, conversation_id: str, provider: str
    ) -> ProviderSession | None:
        """The provider's session for the conversation, or None.

        None also when the conversation is not in this sandbox (or does not
        exist): never another sandbox's session, and nothing is revealed.
        """

    @abc.abstractmethod
    async def set_provider_session(
        self,
        sandbox_id: str,
        conversation_id: str,
        provider: str,
        session_id: str,
        through_seq: int,
    ) -> ProviderSession:
        """Record (insert or replace) the provider's session for the conversation; return it.

        One session per (conversation, provider); ``updated_at`` becomes now.
        ``session_id`` is sealed with the sandbox's current data key, bound to
        (sandbox, conversation, provider), since it leads to conversation
        content at the provider. Raise NotFound if the conversation is not in
        this sandbox, ValueError for a negative ``through_seq``. Sessions are
        deleted with their conversation (and so with the sandbox).
        """

    @abc.abstractmethod
    async def clear_provider_session(
        self, sandbox_id: str, conversation_id: str, provider: str
    ) -> None:
        """Forget the provider's session for the conversation (e.g. the provider
        answered 404 for it). Idempotent: nothing to clear is not an error."""

    @abc.abstractmethod
    async def get_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str
    ) -> str | None:
        """The id of the resource (an agent, an environment, ...) created at
        ``provider`` for the sandbox under ``(kind, fingerprint)``, or None."""

    @abc.abstractmethod
    async def put_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str, resource_id: str
    ) -> str:
        """Record ``resource_id`` under the key unless one is recorded already; return the
        stored id.

        If a row exists (another coroutine or replica won the race), it is
        kept and *its* id is returned: the caller uses that one (and may
        dispose of its own). Raise NotFound for an unknown sandbox. Rows are
        deleted with the sandbox.
        """

    @abc.abstractmethod
    async def delete_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str, resource_id: str
    ) -> None:
        """Forget the recorded resource if its id is still ``resource_id`` (the provider
        answered 404 for it). A row that another caller already replaced is kept.
        Idempotent."""

    @abc.abstractmethod
    def provider_resource_lock(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str
    ) -> AbstractAsyncContextManager[None]:
        """A lock to hold while checking the resource cache and creating the resource::

            async with store.provider_resource_lock(sandbox_id, provider, kind, fp):
                resource_id = await store.get_provider_resource(sandbox_id, provider, kind, fp)
                if resource_id is None:
                    resource_id = await store.put_provider_resource(
                        sandbox_id, provider, kind, fp, await create_at_provider()
                    )

        Mutual exclusion among all holders of the same key, across every
        process sharing the database (PostgreSQL: ``pg_advisory_xact_lock`` on
        a hash of the key, held by a transaction open for the block), so
        concurrent runs create one resource, not one each. Different keys never
        wait for each other (a hash collision may make them, rarely). Not
        reentrant: do not take the same key again inside the block. Keep the
        block to the check and the create (never a whole turn). The lock does
        not check that the sandbox exists; :meth:`put_provider_resource` does.
        """

    @abc.abstractmethod
    async def set_secret(self, sandbox_id: str, name: str, value: str) -> None:
        """Store (insert or replace) the sandbox's secret ``name`` (e.g. its own provider
        API key).

        The value is sealed with the sandbox's current data key, bound to
        (sandbox, name), so a copy in another sandbox's or name's row fails to
        open; it stays readable after :meth:`rotate_keys`. Raise ValueError
        for an invalid name (see :func:`check_secret_name`), NotFound for an
        unknown sandbox. Secrets are deleted with the sandbox.
        """

    @abc.abstractmethod
    async def get_secret(self, sandbox_id: str, name: str) -> str | None:
        """The secret's value, or None if the sandbox has no such secret (or does not
        exist). ValueError for an invalid name."""

    @abc.abstractmethod
    async def delete_secret(self, sandbox_id: str, name: str) -> None:
        """Delete the secret. Idempotent: an absent secret (or sandbox) is not an error.
        ValueError for an invalid name."""

    @abc.abstractmethod
    async def list_secret_names(self, sandbox_id: str) -> list[str]:
        """Names of the sandbox's secrets, sorted; never their values. [] for an
        unknown sandbox."""

    # ---- integrations -----------------------------------------------------------

    @abc.abstractmethod
    async def create_integration(
        self,
        sandbox_id: str,
        *,
        kind: IntegrationKind,
        app: str,
        end_user_id: str,
        config: dict[str, Any],
        credentials: dict[str, Any],
    ) -> Integration:
        """Record a new active connection; return it.

        A live (active or broken) connection of the same (app, end user) is
        archived as disconnected in the same transaction: connecting again
        replaces it. ``config`` and ``credentials`` are sealed, bound to the
        row. NotFound for an unknown sandbox.
        """

    @abc.abstractmethod
    async def get_integration(self, sandbox_id: str, integration_id: str) -> Integration:
        """The connection; NotFound unless it is in this sandbox."""

    @abc.abstractmethod
    async def list_integrations(
        self, sandbox_id: str, *, end_user_id: str | None = None, include_disconnected: bool = False
    ) -> list[Integration]:
        """Connections of the sandbox, oldest first.

        ``end_user_id`` given: that end user's and the sandbox-wide ones (what
        a run of theirs may use); None: all of them.
        """

    @abc.abstractmethod
    async def read_integration_credentials(
        self, sandbox_id: str, integration_id: str
    ) -> dict[str, Any]:
        """The connection's credentials, opened. NotFound unless in this sandbox."""

    @abc.abstractmethod
    async def replace_integration_credentials(
        self, sandbox_id: str, integration_id: str, credentials: dict[str, Any]
    ) -> None:
        """Store new credentials (e.g. a rotated token pair) in one write."""

    @abc.abstractmethod
    async def set_integration_status(
        self, sandbox_id: str, integration_id: str, status: IntegrationStatus, reason: str = ""
    ) -> Integration:
        """Change the connection's status (with a reason for broken/disconnected)."""

    @abc.abstractmethod
    async def touch_integration(self, sandbox_id: str, integration_id: str) -> None:
        """Record that the connection was just used (last_used_at)."""

    @abc.abstractmethod
    def integration_lock(
        self, sandbox_id: str, integration_id: str
    ) -> AbstractAsyncContextManager[None]:
        """A lock per connection for read-refresh-replace of its credentials.

        Same guarantees as :meth:`provider_resource_lock` (PostgreSQL: an
        advisory lock across replicas). Not reentrant.
        """

    @abc.abstractmethod
    async def create_connect_flow(
        self,
        sandbox_id: str,
        *,
        app: str,
        end_user_id: str,
        for_end_user: bool,
        state_hash: str,
        code_verifier: str,
        expires_at: datetime,
    ) -> ConnectFlow:
        """Record a pending connect flow. The verifier is sealed; only the state's
        hash is kept. NotFound for an unknown sandbox."""

    @abc.abstractmethod
    async def get_connect_flow(self, sandbox_id: str, flow_id: str) -> ConnectFlow:
        """The flow; NotFound unless it is in this sandbox."""

    @abc.abstractmethod
    async def find_connect_flow(self, state_hash: str) -> tuple[ConnectFlow, str] | None:
        """The flow whose state hashes to ``state_hash`` and its code verifier, or None."""

    @abc.abstractmethod
    async def finish_connect_flow(
        self,
        sandbox_id: str,
        flow_id: str,
        status: FlowStatus,
        *,
        reason: str = "",
        integration_id: str = "",
    ) -> ConnectFlow:
        """Move a pending flow to its end state and return it.

        Only a pending flow moves: if it already ended (a second callback, a
        race), it is returned unchanged and the caller must not act on it.
        """

    # ---- saved agents ----------------------------------------------------------

    @abc.abstractmethod
    async def put_agent(self, sandbox_id: str, slug: str, settings: dict[str, Any]) -> SavedAgent:
        """Create or replace the sandbox's agent ``slug`` (settings sealed). NotFound for an
        unknown sandbox."""

    @abc.abstractmethod
    async def get_agent(self, sandbox_id: str, slug: str) -> SavedAgent:
        """The agent; NotFound unless it is in this sandbox."""

    @abc.abstractmethod
    async def list_agents(self, sandbox_id: str) -> list[SavedAgent]:
        """The sandbox's agents by slug."""

    @abc.abstractmethod
    async def delete_agent(self, sandbox_id: str, slug: str) -> None:
        """Delete the agent; NotFound if there is none."""

    # ---- kill switches --------------------------------------------------------

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

    # ---- compute sessions and placements ---------------------------------------

    @abc.abstractmethod
    async def create_compute_session(
        self,
        *,
        session_id: str,
        sandbox_id: str,
        end_user_id: str,
        agent_key: str,
        runtime: str,
        provider: str,
        region: str,
        spec_fingerprint: str,
        api_key: str,
        mcp_token: str,
        tags: Mapping[str, str],
        now: datetime,
    ) -> ComputeSessionRecord:
        """Record a new session ``session_id`` (a ``cs_`` id the caller made, so specs can
        name it before it is stored) of the key, status ``creating``, secrets sealed.

        AlreadyExists when the key has a session that is neither destroyed nor failed; NotFound
        for an unknown sandbox."""

    @abc.abstractmethod
    async def get_compute_session(self, session_id: str) -> ComputeSessionRecord:
        """The session (any sandbox: callers check the tenant); NotFound if none."""

    @abc.abstractmethod
    async def find_compute_session(
        self, sandbox_id: str, end_user_id: str, agent_key: str
    ) -> ComputeSessionRecord | None:
        """The key's session that is neither destroyed nor failed, if any."""

    @abc.abstractmethod
    async def update_compute_session(
        self,
        session_id: str,
        *,
        status: ComputeStatus | None = None,
        external_id: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        tags: Mapping[str, str] | None = None,
        add_active_seconds: float = 0.0,
        last_active_at: datetime | None = None,
    ) -> ComputeSessionRecord:
        """Change the given fields (``add_active_seconds`` adds); return the session.
        NotFound if there is none."""

    @abc.abstractmethod
    async def list_compute_sessions(
        self,
        sandbox_id: str | None = None,
        *,
        end_user_id: str = "",
        agent_key: str = "",
        provider: str = "",
        statuses: Sequence[ComputeStatus] = (),
        idle_since: datetime | None = None,
    ) -> list[ComputeSessionRecord]:
        """Sessions, oldest first: of one sandbox (or all with None), narrowed by the
        given filters; ``idle_since`` keeps those last active at or before it."""

    @abc.abstractmethod
    async def record_placement(self, placement: Placement) -> None:
        """Store why ``placement.run_id`` went where it did (once per run)."""

    @abc.abstractmethod
    async def get_placement(self, run_id: str) -> Placement:
        """The run's placement (any sandbox: callers check the tenant); NotFound if
        the run was not placed on compute."""

    # ---- keys ----------------------------------------------------------------

    @abc.abstractmethod
    async def rotate_keys(self, *, new_data_keys: bool = True) -> RotationReport:
        """Rewrap every data key with the current master key and, if asked,
        give every sandbox a new data key for new writes. Old rows stay
        readable: each sealed value records the id of the key that sealed it."""

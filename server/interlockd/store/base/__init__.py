"""The sandbox store: the one durable home of tenants, conversations, runs and money.

The seam is one interface per aggregate, each in its own module with its
records and contract docstrings:

- ``tenancy``: sandboxes, quotas, operator and API keys, secrets, key rotation;
- ``conversations``: conversations, their window of entries, the search index;
- ``tool_calls``: lookups of a conversation's tool calls and results;
- ``runs``: admission, a run from begin to its settlement, its ledger rows;
- ``ledger``: the ledger read back (listings, summaries);
- ``provider_state``: provider sessions and provider resources;
- ``integrations``: connections, their credentials, connect flows;
- ``agents``: saved agents; ``pauses``: the kill switches;
- ``compute``: compute sessions and run placements;
- ``budgets``: spend budgets, reserved at admission and settled at a run's end;
- ``tool_grants``: run tokens by hash, for the processes that did not open them.

:class:`Store` is their composition, implemented whole by ``sql/`` over two
engines (``sqlite/``, the embedded one; ``postgres/``, shared by replicas),
both held to one conformance suite, ``tests/store/conformance/``. A consumer may take only the
interface it uses. Callers see only these dataclasses and methods: no SQL, no
connection objects, no dialect-specific behaviour. Everything that must hold
across daemon replicas (caps, one turn at a time per conversation) is decided
inside one store call, atomically, never in caller memory.

Conversation content and secrets go in as plaintext and come out as
plaintext; the store seals them with the sandbox's data key on the way in
(see ``crypto.py``). So do the identifiers a tenant chooses (end user ids,
request ids, labels): the store keeps them sealed or as keyed hashes, never
in clear, and gives them back as they were sent. The store knows nothing of
providers or gRPC: provider names, resource kinds, fingerprints and ids are
opaque strings to it.
"""

from __future__ import annotations

from interlockd.store.base.agents import (
    AgentStore,
    SavedAgent,
)
from interlockd.store.base.budgets import (
    BudgetPeriod,
    BudgetScope,
    BudgetStatus,
    BudgetStore,
    SpendLimits,
)
from interlockd.store.base.compute import (
    ComputeSessionRecord,
    ComputeStatus,
    ComputeStore,
    Placement,
)
from interlockd.store.base.conversations import (
    Conversation,
    ConversationStore,
    EntryKind,
    NewEntry,
    SearchHit,
    WindowChanges,
    WindowEntry,
    WindowVersion,
)
from interlockd.store.base.integrations import (
    ConnectFlow,
    FlowStatus,
    Integration,
    IntegrationKind,
    IntegrationStatus,
    IntegrationStore,
)
from interlockd.store.base.ledger import (
    LedgerEntry,
    LedgerFilter,
    LedgerKind,
    LedgerStore,
    UsageGroup,
    UsageTotals,
)
from interlockd.store.base.lifecycle import (
    StoreLifecycle,
)
from interlockd.store.base.paging import Page
from interlockd.store.base.pauses import (
    Pause,
    PauseScope,
    PauseStore,
)
from interlockd.store.base.provider_state import (
    ProviderSession,
    ProviderStateStore,
)
from interlockd.store.base.runs import (
    Lease,
    LedgerRow,
    NewRun,
    Run,
    RunStatus,
    RunStore,
)
from interlockd.store.base.tenancy import (
    SECRET_NAME,
    ApiKey,
    Quotas,
    RotationReport,
    Sandbox,
    TenancyStore,
    check_secret_name,
)
from interlockd.store.base.tool_calls import (
    ToolCallStore,
)
from interlockd.store.base.tool_grants import (
    GrantKind,
    StoredGrant,
    ToolGrantStore,
)

__all__ = [
    "SECRET_NAME",
    "AgentStore",
    "ApiKey",
    "BudgetPeriod",
    "BudgetScope",
    "BudgetStatus",
    "BudgetStore",
    "ComputeSessionRecord",
    "ComputeStatus",
    "ComputeStore",
    "ConnectFlow",
    "Conversation",
    "ConversationStore",
    "EntryKind",
    "FlowStatus",
    "GrantKind",
    "Integration",
    "IntegrationKind",
    "IntegrationStatus",
    "IntegrationStore",
    "Lease",
    "LedgerEntry",
    "LedgerFilter",
    "LedgerKind",
    "LedgerRow",
    "LedgerStore",
    "NewEntry",
    "NewRun",
    "Page",
    "Pause",
    "PauseScope",
    "PauseStore",
    "Placement",
    "ProviderSession",
    "ProviderStateStore",
    "Quotas",
    "RotationReport",
    "Run",
    "RunStatus",
    "RunStore",
    "Sandbox",
    "SavedAgent",
    "SearchHit",
    "SpendLimits",
    "Store",
    "StoreLifecycle",
    "StoredGrant",
    "TenancyStore",
    "ToolCallStore",
    "ToolGrantStore",
    "UsageGroup",
    "UsageTotals",
    "WindowChanges",
    "WindowEntry",
    "WindowVersion",
    "check_secret_name",
]


class Store(
    StoreLifecycle,
    TenancyStore,
    ConversationStore,
    ToolCallStore,
    RunStore,
    LedgerStore,
    ProviderStateStore,
    IntegrationStore,
    AgentStore,
    PauseStore,
    ComputeStore,
    BudgetStore,
    ToolGrantStore,
):
    """Durable, encrypted storage of sandboxes and everything inside them: every aggregate.

    All methods are coroutine-safe: many runs call them concurrently. Methods
    addressed by ``sandbox_id`` never read or write another sandbox's rows;
    methods addressed by ``(sandbox_id, end_user_id, ...)`` never return
    another end user's rows (they raise :class:`~interlockd.errors.NotFound`,
    revealing nothing). Timestamps are timezone-aware UTC.
    """

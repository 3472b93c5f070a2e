"""Every table's mapping to its record (see ``rows.py``): what is sealed, blinded, a time.

One declaration per table; the column lists the queries select come from here,
and so does the identity each sealed value is bound to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interlockd.store.base import (
    ApiKey,
    ComputeSessionRecord,
    ConnectFlow,
    Conversation,
    Integration,
    LedgerRow,
    NewEntry,
    Pause,
    Placement,
    ProviderSession,
    Quotas,
    Run,
    Sandbox,
    SavedAgent,
    SpendLimits,
    UsageTotals,
    WindowEntry,
)
from interlockd.store.crypto import WrappedKey
from interlockd.store.sql.rows import (
    BOOL,
    END_USER,
    JSON,
    TIME,
    TIME_OR_NONE,
    Col,
    Table,
    nested,
    sealed,
)
from interlockd.vocabulary import Usage

if TYPE_CHECKING:
    from collections.abc import Mapping


def entry_row(r: Mapping[str, Any]) -> str:
    """The row identity an entry's text is sealed to."""
    return f"{r['conversation_id']}/{r['seq']}"


def session_row(r: Mapping[str, Any]) -> str:
    """The row identity a provider session id is sealed to."""
    return f"{r['conversation_id']}/{r['provider']}"


SANDBOXES = Table("sandboxes", Sandbox, created_at=TIME, quotas=nested(Quotas))
API_KEYS = Table("api_keys", ApiKey, created_at=TIME, revoked_at=TIME_OR_NONE)
WRAPPED_KEYS = Table("data_keys", WrappedKey, wrapped=Col(column="wrapped_key"), is_current=BOOL)
#: The end user is the caller's own id (given to load), never opened from the row.
CONVERSATIONS = Table(
    "conversations", Conversation, created_at=TIME, updated_at=TIME, title=sealed(empty="")
)
ENTRIES = Table(
    "entries", WindowEntry, row=entry_row, text=sealed(), created_at=TIME, is_error=BOOL
)
NEW_ENTRIES = Table("entries", NewEntry, row=entry_row, text=sealed(), is_error=BOOL)
RUNS = Table(
    "runs",
    Run,
    end_user_id=END_USER,
    request_id=sealed(empty=""),
    labels=sealed(json=True, empty={}),
    started_at=TIME,
    finished_at=TIME_OR_NONE,
    usage=nested(Usage),
)
LEDGER = Table("ledger", LedgerRow, end_user_id=END_USER, usage=nested(Usage))
USAGE_TOTALS = Table("ledger", UsageTotals, usage=nested(Usage))
PROVIDER_SESSIONS = Table(
    "provider_sessions", ProviderSession, row=session_row, session_id=sealed(), updated_at=TIME
)
INTEGRATIONS = Table(
    "integrations",
    Integration,
    end_user_id=END_USER,
    config=sealed(json=True),
    created_at=TIME,
    updated_at=TIME,
    last_used_at=TIME_OR_NONE,
)
FLOWS = Table(
    "connect_flows",
    ConnectFlow,
    end_user_id=END_USER,
    for_end_user=BOOL,
    created_at=TIME,
    expires_at=TIME,
    finished_at=TIME_OR_NONE,
)
AGENTS = Table(
    "agents",
    SavedAgent,
    row=lambda r: str(r["slug"]),
    settings=sealed(json=True),
    created_at=TIME,
    updated_at=TIME,
    budget=nested(SpendLimits),
)
PAUSES = Table("pauses", Pause, created_at=TIME)
COMPUTE_SESSIONS = Table(
    "compute_sessions",
    ComputeSessionRecord,
    end_user_id=END_USER,
    api_key=sealed("secrets_sealed", seal_as="secrets", part="api_key"),
    mcp_token=sealed("secrets_sealed", seal_as="secrets", part="mcp_token"),
    tags=sealed(json=True, empty={}),
    created_at=TIME,
    updated_at=TIME,
    last_active_at=TIME,
)
PLACEMENTS = Table("placements", Placement, candidates=JSON, created_at=TIME)

#: The entry columns, of ``entries e`` in a join.
ENTRY_COLUMNS_OF_E = ", ".join(f"e.{column}" for column in ENTRIES.columns.split(", "))

"""The store's aggregates in SQL, shared by the SQLite and PostgreSQL engines.

One module per aggregate (``tenancy``, ``conversations``, ``tool_calls``,
``runs``, ``ledger``, ``provider_state``, ``integrations``, ``agents``,
``pauses``, ``compute``, ``budgets``) holds its SQL; ``rows.py`` is the one mapping between
rows and the records of ``store/base`` (sealing and opening included) and
``tables.py`` each table's declaration of it; ``core.py`` is what they stand
on (reads, write transactions, the sandboxes' keys, the dialect seam).
:class:`SqlStore` composes them; an engine completes it (``store/sqlite``,
``store/postgres``). Keys and the cipher belong to ``crypto.py``; this
package only moves wrapped keys and sealed bytes in and out of rows and never
writes conversation content, titles or search words in clear.

Tenant-chosen identifiers. An end user id or a request id is stored as its
blind id (``SandboxKeys.blind_id``, a keyed hash), which equality lookups,
unique indexes, admission counts and GROUP BY use as they would the id
itself; labels and compute tags are sealed. An end user's own id is sealed
once, in its ``end_users`` row; a row naming the end user is read with that
sealed copy (``end_user_sealed``) and opened, while calls addressed by an end
user give back the caller's own id. A copied database names no end user,
request or label.

Atomicity. Each store call is one transaction (or one read). Check-then-write
calls that no constraint or single-row update makes atomic (admission, the
compute sessions cap, taking a run back) run in :meth:`SqlCore._transaction`
serialized per sandbox (see there), so their checks hold across processes;
the rest rely on row-level atomicity (seqs reserved by one UPDATE of the
conversation, flows that move once by a conditional UPDATE, unique indexes).
"""

from __future__ import annotations

from interlockd.store.base import Store
from interlockd.store.sql.agents import SqlAgents
from interlockd.store.sql.budgets import SqlBudgets
from interlockd.store.sql.compute import SqlCompute
from interlockd.store.sql.conversations import SqlConversations
from interlockd.store.sql.integrations import SqlIntegrations
from interlockd.store.sql.ledger import SqlLedger
from interlockd.store.sql.pauses import SqlPauses
from interlockd.store.sql.provider_state import SqlProviderState
from interlockd.store.sql.runs import SqlRuns
from interlockd.store.sql.tenancy import SqlTenancy
from interlockd.store.sql.tool_calls import SqlToolCalls
from interlockd.store.sql.tool_grants import SqlToolGrants

__all__ = ["SqlStore"]


class SqlStore(
    SqlTenancy,
    SqlConversations,
    SqlToolCalls,
    SqlRuns,
    SqlLedger,
    SqlProviderState,
    SqlIntegrations,
    SqlAgents,
    SqlPauses,
    SqlCompute,
    SqlBudgets,
    SqlToolGrants,
    Store,
):
    """Every aggregate of the store, on an engine still to be mixed in."""

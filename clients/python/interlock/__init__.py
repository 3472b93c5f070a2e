"""Python client and CLI for the Interlock agent router.

::

    from interlock import Client, SyncClient

    async with Client("127.0.0.1:7600", api_key="...") as client:
        outcome = await client.run_text("hello", end_user_id="u-1")
        print(outcome.text, outcome.session_id)

    with SyncClient("127.0.0.1:7600", api_key="...") as client:  # no event loop needed
        print(client.run_text("hello", end_user_id="u-1").text)

The generated protobuf modules of the API are in :mod:`interlock.v1`.
"""

from interlock.client import (
    Agents,
    Client,
    Compute,
    Conversations,
    Integrations,
    Ledger,
    RunStream,
    Sandboxes,
)
from interlock.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    ConnectFailed,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InterlockError,
    Internal,
    InvalidArgument,
    MissingCredentials,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    RunFailed,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from interlock.outcome import RunOutcome
from interlock.sync import (
    SyncAgents,
    SyncClient,
    SyncCompute,
    SyncConversations,
    SyncIntegrations,
    SyncLedger,
    SyncRunStream,
    SyncSandboxes,
)

__version__ = "0.1.0"

__all__ = [
    "Aborted",
    "Agents",
    "AlreadyExists",
    "Cancelled",
    "Client",
    "Compute",
    "ConnectFailed",
    "Conversations",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Integrations",
    "InterlockError",
    "Internal",
    "InvalidArgument",
    "Ledger",
    "MissingCredentials",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "RunFailed",
    "RunOutcome",
    "RunStream",
    "Sandboxes",
    "SyncAgents",
    "SyncClient",
    "SyncCompute",
    "SyncConversations",
    "SyncIntegrations",
    "SyncLedger",
    "SyncRunStream",
    "SyncSandboxes",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "__version__",
]

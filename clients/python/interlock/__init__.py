"""Python client and CLI for the Interlock agent router.

::

    from interlock import Client

    async with Client("127.0.0.1:7600", api_key="...") as client:
        outcome = await client.run_text("hello", end_user_id="u-1")
        print(outcome.text, outcome.session_id)

The generated protobuf modules of the API are in :mod:`interlock.v1`.
"""

from interlock.client import Client, Conversations, RunStream, Sandboxes
from interlock.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InterlockError,
    InvalidArgument,
    MissingCredentials,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RunFailed,
    Unauthenticated,
    Unavailable,
)
from interlock.outcome import RunOutcome

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "Client",
    "Conversations",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InterlockError",
    "InvalidArgument",
    "MissingCredentials",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RunFailed",
    "RunOutcome",
    "RunStream",
    "Sandboxes",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]

"""The one error root of the daemon, and the status code each error means.

Every error the daemon raises on purpose derives from :class:`InterlockError`
and names its status code (a gRPC code name: this module imports no transport);
``api/`` turns them into statuses in one place. Messages name
the field or id at fault and say what to do. They never carry secrets or raw
provider payloads.

::

    InterlockError
    ├── InvalidArgument          INVALID_ARGUMENT   (names the field)
    ├── NotFound                 NOT_FOUND
    ├── AlreadyExists            ALREADY_EXISTS
    ├── Unauthenticated          UNAUTHENTICATED
    ├── PermissionDenied         PERMISSION_DENIED
    ├── ResourceExhausted        RESOURCE_EXHAUSTED (caps, quotas, budgets)
    │   └── BudgetExhausted      RESOURCE_EXHAUSTED (a spend budget, until its period resets)
    ├── FailedPrecondition       FAILED_PRECONDITION
    │   └── RunInProgress        FAILED_PRECONDITION (retryable: its request_id is running)
    ├── Unavailable              UNAVAILABLE        (shutting down)
    ├── StoreError               INTERNAL
    │   └── DecryptionError      INTERNAL           (a sealed value failed to open)
    └── ProviderError            UNKNOWN            (the provider refused or failed)
        ├── ProviderUnavailable  UNAVAILABLE        (could not reach it, 5xx, overloaded)
        ├── ProviderProtocolError INTERNAL          (it answered something malformed)
        ├── ProviderTimeout      DEADLINE_EXCEEDED
        ├── ProviderRateLimited  RESOURCE_EXHAUSTED (429 for the router's credentials)
        ├── ProviderCredentialsRejected FAILED_PRECONDITION (401: fix the configured key)
        ├── ProviderPermissionDenied PERMISSION_DENIED (403)
        ├── ProviderRejected     INVALID_ARGUMENT   (400/404: e.g. an unknown model)
        └── ProviderSessionLost  UNAVAILABLE        (its session is gone; retried internally)
"""

from __future__ import annotations

from typing import ClassVar, Literal, TypeAlias

#: The status code an error maps to, by its gRPC name (``api/`` turns it into the
#: transport's code; nothing below ``api/`` knows gRPC).
Code: TypeAlias = Literal[
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "UNAVAILABLE",
    "INTERNAL",
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
]


class InterlockError(Exception):
    """Root of every error the daemon raises on purpose.

    ``reason`` is a stable UPPER_SNAKE_CASE name of the error that clients may
    branch on (sent as ``google.rpc.ErrorInfo.reason``); messages may change,
    reasons do not. ``metadata`` holds its machine-readable facts.
    """

    code: ClassVar[Code] = "INTERNAL"
    reason: ClassVar[str] = "INTERNAL"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def metadata(self) -> dict[str, str]:
        """Facts a client can act on without parsing the message (ErrorInfo.metadata)."""
        return {}


class InvalidArgument(InterlockError):
    """The request is malformed; ``field`` names the offending field."""

    code: ClassVar[Code] = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    @property
    def metadata(self) -> dict[str, str]:
        return {"field": self.field}


class NotFound(InterlockError):
    code: ClassVar[Code] = "NOT_FOUND"
    reason = "NOT_FOUND"


class AlreadyExists(InterlockError):
    code: ClassVar[Code] = "ALREADY_EXISTS"
    reason = "ALREADY_EXISTS"


class Unauthenticated(InterlockError):
    code: ClassVar[Code] = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class PermissionDenied(InterlockError):
    code: ClassVar[Code] = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class ResourceExhausted(InterlockError):
    code: ClassVar[Code] = "RESOURCE_EXHAUSTED"
    reason = "RESOURCE_EXHAUSTED"
    retryable = True


class BudgetExhausted(ResourceExhausted):
    """A spend budget has no room for the run's reservation until its period resets."""

    reason = "BUDGET_EXHAUSTED"

    def __init__(self, message: str, *, budget: str, period: str, resets_at: str) -> None:
        super().__init__(message)
        self.budget = budget  # sandbox, end_user or agent
        self.period = period  # day or month (UTC)
        self.resets_at = resets_at  # ISO 8601, UTC

    @property
    def metadata(self) -> dict[str, str]:
        return {"budget": self.budget, "period": self.period, "resets_at": self.resets_at}


class FailedPrecondition(InterlockError):
    code: ClassVar[Code] = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class RunInProgress(FailedPrecondition):
    """A run with this request_id is still running (its caller may just have gone away):
    retry shortly for its replay or its resumption."""

    reason = "RUN_IN_PROGRESS"
    retryable = True


class Unavailable(InterlockError):
    code: ClassVar[Code] = "UNAVAILABLE"
    reason = "UNAVAILABLE"
    retryable = True


class StoreError(InterlockError):
    code: ClassVar[Code] = "INTERNAL"
    reason = "STORE_FAILED"


class DecryptionError(StoreError):
    """A sealed value failed authentication: wrong key, or moved to another row."""

    reason = "DECRYPTION_FAILED"


class ProviderError(InterlockError):
    """The provider answered with an error. ``provider`` names it."""

    code: ClassVar[Code] = "UNKNOWN"
    reason = "PROVIDER_FAILED"

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider

    @property
    def metadata(self) -> dict[str, str]:
        return {"provider": self.provider}


class ProviderUnavailable(ProviderError):
    """The provider could not be reached, or answered 5xx/429: try again later."""

    code: ClassVar[Code] = "UNAVAILABLE"
    reason = "PROVIDER_UNAVAILABLE"
    retryable = True


class ProviderProtocolError(ProviderError):
    """The provider answered something that does not follow its protocol."""

    code: ClassVar[Code] = "INTERNAL"
    reason = "PROVIDER_PROTOCOL_ERROR"


class ProviderTimeout(ProviderError):
    code: ClassVar[Code] = "DEADLINE_EXCEEDED"
    reason = "PROVIDER_TIMEOUT"
    retryable = True


class ProviderRateLimited(ProviderError):
    """The provider's rate limit for our credentials is spent (429): slow down, retry."""

    code: ClassVar[Code] = "RESOURCE_EXHAUSTED"
    reason = "PROVIDER_RATE_LIMITED"
    retryable = True


class ProviderCredentialsRejected(ProviderError):
    """The provider refused the router's credentials for it (401): an operator must fix them.

    Not UNAUTHENTICATED: the caller's own API key was fine.
    """

    code: ClassVar[Code] = "FAILED_PRECONDITION"
    reason = "PROVIDER_CREDENTIALS_REJECTED"


class ProviderPermissionDenied(ProviderError):
    """The credentials are valid but not allowed to do this at the provider (403)."""

    code: ClassVar[Code] = "PERMISSION_DENIED"
    reason = "PROVIDER_PERMISSION_DENIED"


class ProviderRejected(ProviderError):
    """The provider refused the request as made (400/404/413/422), e.g. an unknown model."""

    code: ClassVar[Code] = "INVALID_ARGUMENT"
    reason = "PROVIDER_REJECTED"


class ProviderSessionLost(ProviderError):
    """The provider no longer has the conversation's session (404, terminated).

    Raised by backends that keep sessions before any event of the turn; the
    orchestrator forgets the session and runs the turn once more in a new one.
    """

    code: ClassVar[Code] = "UNAVAILABLE"
    reason = "PROVIDER_SESSION_LOST"
    retryable = True

"""The client's one error root and the single place gRPC failures are mapped to it.

Every failure the client reports derives from :class:`InterlockError`, so one
``except InterlockError`` catches them all; the subclasses exist so callers can
react to the cases that need different handling (fix the request, fix the key,
retry later) without comparing status codes by hand.

::

    InterlockError               code, details, retryable
    ├── InvalidArgument          INVALID_ARGUMENT    (details name the field)
    ├── NotFound                 NOT_FOUND
    ├── AlreadyExists            ALREADY_EXISTS
    ├── Unauthenticated          UNAUTHENTICATED
    │   └── MissingCredentials   no key configured; raised before any call is made
    ├── PermissionDenied         PERMISSION_DENIED
    ├── ResourceExhausted        RESOURCE_EXHAUSTED  (a quota or cap; retryable)
    ├── FailedPrecondition       FAILED_PRECONDITION (e.g. a turn already in progress)
    ├── Unavailable              UNAVAILABLE         (retryable)
    ├── DeadlineExceeded         DEADLINE_EXCEEDED
    └── RunFailed                a started run ended with an ``error`` event

Status codes without a subclass (INTERNAL, UNIMPLEMENTED, ...) arrive as a
plain :class:`InterlockError` carrying the code.

:class:`RunFailed` is deliberately not folded into the status-code classes: a
run that failed after it had started streaming has already recorded part of
the turn in the conversation, so "retry" means something different than for a
call the router refused up front. Its ``retryable`` comes from the router.
"""

from __future__ import annotations

from typing import ClassVar

import grpc
import grpc.aio

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InterlockError",
    "InvalidArgument",
    "MissingCredentials",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RunFailed",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
    "status_code_named",
]


class InterlockError(Exception):
    """Root of every error the client raises: a gRPC status code and its details."""

    # Whether sending the same request again may succeed; subclasses override.
    default_retryable: ClassVar[bool] = False

    def __init__(
        self, code: grpc.StatusCode, details: str, *, retryable: bool | None = None
    ) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.retryable = self.default_retryable if retryable is None else retryable

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}" if self.details else self.code.name


class InvalidArgument(InterlockError):
    """The request was malformed; the details name the field at fault."""


class NotFound(InterlockError):
    """An id in the request names nothing the key can see."""


class AlreadyExists(InterlockError):
    """The thing to create exists already (e.g. a sandbox name in use)."""


class Unauthenticated(InterlockError):
    """The key was missing, unknown or revoked."""


class MissingCredentials(Unauthenticated):
    """No key was configured for a call that needs one; nothing was sent."""

    def __init__(self, details: str) -> None:
        super().__init__(grpc.StatusCode.UNAUTHENTICATED, details)


class PermissionDenied(InterlockError):
    """The key is valid but may not do this."""


class ResourceExhausted(InterlockError):
    """A quota, cap or budget is spent; retry later."""

    default_retryable = True


class FailedPrecondition(InterlockError):
    """The target is in a state that refuses the call (paused, turn in progress)."""


class Unavailable(InterlockError):
    """The daemon or the provider could not be reached before anything happened."""

    default_retryable = True


class DeadlineExceeded(InterlockError):
    """The call's timeout passed."""


class RunFailed(InterlockError):
    """A run that had started streaming ended with an ``error`` event.

    ``code`` is the status the router reported in the event (``UNKNOWN`` if it
    named a code this client does not know); ``provider`` names the provider at
    fault, when there is one.
    """

    def __init__(
        self, code: grpc.StatusCode, details: str, *, retryable: bool, provider: str = ""
    ) -> None:
        super().__init__(code, details, retryable=retryable)
        self.provider = provider


_BY_CODE: dict[grpc.StatusCode, type[InterlockError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def from_rpc_error(exc: grpc.aio.AioRpcError) -> InterlockError:
    """Map a failed gRPC call to the most specific :class:`InterlockError`.

    Callers raise the result ``from exc`` so the transport error stays in the
    traceback for debugging.
    """
    code = exc.code()
    details = exc.details() or ""
    return _BY_CODE.get(code, InterlockError)(code, details)


def status_code_named(name: str) -> grpc.StatusCode:
    """The status code called ``name`` (e.g. ``"UNAVAILABLE"``), or UNKNOWN.

    The router reports in-band errors by code *name*; an unrecognised name must
    not turn into a crash on the client.
    """
    try:
        return grpc.StatusCode[name]
    except KeyError:
        return grpc.StatusCode.UNKNOWN

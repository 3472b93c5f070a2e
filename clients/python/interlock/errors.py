"""The client's one error root and the single place gRPC failures are mapped to it.

Every failure the client reports derives from :class:`InterlockError`, so one
``except InterlockError`` catches them all; the subclasses exist so callers can
react to the cases that need different handling (fix the request, fix the key,
retry later) without comparing status codes by hand.

::

    InterlockError               code, details, retryable
    ├── Cancelled                CANCELLED
    ├── Unknown                  UNKNOWN
    ├── InvalidArgument          INVALID_ARGUMENT    (details name the field)
    ├── DeadlineExceeded         DEADLINE_EXCEEDED   (the call's timeout passed)
    ├── NotFound                 NOT_FOUND
    ├── AlreadyExists            ALREADY_EXISTS
    ├── PermissionDenied         PERMISSION_DENIED
    ├── ResourceExhausted        RESOURCE_EXHAUSTED  (a quota or cap; retryable)
    ├── FailedPrecondition       FAILED_PRECONDITION (e.g. a turn already in progress)
    ├── Aborted                  ABORTED             (retryable)
    ├── OutOfRange               OUT_OF_RANGE
    ├── Unimplemented            UNIMPLEMENTED
    ├── Internal                 INTERNAL
    ├── Unavailable              UNAVAILABLE         (retryable)
    ├── DataLoss                 DATA_LOSS
    ├── Unauthenticated          UNAUTHENTICATED
    │   └── MissingCredentials   no key configured; raised before any call is made
    ├── RunFailed                a started run ended with an ``error`` event
    └── ConnectFailed            a connect flow ended failed or expired

Every status code has its class, so ``except Unauthenticated`` is all a
caller writes; each also carries ``code`` for code that prefers comparing.

What the daemon says about a refused call beyond its message arrives as
``google.rpc`` details in the status (its ``grpc-status-details-bin``
trailer) and becomes typed fields of the error: ``reason``, a stable
UPPER_SNAKE name to branch on (``INVALID_ARGUMENT``, ``PROVIDER_UNAVAILABLE``,
...; the code's name when the status carried none), ``metadata`` (e.g.
``{"field": "end_user_id"}`` or ``{"provider": "openai"}``),
``field_violations`` (for ``InvalidArgument``: each request field at fault,
by its proto path such as ``end_user_id`` or ``compute.policy``) and
``retry_delay`` (seconds to wait before a retry, when one may succeed)::

    try:
        await client.run_text("hi", end_user_id=user)
    except InvalidArgument as exc:
        for violation in exc.field_violations:
            form.mark(violation.field, violation.description)
    except InterlockError as exc:
        if exc.retryable:
            await asyncio.sleep(exc.retry_delay or 1)

``Cancelled`` is what iterating a run raises after someone else cancelled it
(``stream.cancel()`` from another task or thread); leaving the loop yourself
(``break``, ``return``, an exception) cancels the run without raising.

:class:`RunFailed` is deliberately not folded into the status-code classes: a
run that failed after it had started streaming has already recorded part of
the turn in the conversation, so "retry" means something different than for a
call the router refused up front. Its ``retryable`` comes from the router.
:class:`ConnectFailed` is not a refused call either: the flow was accepted and
then the end user declined, the provider refused or time ran out; what to do
is start connecting again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ConnectFailed",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InterlockError",
    "Internal",
    "InvalidArgument",
    "MissingCredentials",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "RunFailed",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "from_rpc_error",
    "status_code_named",
]


#: The trailer that carries a status's google.rpc details.
DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One request field at fault: its proto path (``end_user_id``, ``compute.policy``)
    and what is wrong with it."""

    field: str
    description: str


class InterlockError(Exception):
    """Root of every error the client raises: a gRPC status code and its details.

    ``reason``, ``metadata``, ``field_violations`` and ``retry_delay`` come
    from the status's ``google.rpc`` details (see the module docstring).
    """

    # Whether sending the same request again may succeed; subclasses override.
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        *,
        retryable: bool | None = None,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.retryable = self.default_retryable if retryable is None else retryable
        #: The error's stable name (google.rpc.ErrorInfo.reason), else the code's name.
        self.reason = reason or code.name
        #: Machine-readable facts of the error (ErrorInfo.metadata), e.g. ``field``.
        self.metadata: dict[str, str] = dict(metadata or {})
        #: The request fields at fault (google.rpc.BadRequest), for InvalidArgument.
        self.field_violations: list[FieldViolation] = list(field_violations)
        #: Seconds to wait before retrying (google.rpc.RetryInfo), when a retry may succeed.
        self.retry_delay = retry_delay

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}" if self.details else self.code.name


class Cancelled(InterlockError):
    """The call was cancelled before it completed: by the daemon, or by
    ``stream.cancel()`` while the run was being iterated."""


class Unknown(InterlockError):
    """The server failed in a way it could not classify."""


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


class Aborted(InterlockError):
    """A concurrent change won; retry the whole operation."""

    default_retryable = True


class OutOfRange(InterlockError):
    """A value is outside the accepted range."""


class Unimplemented(InterlockError):
    """The daemon does not offer this call (it is older than the client)."""


class Internal(InterlockError):
    """The router failed; what was recorded is kept."""


class DataLoss(InterlockError):
    """Data was lost or corrupted."""


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


class ConnectFailed(InterlockError):
    """A connect flow ended without a connection.

    ``state`` is ``"failed"`` (the end user declined, or the provider refused
    the grant) or ``"expired"`` (the end user did not finish in time);
    ``reason`` is the router's one-line explanation. ``code`` is always
    ``FAILED_PRECONDITION``: the flow is over, and only a new ``connect`` can
    succeed.
    """

    def __init__(self, flow_id: str, state: str, reason: str) -> None:
        details = f"connect flow {flow_id} {state}" + (f": {reason}" if reason else "")
        super().__init__(grpc.StatusCode.FAILED_PRECONDITION, details)
        self.flow_id = flow_id
        self.state = state
        self.reason = reason


_BY_CODE: dict[grpc.StatusCode, type[InterlockError]] = {
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNKNOWN: Unknown,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def from_rpc_error(exc: grpc.RpcError) -> InterlockError:
    """Map a failed gRPC call (asyncio or blocking) to the most specific :class:`InterlockError`.

    Callers raise the result ``from exc`` so the transport error stays in the
    traceback for debugging.
    """
    if isinstance(exc, grpc.aio.AioRpcError | grpc.Call):
        code = exc.code()
        details = exc.details() or ""
        trailer = exc.trailing_metadata()
    else:  # an RpcError that is not a call: nothing more specific to say
        code, details, trailer = grpc.StatusCode.UNKNOWN, str(exc), None
    cls = _BY_CODE.get(code, InterlockError)
    status = _status_details(trailer)
    if status is None:  # e.g. the connection was lost: only the code is known
        return cls(code, details)
    reason, metadata, retry_delay = "", {}, None
    violations: list[FieldViolation] = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):  # Unpack is False for a detail of another type
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad):
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Unpack(retry):
            retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
    return cls(
        code,
        details,
        # The daemon attaches RetryInfo exactly when a retry may succeed.
        retryable=retry_delay is not None if reason else None,
        reason=reason,
        metadata=metadata,
        field_violations=violations,
        retry_delay=retry_delay,
    )


def _status_details(trailer: Iterable[Any] | None) -> status_pb2.Status | None:
    """The google.rpc.Status of a call's details trailer, or None without a readable one.

    ``trailer`` is grpc.aio's Metadata or the blocking API's tuple of
    ``(key, value)`` pairs; both unpack as pairs.
    """
    for key, value in trailer or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:  # not ours to fail on: keep what the code says
                return None
    return None


def status_code_named(name: str) -> grpc.StatusCode:
    """The status code called ``name`` (e.g. ``"UNAVAILABLE"``), or UNKNOWN.

    The router reports in-band errors by code *name*; an unrecognised name must
    not turn into a crash on the client.
    """
    try:
        return grpc.StatusCode[name]
    except KeyError:
        return grpc.StatusCode.UNKNOWN

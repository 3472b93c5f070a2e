"""Error details on a status: what a client can act on without parsing a message.

Every status the daemon sends for an :class:`InterlockError` carries, in the
standard ``grpc-status-details-bin`` trailer (a ``google.rpc.Status``), the
details of Google's error model (AIP-193):

- ``google.rpc.ErrorInfo`` always: ``reason`` (the error's stable name, e.g.
  ``INVALID_ARGUMENT``, ``PROVIDER_UNAVAILABLE``), ``domain`` ``interlock.dev``
  and ``metadata`` (``field``, ``provider``, …);
- ``google.rpc.BadRequest`` for INVALID_ARGUMENT: one field violation whose
  ``field`` is the request field's path as the proto spells it
  (``end_user_id``, ``compute.policy``) and whose ``description`` is the problem;
- ``google.rpc.RetryInfo`` when trying again may succeed, with the delay to wait.

Clients read them as typed fields (see each client's errors). This module only
builds the trailer; the mapping of errors to codes is the errors' own.
"""

from __future__ import annotations

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import duration_pb2

from interlockd.errors import InterlockError, InvalidArgument

DOMAIN = "interlock.dev"
DETAILS_KEY = "grpc-status-details-bin"
#: The wait a RetryInfo suggests when the error knows no better.
RETRY_DELAY_SECONDS = 1


def details_trailer(exc: InterlockError) -> tuple[tuple[str, bytes]]:
    """The trailing metadata that carries ``exc``'s details."""
    status = status_pb2.Status(code=grpc.StatusCode[exc.code].value[0], message=exc.message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=exc.metadata)
    )
    if isinstance(exc, InvalidArgument):
        status.details.add().Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=exc.field, description=exc.problem
                    )
                ]
            )
        )
    if exc.retryable:
        status.details.add().Pack(
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=RETRY_DELAY_SECONDS)
            )
        )
    return ((DETAILS_KEY, status.SerializeToString()),)

"""The events of one blocking run: :class:`SyncRunStream`, what ``SyncClient.run`` returns.

Written by hand, unlike the rest of :mod:`interlock.sync`: a blocking gRPC
stream is cancelled from another thread or by the garbage collector, which
has nothing in common with the asyncio :class:`~interlock.RunStream`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

import grpc

from interlock.errors import Cancelled, from_rpc_error
from interlock.v1 import events_pb2

__all__ = ["SyncRunStream"]

if TYPE_CHECKING:  # grpc.CallIterator exists only in the type stubs
    _RunCall = grpc.CallIterator[events_pb2.AgentEvent]


class SyncRunStream(Iterator[events_pb2.AgentEvent]):
    """The events of one run, as they arrive (the blocking :class:`~interlock.RunStream`).

    The call starts on the first event asked for. Leaving the loop in any
    way — ``break``, ``return``, an exception — or leaving ``with
    client.run(...) as stream`` cancels the run on the router at once and
    raises nothing. :meth:`cancel` from another thread makes the iteration
    raise :class:`~interlock.errors.Cancelled`. Errors the router returns
    before the first event raise the matching
    :class:`~interlock.errors.InterlockError`, a passing ``timeout``
    :class:`~interlock.errors.DeadlineExceeded`, a connection lost mid-stream
    :class:`~interlock.errors.Unavailable` (retry with the same
    ``request_id`` to resume the turn); a failure after the run started
    arrives as the stream's last event (``error``).
    """

    def __init__(self, start: Callable[[], _RunCall]) -> None:
        self._start = start
        self._call: _RunCall | None = None
        self._events: Iterator[events_pb2.AgentEvent] | None = None
        self._done = False
        self._cancelled = False

    def __iter__(self) -> Iterator[events_pb2.AgentEvent]:
        return _SyncRunIteration(self)

    def __next__(self) -> events_pb2.AgentEvent:
        if self._cancelled:
            raise _cancelled_error()
        if self._done:
            raise StopIteration
        if self._events is None:
            self._call = self._start()
            self._events = iter(self._call)
        try:
            return next(self._events)
        except StopIteration:
            self._done = True
            raise
        except grpc.RpcError as exc:
            self._done = True
            # cancel() from another thread ends a pending read with CANCELLED:
            # the caller can tell that from a failure by its own error.
            if (
                self._cancelled
                and isinstance(exc, grpc.Call)
                and exc.code() is grpc.StatusCode.CANCELLED
            ):
                raise _cancelled_error() from None
            raise from_rpc_error(exc) from exc

    def cancel(self) -> bool:
        """Cancel the run on the router; iterating it afterwards raises Cancelled.

        Returns False if the call had not started or had already ended (then
        what it sent can still be read).
        """
        if self._done:
            return False
        call = self._call
        if call is not None and not call.is_active():
            return False
        self._done = True
        self._cancelled = True
        # grpc-stubs leaves RpcContext.cancel unannotated; it returns a bool.
        return bool(call.cancel()) if call is not None else False  # type: ignore[no-untyped-call]

    def _abandon(self) -> None:
        """Cancel the call of a stream its consumer let go of."""
        if self._call is not None:
            self.cancel()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._abandon()

    def close(self) -> None:
        """Same as :meth:`cancel`; present so ``contextlib.closing`` works."""
        self.cancel()

    def __enter__(self) -> SyncRunStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


def _cancelled_error() -> Cancelled:
    return Cancelled(grpc.StatusCode.CANCELLED, "the run was cancelled by the client")


class _SyncRunIteration(Iterator[events_pb2.AgentEvent]):
    """One ``for`` loop over a :class:`SyncRunStream`; dropped when the loop is left,
    which cancels the call (a loop run to the end has nothing left to cancel)."""

    def __init__(self, stream: SyncRunStream) -> None:
        self._stream = stream

    def __iter__(self) -> _SyncRunIteration:
        return self

    def __next__(self) -> events_pb2.AgentEvent:
        return self._stream.__next__()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stream._abandon()

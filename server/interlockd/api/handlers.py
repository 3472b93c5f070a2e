"""gRPC plumbing shared by the servicers: safe request decoding and error mapping.

Handlers are registered from the service descriptors (see :func:`generic_handler`)
with a deserializer that never fails: a request that doesn't parse — typically
a string field with invalid UTF-8 — arrives as :class:`MalformedRequest` and is
answered INVALID_ARGUMENT naming the field, instead of grpc's generic
INTERNAL "Exception deserializing request". :class:`InterlockError` raised by
a handler becomes its status code here, in one place.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias, TypeVar

import grpc
import structlog
from google.protobuf import descriptor, message

from interlockd.api.status import details_trailer
from interlockd.errors import InterlockError, InvalidArgument

log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Context: TypeAlias = grpc.aio.ServicerContext

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True, slots=True)
class MalformedRequest:
    """A request that failed to parse; ``error`` names the field."""

    error: InvalidArgument


def _deserializer(cls: type[message.Message]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except message.DecodeError:
            return MalformedRequest(_explain(cls.DESCRIPTOR, data))  # type: ignore[arg-type]

    return parse


def _explain(desc: descriptor.Descriptor, data: bytes) -> InvalidArgument:
    """Find the string field with invalid UTF-8 (the usual parse failure) and name it."""
    field = _bad_utf8_field(desc, data, "")
    if field:
        return InvalidArgument(field, "is not valid UTF-8")
    return InvalidArgument("request", f"could not be parsed as {desc.full_name}")


def _bad_utf8_field(desc: descriptor.Descriptor, data: bytes, prefix: str) -> str:
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = _varint(data, pos)
                chunk, pos = data[pos : pos + length], pos + length
                field = desc.fields_by_number.get(number)
                if field is None:
                    continue
                name = prefix + field.name
                if field.type == descriptor.FieldDescriptor.TYPE_STRING:
                    try:
                        chunk.decode("utf-8")
                    except UnicodeDecodeError:
                        return name
                elif field.type == descriptor.FieldDescriptor.TYPE_MESSAGE and field.message_type:
                    inner = _bad_utf8_field(field.message_type, chunk, name + ".")
                    if inner:
                        # Map entries are messages {key, value}: report "labels".
                        return name if field.message_type.GetOptions().map_entry else inner
            else:
                return ""
    except IndexError:
        return ""
    return ""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


_CRASHED = "the router failed unexpectedly; the daemon logged the cause"


def unary(
    fn: Callable[[Any, Req, Context], Awaitable[Resp]],
) -> Callable[[Any, Req, Context], Awaitable[Resp]]:
    """Wrap a unary handler: malformed requests and InterlockError become statuses."""

    @functools.wraps(fn)
    async def handler(self: Any, request: Req, context: Context) -> Resp:
        if isinstance(request, MalformedRequest):
            await _abort(context, request.error)
        try:
            return await fn(self, request, context)
        except InterlockError as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("handler_crashed", method=fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, _CRASHED)
            raise  # unreachable: abort raises

    return handler


def streaming(
    fn: Callable[[Any, Req, Context], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Context], Awaitable[None]]:
    """Wrap a server-streaming handler: errors before the first message become statuses.

    After the first message a handler must report failures in-band; an
    InterlockError escaping then is logged and ends the stream with its status.
    The wrapper is a coroutine that writes each message (``context.write``)
    rather than a generator relaying them: one async generator less per open
    stream, on the per-message path.
    """

    @functools.wraps(fn)
    async def handler(self: Any, request: Req, context: Context) -> None:
        if isinstance(request, MalformedRequest):
            await _abort(context, request.error)
        try:
            async with contextlib.aclosing(fn(self, request, context)) as items:  # type: ignore[type-var]
                async for item in items:
                    await context.write(item)
        except InterlockError as exc:
            await _abort(context, exc)
        except grpc.aio.AbortError:
            raise
        except Exception:
            # The cause (a bug) goes to the log, never to the client.
            log.exception("handler_crashed", method=fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, _CRASHED)

    return handler


async def _abort(context: Context, exc: InterlockError) -> NoReturn:
    """End the call with ``exc``'s status, its details in the trailer (api/status.py)."""
    await context.abort(grpc.StatusCode[exc.code], exc.message, details_trailer(exc))
    raise AssertionError("unreachable: abort raises")


def generic_handler(
    service: descriptor.ServiceDescriptor,
    servicer: object,
    messages: dict[str, type[message.Message]],
) -> grpc.GenericRpcHandler[Any, Any]:
    """Handlers for every method of ``service``, bound to ``servicer``'s methods.

    Raise at startup if the servicer lacks a method: every RPC in the contract
    has a handler.
    """
    handlers = {}
    for method in service.methods:
        impl = getattr(servicer, method.name, None)
        if impl is None:
            raise TypeError(f"{type(servicer).__name__} does not implement {method.full_name}")
        request_cls = messages[method.input_type.full_name]
        response_cls = messages[method.output_type.full_name]
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            impl,
            request_deserializer=_deserializer(request_cls),
            response_serializer=response_cls.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)

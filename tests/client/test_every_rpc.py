"""Every RPC of every service in proto/interlock/v1 has a wrapper in both Python clients.

The services and methods come from the generated descriptors, not from a list kept
here, so an RPC added to the API fails this test until ``interlock.Client`` and
``interlock.SyncClient`` wrap it. A wrapper is found by what it sends: each
method of the clients' service objects is called against a real gRPC server
whose every handler records the RPC it served (and answers an empty response),
so a wrapper that names the wrong RPC does not count.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor, symbol_database
from google.protobuf.message import Message

import interlock.v1
from interlock import Client, InterlockError, SyncClient

API_KEY = "ik_every_rpc"
OPERATOR_KEY = "ik_every_rpc_operator"

#: Arguments that make a wrapper send its request (ValueError otherwise), by parameter name.
ARGUMENTS: dict[str, Any] = {
    "scope": "global",
    "by": "end_user",
    "app": "github",
    "end_user_id": "u-1",
}


def services() -> list[descriptor.ServiceDescriptor]:
    """Every service of every generated module of interlock.v1."""
    found: dict[str, descriptor.ServiceDescriptor] = {}
    for module in pkgutil.iter_modules(interlock.v1.__path__):
        if module.name.endswith("_pb2"):
            loaded = importlib.import_module(f"interlock.v1.{module.name}")
            for service in loaded.DESCRIPTOR.services_by_name.values():
                found[service.full_name] = service
    return sorted(found.values(), key=lambda s: s.full_name)


def every_rpc() -> list[str]:
    """``/package.Service/Method`` of every RPC of the API."""
    return [f"/{s.full_name}/{m.name}" for s in services() for m in s.methods]


def response_of(method: descriptor.MethodDescriptor) -> type[Message]:
    return symbol_database.Default().GetSymbol(method.output_type.full_name)


def request_of(method: descriptor.MethodDescriptor) -> type[Message]:
    return symbol_database.Default().GetSymbol(method.input_type.full_name)


class Recorder(grpc.GenericRpcHandler):
    """Serves every RPC of the API with an empty response, recording which were called."""

    def __init__(self) -> None:
        self.served: set[str] = set()
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}
        for service in services():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                self.handlers[path] = self._handler(path, method)

    def _handler(self, path: str, method: descriptor.MethodDescriptor) -> grpc.RpcMethodHandler:
        response = response_of(method)
        request = request_of(method)

        async def unary(_: Message, context: grpc.aio.ServicerContext) -> Message:
            self.served.add(path)
            return response()

        async def stream(_: Message, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
            self.served.add(path)
            return
            yield  # an empty stream

        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        return self.handlers.get(handler_call_details.method)


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    """A real grpc.aio server on 127.0.0.1:0 that answers every RPC of the API."""
    served = Recorder()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((served,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield served, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def wrappers(client: object) -> Iterator[tuple[str, Callable[..., Any]]]:
    """Every public method of the client and of its service attributes, by dotted name."""
    for name, member in inspect.getmembers(client):
        if name.startswith("_"):
            continue
        if inspect.ismethod(member):
            yield name, member
        elif type(member).__module__.startswith("interlock.") and not isinstance(member, str):
            for method_name, method in inspect.getmembers(member, inspect.ismethod):
                if not method_name.startswith("_"):
                    yield f"{name}.{method_name}", method


def arguments(method: Callable[..., Any]) -> dict[str, Any]:
    """Values for the required parameters of ``method``."""
    values: dict[str, Any] = {}
    for parameter in inspect.signature(method).parameters.values():
        if parameter.default is not inspect.Parameter.empty:
            continue
        if parameter.name in ARGUMENTS:
            values[parameter.name] = ARGUMENTS[parameter.name]
        elif "Agent" in str(parameter.annotation):
            values[parameter.name] = interlock.v1.agents_pb2.Agent(slug="a")
        elif "Quotas" in str(parameter.annotation):
            values[parameter.name] = interlock.v1.sandboxes_pb2.Quotas()
        else:
            values[parameter.name] = "x"
    return values


def test_the_api_has_the_services_the_clients_know() -> None:
    """The descriptors list the API's seven services (a sanity check of the enumeration)."""
    assert [s.name for s in services()] == [
        "AgentRouter",
        "Agents",
        "Compute",
        "Conversations",
        "Integrations",
        "Ledger",
        "Sandboxes",
    ]
    assert len(every_rpc()) >= 36


async def call_async(method: Callable[..., Any]) -> None:
    result = method(**arguments(method))
    try:
        if inspect.isawaitable(result):
            await result
        elif hasattr(result, "__aiter__"):
            async for _ in result:
                pass
    except InterlockError:
        pass  # e.g. wait_connected on a watch that ends at once: the RPC was still sent


async def test_every_rpc_has_an_async_wrapper(recorder: tuple[Recorder, str]) -> None:
    """Calling every method of interlock.Client sends every RPC of the API."""
    served, address = recorder
    async with Client(address, API_KEY, operator_key=OPERATOR_KEY) as client:
        for _, method in wrappers(client):
            if method.__name__ in {"close", "metadata"}:
                continue
            await call_async(method)
    assert sorted(set(every_rpc()) - served.served) == []


def call_sync(method: Callable[..., Any]) -> None:
    try:
        result = method(**arguments(method))
        if isinstance(result, Iterator):
            for _ in result:
                pass
    except InterlockError:
        pass


async def test_every_rpc_has_a_blocking_wrapper(recorder: tuple[Recorder, str]) -> None:
    """Calling every method of interlock.SyncClient sends every RPC of the API."""
    served, address = recorder

    def call_all() -> None:
        with SyncClient(address, API_KEY, operator_key=OPERATOR_KEY) as client:
            for _, method in wrappers(client):
                if method.__name__ not in {"close", "metadata"}:
                    call_sync(method)

    await asyncio.to_thread(call_all)
    assert sorted(set(every_rpc()) - served.served) == []

"""Every RPC of the interlock.v1 API, read from the generated descriptors.

The adversarial and fuzz suites take their list of RPCs from here, never from
a hand-written list: a service or method added to the protos is picked up at
once, and a suite that has no probe for it fails its "covered" check.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from google.protobuf import descriptor, message, message_factory

import interlock.v1


@dataclass(frozen=True, slots=True)
class Rpc:
    """One method of one service, with what it takes and returns."""

    service: str  # "interlock.v1.Agents"
    name: str  # "PutAgent"
    request: type[message.Message]
    response: type[message.Message]
    server_streaming: bool

    @property
    def path(self) -> str:
        """The HTTP/2 path the method is served at."""
        return f"/{self.service}/{self.name}"

    @property
    def full_name(self) -> str:
        return f"{self.service}.{self.name}"

    def __str__(self) -> str:
        return self.full_name


def services() -> list[descriptor.ServiceDescriptor]:
    """Every service declared by a module of the interlock.v1 package."""
    found: list[descriptor.ServiceDescriptor] = []
    for module_info in pkgutil.iter_modules(interlock.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"interlock.v1.{module_info.name}")
        found += module.DESCRIPTOR.services_by_name.values()
    return sorted(found, key=lambda s: s.full_name)


def all_rpcs() -> list[Rpc]:
    """Every RPC of every interlock.v1 service, in a stable order."""
    return [
        Rpc(
            service=service.full_name,
            name=method.name,
            request=message_factory.GetMessageClass(method.input_type),
            response=message_factory.GetMessageClass(method.output_type),
            server_streaming=method.server_streaming,
        )
        for service in services()
        for method in service.methods
    ]

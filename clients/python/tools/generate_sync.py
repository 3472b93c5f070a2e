"""Write ``interlock/sync.py``, the blocking client, from ``interlock/client.py``, the asyncio one.

The asyncio client is the one written by hand; its blocking twin is the same
classes with ``async``/``await`` taken out and ``grpc.aio`` swapped for
``grpc``, so the two cannot drift apart. Run from anywhere, with the project's
virtualenv (it formats with ruff)::

    .venv/bin/python clients/python/tools/generate_sync.py          # rewrite sync.py
    .venv/bin/python clients/python/tools/generate_sync.py --check  # exit 1 if it is stale

What is not generated: the run stream (``interlock/sync_stream.py``, whose
blocking cancellation has nothing in common with the asyncio one) and the
module's header below (its docstring, imports and two call helpers).

The transformation works on the syntax tree: ``async def`` becomes ``def``,
``async for``/``async with`` lose ``async``, ``await _unary(CALL)`` becomes
``_unary(lambda: CALL)`` (a blocking stub call raises when made, so the helper
has to make it), any other ``await X`` becomes ``X``, ``for x in xs: yield x``
becomes ``yield from xs``, ``call.cancel()`` the typed ``_cancel(call)`` and
``self._channel.close(grace)`` ``close()``; names in :data:`NAMES` and dotted
names in :data:`DOTTED` are swapped, ``AsyncGenerator[Y, S]`` becomes
``Generator[Y, S, None]``, and docstrings lose ``await``/``async`` words and get
:data:`DOCSTRINGS`' replacements. Comments are dropped: those in the asyncio
client speak of asyncio.
"""

from __future__ import annotations

import argparse
import ast
import copy
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "interlock"
SOURCE = PACKAGE / "client.py"
TARGET = PACKAGE / "sync.py"

#: The classes generated, by their asyncio name, with their blocking name.
CLASSES = {
    "Client": "SyncClient",
    "Sandboxes": "SyncSandboxes",
    "Conversations": "SyncConversations",
    "Integrations": "SyncIntegrations",
    "Compute": "SyncCompute",
    "Agents": "SyncAgents",
    "Ledger": "SyncLedger",
}
#: Other names swapped wherever they occur (annotations included).
NAMES = {
    **CLASSES,
    "RunStream": "SyncRunStream",
    "AsyncIterator": "Iterator",
    "AsyncGenerator": "Generator",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
}
#: Dotted names swapped.
DOTTED = {
    "grpc.aio.Channel": "grpc.Channel",
    "grpc.aio.insecure_channel": "grpc.insecure_channel",
    "grpc.aio.AioRpcError": "grpc.RpcError",
    "contextlib.aclosing": "contextlib.closing",
}
#: Docstrings that say something only true of asyncio, as the blocking client says it.
#: Each must match somewhere: a stale entry fails the generation.
DOCSTRINGS = {
    "Connection to one Interlock daemon.": "Blocking connection to one Interlock daemon.",
    "or the consuming task is cancelled.": "or collected.",
    "A ``channel`` passed in is used as is and left open on :meth:`close`; the\n"
    "    caller owns it. Create the client inside a running event loop.": (
        "A ``channel`` passed in (a blocking ``grpc.Channel``, e.g.\n"
        "    ``grpc.secure_channel(...)``) is used as is and left open on :meth:`close`;\n"
        "    the caller owns it. The client needs no event loop and is safe to share\n"
        "    between threads."
    ),
}
#: Docstring words that go when the asyncio form becomes the blocking one.
DOC_WORDS = {"await ": "", "async for ": "for ", "async with ": "with ", "aclosing": "closing"}

HEADER = '''\
# Code generated from interlock/client.py by clients/python/tools/generate_sync.py. DO NOT EDIT.
"""The blocking facade of :class:`interlock.Client`, for code without an event loop.

Same calls, same arguments, same results and errors as the asyncio client,
over a blocking ``grpc`` channel (no event loop or thread of its own)::

    with SyncClient() as client:
        with client.run("hello", end_user_id="u-1") as stream:
            for event in stream:
                ...
        outcome = client.run_text("and again", end_user_id="u-1")

Runs take a ``timeout`` that becomes the call's gRPC deadline; the short
administrative calls take one too. The client opens a plaintext channel;
pass your own ``channel`` (e.g. ``grpc.secure_channel(...)``) for TLS.

This module is generated from :mod:`interlock.client` (edit that, then run
``clients/python/tools/generate_sync.py``); the run stream is
:mod:`interlock.sync_stream`.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc

from interlock.calls import (
    DEFAULT_ADDRESS,
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_OPERATOR_KEY,
    ComputeOptionsLike,
    ConnectScope,
    Metadata,
    add_mcp_server_request,
    api_key_metadata,
    api_key_or_operator_metadata,
    connect_request,
    connect_result,
    from_env,
    list_compute_sessions_request,
    operator_metadata,
    pause_scope,
    run_request,
)
from interlock.client import UsageGroup, ledger_filter, ledger_metadata, usage_group
from interlock.errors import Unavailable, from_rpc_error
from interlock.outcome import RunOutcome
from interlock.sync_stream import SyncRunStream
from interlock.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    compute_pb2,
    compute_pb2_grpc,
    conversations_pb2,
    conversations_pb2_grpc,
    integrations_pb2,
    integrations_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
    router_pb2_grpc,
    sandboxes_pb2,
    sandboxes_pb2_grpc,
)

__all__ = [
    "SyncAgents",
    "SyncClient",
    "SyncCompute",
    "SyncConversations",
    "SyncIntegrations",
    "SyncLedger",
    "SyncRunStream",
    "SyncSandboxes",
]

_T = TypeVar("_T")


def _unary(call: Callable[[], _T]) -> _T:
    """Make a unary call, translating its failure into the client's errors."""
    try:
        return call()
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from exc


def _cancel(call: grpc.CallIterator[Any]) -> None:
    """Cancel a streaming call (a no-op once it has ended)."""
    call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it unannotated
'''


class _Blocking(ast.NodeTransformer):
    """Rewrites the asyncio client's syntax into the blocking client's."""

    def __init__(self) -> None:
        self.replaced: set[str] = set()

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.FunctionDef:
        self.generic_visit(node)
        node.name = NAMES.get(node.name, node.name)
        return ast.FunctionDef(**{field: getattr(node, field) for field in node._fields})

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        self.generic_visit(node)
        node.name = NAMES.get(node.name, node.name)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        self.generic_visit(node)
        node.name = NAMES.get(node.name, node.name)
        return node

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.stmt:
        self.generic_visit(node)
        return _yield_from(node) or ast.For(**{f: getattr(node, f) for f in node._fields})

    def visit_For(self, node: ast.For) -> ast.stmt:
        self.generic_visit(node)
        return _yield_from(node) or node

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.With:
        self.generic_visit(node)
        return ast.With(**{field: getattr(node, field) for field in node._fields})

    def visit_Await(self, node: ast.Await) -> ast.expr:
        self.generic_visit(node)
        value = node.value
        if isinstance(value, ast.Call) and _dotted(value.func) == "_unary":
            # A blocking stub call raises as it is made: _unary has to make it.
            (call,) = value.args
            value.args = [ast.Lambda(args=_no_arguments(), body=call)]
        return value

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = NAMES.get(node.id, node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        dotted = _dotted(node)
        if dotted in DOTTED:
            return ast.parse(DOTTED[dotted], mode="eval").body
        self.generic_visit(node)
        return node

    def visit_Subscript(self, node: ast.Subscript) -> ast.Subscript:
        self.generic_visit(node)
        # AsyncGenerator[Y, S] is Generator[Y, S, None]: a generator also returns.
        if isinstance(node.value, ast.Name) and node.value.id == "Generator":
            if not (isinstance(node.slice, ast.Tuple) and len(node.slice.elts) == 2):
                raise SystemExit(f"line {node.lineno}: AsyncGenerator takes two arguments")
            node.slice.elts.append(ast.Constant(None))
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.Expr:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            node.value.value = self._docstring(node.value.value)
            return node
        self.generic_visit(node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        # call.cancel() of a streaming call: grpc-stubs leaves the blocking one
        # untyped, so the blocking client goes through its typed _cancel.
        if _dotted(node.func) == "call.cancel" and not node.args:
            return ast.Call(func=ast.Name("_cancel"), args=[ast.Name("call")], keywords=[])
        # grpc.aio's close takes a grace period; a blocking channel's closes at once.
        if _dotted(node.func) == "self._channel.close":
            node.args = []
        return node

    def _docstring(self, text: str) -> str:
        for old, new in DOCSTRINGS.items():
            if old in text:
                self.replaced.add(old)
                text = text.replace(old, new)
        for old, new in DOC_WORDS.items():
            text = text.replace(old, new)
        return text


def _yield_from(node: ast.For | ast.AsyncFor) -> ast.stmt | None:
    """``for x in xs: yield x``, all an async generator can do, as ``yield from xs``."""
    match node:
        case (
            ast.For(
                target=ast.Name(id=name),
                body=[ast.Expr(value=ast.Yield(value=ast.Name(id=yielded)))],
                orelse=[],
            )
            | ast.AsyncFor(
                target=ast.Name(id=name),
                body=[ast.Expr(value=ast.Yield(value=ast.Name(id=yielded)))],
                orelse=[],
            )
        ) if name == yielded:
            return ast.Expr(ast.YieldFrom(node.iter))
    return None


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def _no_arguments() -> ast.arguments:
    return ast.arguments(
        posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], defaults=[]
    )


def generate() -> str:
    """The text sync.py should have."""
    tree = ast.parse(SOURCE.read_text(encoding="utf-8"))
    found = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in CLASSES}
    missing = set(CLASSES) - set(found)
    if missing:
        raise SystemExit(f"client.py has no class {', '.join(sorted(missing))}")
    blocking = _Blocking()
    classes = [blocking.visit(copy.deepcopy(found[name])) for name in CLASSES]
    stale = set(DOCSTRINGS) - blocking.replaced
    if stale:
        raise SystemExit(f"DOCSTRINGS entries match nothing in client.py: {sorted(stale)}")
    body = "\n\n\n".join(ast.unparse(ast.fix_missing_locations(c)) for c in classes)
    return _format(HEADER + "\n\n" + body + "\n")


def _format(text: str) -> str:
    """The text as ``ruff format`` leaves it under the project's settings."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"ruff format failed:\n{done.stderr}")
    return done.stdout


def main() -> int:
    """Rewrite sync.py, or with --check say whether it is what client.py makes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if sync.py is stale")
    args = parser.parse_args()
    text = generate()
    if args.check:
        if TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

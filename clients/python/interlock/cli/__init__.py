"""The ``interlock`` command line: run turns and administer a daemon.

This package owns argument parsing, credential checks and exit codes: this module
builds the parser from one module per command group (:mod:`~interlock.cli.run`,
:mod:`~interlock.cli.sandboxes` with the keys, :mod:`~interlock.cli.conversations`,
:mod:`~interlock.cli.integrations`, :mod:`~interlock.cli.agents`,
:mod:`~interlock.cli.compute`, :mod:`~interlock.cli.ledger` with usage,
:mod:`~interlock.cli.google`), each declaring its commands and their handlers
through :mod:`interlock.cli.common`, then checks the key and calls the handler. What
the output looks like lives in :mod:`interlock.render`, and every call goes through
:class:`interlock.Client`. :func:`main` (and its coroutine :func:`amain`) can be
called in-process with an argv list and return the exit code instead of exiting,
which is how the tests drive it.

``interlock google deploy`` talks to Google, not to a daemon: it needs no key
and its work is in :mod:`interlock.google.deploy`.

Exit codes: 0 success, 1 the server or the run reported an error, 2 the
command line was wrong (bad flags, a missing key or extra), 130 interrupted
(Ctrl-C), 141 the reader of stdout went away.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence

from interlock import __version__
from interlock.cli import (
    agents,
    compute,
    conversations,
    google,
    integrations,
    ledger,
    run,
    sandboxes,
)
from interlock.cli.common import (
    API_ELSE_OPERATOR_KEY,
    API_KEY,
    API_OR_OPERATOR_KEY,
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    OPERATOR_KEY,
    CommandTree,
    Handler,
    Io,
    LocalHandler,
    add_connection_options,
)
from interlock.client import (
    DEFAULT_ADDRESS,
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_OPERATOR_KEY,
    Client,
    from_env,
)
from interlock.errors import InterlockError, MissingCredentials

__all__ = ["amain", "build_parser", "main"]

#: The command groups, in the order ``interlock --help`` lists them.
_GROUPS = (run, sandboxes, conversations, integrations, agents, compute, ledger, google)


def build_parser() -> argparse.ArgumentParser:
    """The full ``interlock`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="interlock",
        description="Run agent turns on an Interlock daemon and administer it.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_connection_options(parser, default=None)
    tree = CommandTree(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    for group in _GROUPS:
        group.add_commands(tree)
    return parser


# -- entry points ----------------------------------------------------------


async def amain(argv: Sequence[str] | None = None) -> int:
    """Run the CLI inside an already running event loop; returns the exit code.

    Output goes to ``sys.stdout``/``sys.stderr`` as they are when called.
    """
    io = Io(sys.stdout, sys.stderr)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and bad usage
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    local: LocalHandler | None = getattr(args, "local_handler", None)
    if local is not None:
        return local(args, io)

    address = from_env(args.address, ENV_ADDRESS) or DEFAULT_ADDRESS
    api_key = from_env(args.api_key, ENV_API_KEY)
    operator_key = from_env(args.operator_key, ENV_OPERATOR_KEY)
    key = args.key
    if key == API_OR_OPERATOR_KEY:
        key = OPERATOR_KEY if args.sandbox else API_KEY
    if key == API_ELSE_OPERATOR_KEY:
        if not api_key and not operator_key:
            io.err.write(
                "error: no key: pass --api-key (its own sandbox) or --operator-key "
                f"(every sandbox), or set {ENV_API_KEY} or {ENV_OPERATOR_KEY}\n"
            )
            return EXIT_USAGE
        key = API_KEY if api_key else OPERATOR_KEY
    if key == API_KEY and not api_key:
        io.err.write(f"error: no sandbox API key: pass --api-key or set {ENV_API_KEY}\n")
        return EXIT_USAGE
    if key == OPERATOR_KEY and not operator_key:
        io.err.write(f"error: no operator key: pass --operator-key or set {ENV_OPERATOR_KEY}\n")
        return EXIT_USAGE

    handler: Handler = args.handler
    try:
        async with Client(address, api_key, operator_key=operator_key) as client:
            return await handler(client, args, io)
    except MissingCredentials as exc:
        io.err.write(f"error: {exc.details}\n")
        return EXIT_USAGE
    except InterlockError as exc:
        io.err.write(f"error: {exc}\n")
        return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """The ``interlock`` console script; returns the exit code (see the module docstring)."""
    try:
        return asyncio.run(amain(argv))
    except KeyboardInterrupt:
        # asyncio.run has already cancelled the run (which cancels the call on
        # the router) and closed the channel; a traceback would only be noise.
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whoever read stdout (`| head`) stopped reading. Point stdout at
        # devnull so the interpreter's final flush does not fail a second time.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE

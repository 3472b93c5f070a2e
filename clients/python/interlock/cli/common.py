"""What every ``interlock`` command shares: exit codes, the key a command takes, the
output streams and how a listing is written to them, argument types, and
:class:`CommandTree`, through which each command group's module declares its commands.

Nothing here talks to a daemon; :mod:`interlock.cli` parses, checks the key and calls
the handler a command declared.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TextIO, TypeAlias, TypeVar

from google.protobuf.message import Message

from interlock.client import DEFAULT_ADDRESS, ENV_ADDRESS, ENV_API_KEY, ENV_OPERATOR_KEY, Client
from interlock.render import Style, to_json

if TYPE_CHECKING:
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE

DEFAULT_END_USER = "default"

# Which key a command authenticates with; checked before connecting so a
# missing key is reported as a usage error instead of a round trip.
API_KEY = "api"
OPERATOR_KEY = "operator"
# The API key for its own sandbox, the operator key for the one --sandbox names.
API_OR_OPERATOR_KEY = "api-or-operator"
# The API key when there is one (its own sandbox), else the operator key (every sandbox).
API_ELSE_OPERATOR_KEY = "api-else-operator"


@dataclass(frozen=True)
class Io:
    """Where a command writes: results on ``out``, progress and errors for a person on ``err``."""

    out: TextIO
    err: TextIO

    @property
    def style(self) -> Style:
        # https://no-color.org; colour only where a person reads stderr.
        enabled = (
            self.err.isatty()
            and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM") != "dumb"
        )
        return Style(enabled)


_M = TypeVar("_M", bound=Message)


def write_list(
    io: Io,
    items: Sequence[_M],
    render: Callable[[Iterable[_M], TextIO], None],
    empty: str,
    *,
    json: bool,
) -> None:
    """A listing's results: a JSON line each with ``json``, else ``render``'s table, or
    ``empty`` (a line for a person, on stderr) when there are none."""
    if json:
        io.out.writelines(to_json(m) + "\n" for m in items)
    elif items:
        render(items, io.out)
    else:
        io.err.write(empty + "\n")


#: A command run against the daemon with the client the key check allowed.
Handler = Callable[[Client, argparse.Namespace, Io], Awaitable[int]]
# A command that needs no daemon (and so no key); blocking, run in the loop's
# thread so that Ctrl-C interrupts it.
LocalHandler = Callable[[argparse.Namespace, Io], int]


# -- arguments -------------------------------------------------------------


def non_negative_usd(text: str) -> float:
    """A US dollar amount, 0 or more (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


_RELATIVE = re.compile(r"([0-9]{1,6})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def when(text: str) -> datetime:
    """A point in time: ``7d``/``12h``/``30m`` ago, or an ISO date or time (UTC unless
    it says otherwise)."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        amount, unit = int(relative.group(1)), _UNITS[relative.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration ago (30m, 12h, 7d, 2w) or an ISO date/time "
            f"(2026-11-01, 2026-11-01T09:30Z), got {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def add_connection_options(parser: argparse.ArgumentParser, default: object) -> None:
    """The flags that say where to connect and with which key.

    They are accepted both before and after the subcommand. Subcommands
    declare them with ``default=SUPPRESS``: argparse copies a subparser's
    defaults over the values parsed before the subcommand, so a real default
    there would erase ``interlock --address X run ...``.
    """
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--address",
        metavar="HOST:PORT",
        default=default,
        help=f"daemon address (env {ENV_ADDRESS}, default {DEFAULT_ADDRESS})",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        default=default,
        help=f"sandbox API key for run, conversations and integrations (env {ENV_API_KEY})",
    )
    group.add_argument(
        "--operator-key",
        metavar="KEY",
        default=default,
        help=f"operator key for sandbox and keys (env {ENV_OPERATOR_KEY})",
    )


def add_timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="stop waiting after this (the flow stays open until it expires)",
    )


class CommandTree:
    """The ``interlock`` subcommands being declared, and the parents their leaves share:
    the connection flags (on every leaf), ``--json`` and ``--end-user``."""

    def __init__(self, commands: Subcommands) -> None:
        self.commands = commands
        self.connection = argparse.ArgumentParser(add_help=False)
        add_connection_options(self.connection, default=argparse.SUPPRESS)
        self.json_output = argparse.ArgumentParser(add_help=False)
        self.json_output.add_argument(
            "--json",
            action="store_true",
            help="print one JSON object per line (proto field names) and nothing else on stdout",
        )
        self.end_user = argparse.ArgumentParser(add_help=False)
        self.end_user.add_argument(
            "--end-user",
            default=DEFAULT_END_USER,
            metavar="ID",
            help=f"the end user the conversation belongs to (default {DEFAULT_END_USER!r})",
        )

    def leaf(
        self,
        group: Subcommands,
        name: str,
        help_text: str,
        handler: Handler,
        key: str,
        parents: Sequence[argparse.ArgumentParser] = (),
    ) -> argparse.ArgumentParser:
        """A command of ``group`` run by ``handler`` with the ``key`` kind of key."""
        sub = group.add_parser(
            name,
            help=help_text,
            description=help_text[:1].upper() + help_text[1:] + ".",
            parents=[*parents, self.connection],
            allow_abbrev=False,
        )
        sub.set_defaults(handler=handler, key=key)
        return sub

    def group(self, name: str, help_text: str) -> Subcommands:
        """A top-level command whose actions are its subcommands."""
        sub = self.commands.add_parser(
            name, help=help_text, description=help_text, allow_abbrev=False
        )
        return sub.add_subparsers(dest="action", metavar="ACTION", required=True)

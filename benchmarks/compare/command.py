"""``python -m benchmarks.compare``: its arguments and what it prints.

The command runs a workload on each provider in turn against the daemon that
``--address`` and ``--api-key`` (or ``INTERLOCK_ADDRESS`` and
``INTERLOCK_API_KEY``) name, with the sandbox API key, prints a table on
stdout (``--json``: the whole record as one JSON line) and progress on
stderr, and with ``--report DIR`` writes ``report.md`` and ``report.json``
there. Exit code 0 when every turn completed, 1 when any failed (everything
is still reported) or the daemon refused a call, 2 for a command line or a
workload that cannot be used, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from benchmarks.compare.compare import Target, compare, parse_targets
from benchmarks.compare.report import dumps, render_table, to_json_data, write_report
from benchmarks.compare.workload import WorkloadError, load_workload
from interlock.client import DEFAULT_ADDRESS, ENV_ADDRESS, ENV_API_KEY, Client, from_env
from interlock.errors import InterlockError, MissingCredentials

__all__ = ["add_compare_arguments", "amain", "bench_compare", "build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT

DEFAULT_TURN_TIMEOUT = 300.0
_MAX_LABEL_VALUE = 256


def _targets(text: str) -> list[Target]:
    try:
        return parse_targets(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _cohort(text: str) -> str:
    if not text or len(text) > _MAX_LABEL_VALUE:
        raise argparse.ArgumentTypeError(f"must be 1-{_MAX_LABEL_VALUE} characters")
    return text


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The comparison's own options (the connection flags and --json are build_parser's)."""
    parser.add_argument(
        "--providers",
        required=True,
        type=_targets,
        metavar="PROVIDER:MODEL,...",
        help="what to compare, in this order: providers configured on the daemon, each with "
        "a model (PROVIDER alone uses its default model)",
    )
    parser.add_argument(
        "--workload",
        required=True,
        type=Path,
        metavar="FILE",
        help="the scripted conversation (YAML, JSON or TOML; see benchmarks/workloads/)",
    )
    parser.add_argument(
        "--users",
        type=_count(1),
        metavar="N",
        help="end users holding the conversation, per provider (default: the workload's)",
    )
    parser.add_argument(
        "--concurrency",
        type=_count(1),
        default=1,
        metavar="N",
        help="conversations in progress at once (default 1: figures without queueing)",
    )
    parser.add_argument(
        "--cohort",
        type=_cohort,
        metavar="LABEL",
        help="the cohort label of every run (default: WORKLOAD-YYYYMMDDTHHMMSSZ)",
    )
    parser.add_argument(
        "--warmup",
        type=_count(0),
        default=1,
        metavar="N",
        help="unreported turns per provider before measuring (default 1)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TURN_TIMEOUT,
        metavar="SECONDS",
        help=f"give up on a turn after this (default {DEFAULT_TURN_TIMEOUT:g})",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also write report.md and report.json (every turn) into DIR",
    )


def _command_line(args: argparse.Namespace, cohort: str) -> str:
    """The command that reproduces this comparison (connection flags left out)."""
    words = [
        "python",
        "-m",
        "benchmarks.compare",
        "--providers",
        ",".join(map(str, args.providers)),
        "--workload",
        str(args.workload),
        "--concurrency",
        str(args.concurrency),
        "--warmup",
        str(args.warmup),
        "--cohort",
        cohort,
    ]
    if args.users is not None:
        words += ["--users", str(args.users)]
    return shlex.join(words)


async def bench_compare(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run the comparison ``args`` describe on ``client``; return the exit code."""
    try:
        workload = load_workload(args.workload)
    except WorkloadError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    cohort: str = (
        args.cohort
        or (f"{workload.name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")[:_MAX_LABEL_VALUE]
    )

    def progress(line: str) -> None:
        err.write(line + "\n")
        err.flush()

    progress(f"cohort {cohort}")
    comparison = await compare(
        client,
        workload,
        args.providers,
        cohort=cohort,
        users=args.users,
        concurrency=args.concurrency,
        warmup=args.warmup,
        turn_timeout=args.timeout,
        progress=progress,
    )
    data = to_json_data(comparison, command=_command_line(args, cohort), address=client.target)
    if args.json:
        out.write(dumps(data) + "\n")
    else:
        out.write(render_table(comparison))
    if args.report is not None:
        written = write_report(args.report, comparison, data)
        progress("wrote " + ", ".join(map(str, written)))
    return EXIT_OK if comparison.ok else EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m benchmarks.compare`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description="Run one scripted workload on each provider in turn through an Interlock "
        "daemon and compare them.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        help=f"daemon address (env {ENV_ADDRESS}, default {DEFAULT_ADDRESS})",
    )
    parser.add_argument("--api-key", metavar="KEY", help=f"sandbox API key (env {ENV_API_KEY})")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the whole record as one JSON line and nothing else on stdout",
    )
    add_compare_arguments(parser)
    return parser


async def amain(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, connect and compare; returns the exit code (output on sys.stdout/err)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and bad usage
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    address = from_env(args.address, ENV_ADDRESS) or DEFAULT_ADDRESS
    api_key = from_env(args.api_key, ENV_API_KEY)
    if not api_key:
        sys.stderr.write(f"error: no sandbox API key: pass --api-key or set {ENV_API_KEY}\n")
        return EXIT_USAGE
    try:
        async with Client(address, api_key) as client:
            return await bench_compare(client, args, sys.stdout, sys.stderr)
    except MissingCredentials as exc:
        sys.stderr.write(f"error: {exc.details}\n")
        return EXIT_USAGE
    except InterlockError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """The command's entry point; returns the exit code (see the module docstring)."""
    try:
        return asyncio.run(amain(argv))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED

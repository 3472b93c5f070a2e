"""``interlock run``: one agent turn, its answer streamed to the terminal or as JSON lines."""

from __future__ import annotations

import argparse
import sys

from interlock.cli.common import (
    API_KEY,
    EXIT_ERROR,
    EXIT_OK,
    CommandTree,
    Io,
    key_value,
    non_negative_int,
    positive_float,
)
from interlock.client import Client, RunStream
from interlock.errors import InterlockError
from interlock.outcome import RunOutcome
from interlock.render import RunRenderer, to_json


def add_commands(tree: CommandTree) -> None:
    """``interlock run MESSAGE``."""
    run = tree.leaf(
        tree.commands,
        "run",
        "run one agent turn and stream its answer",
        _run,
        API_KEY,
        [tree.end_user, tree.json_output],
    )
    run.add_argument("message", help="the user's message ('-' reads it from stdin)")
    run.add_argument("--provider", default="", help="provider to run on (default: the daemon's)")
    run.add_argument("--model", default="", help="model on that provider (default: its default)")
    run.add_argument(
        "--session", default="", metavar="ID", help="continue this conversation (default: new)"
    )
    run.add_argument("--system", default="", metavar="TEXT", help="system prompt for this turn")
    run.add_argument(
        "--request-id", default="", metavar="ID", help="idempotency key: a repeat replays the run"
    )
    run.add_argument(
        "--tool",
        action="append",
        default=[],
        dest="tools",
        metavar="NAME",
        help="allow only this tool (repeatable; default: all tools of the sandbox)",
    )
    run.add_argument(
        "--label",
        action="append",
        type=key_value,
        default=[],
        dest="labels",
        metavar="KEY=VALUE",
        help="label recorded with the run (repeatable)",
    )
    _add_limits_and_placement(run)


def _add_limits_and_placement(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--max-output-tokens",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="output token cap per provider call (0: the model's default)",
    )
    run.add_argument(
        "--timeout", type=positive_float, metavar="SECONDS", help="give up on the run after this"
    )
    run.add_argument(
        "--google-engine",
        default="",
        metavar="NAME",
        help="provider google: the deployed agent, projects/P/locations/L/reasoningEngines/ID "
        "or an ID (default: the daemon's)",
    )
    run.add_argument(
        "--google-location",
        default="",
        metavar="REGION",
        help="provider google: the region of an engine given by ID (default: the daemon's)",
    )
    run.add_argument(
        "--agent",
        default="",
        metavar="SLUG",
        help="run a saved agent (its provider, model, prompt)",
    )


async def _run(client: Client, args: argparse.Namespace, io: Io) -> int:
    message = sys.stdin.read() if args.message == "-" else args.message
    stream = client.run(
        message,
        end_user_id=args.end_user,
        session_id=args.session,
        provider=args.provider,
        model=args.model,
        system=args.system,
        tools=args.tools,
        request_id=args.request_id,
        labels=dict(args.labels),
        max_output_tokens=args.max_output_tokens,
        google_engine=args.google_engine,
        google_location=args.google_location,
        agent=args.agent,
        timeout=args.timeout,
    )
    if args.json:
        return await _run_json(stream, io)
    renderer = RunRenderer(
        io.out, io.err, style=io.style, same_terminal=io.out.isatty() and io.err.isatty()
    )
    try:
        async with stream:
            async for event in stream:
                renderer.event(event)
    except InterlockError as exc:
        renderer.end(error=str(exc))
        return EXIT_ERROR
    renderer.end()
    return EXIT_OK if renderer.outcome.ok else EXIT_ERROR


async def _run_json(stream: RunStream, io: Io) -> int:
    outcome = RunOutcome()
    async with stream:
        async for event in stream:
            io.out.write(to_json(event) + "\n")
            io.out.flush()  # a consumer of the pipe sees each event as it happens
            outcome.add(event)
    # The events already say how the run ended; stderr repeats it for a person
    # and the exit code for a script.
    if outcome.error is not None:
        io.err.write(f"error: {outcome.error.code}: {outcome.error.message}\n")
        return EXIT_ERROR
    if outcome.finish is None:
        io.err.write("error: the stream ended before the run finished\n")
        return EXIT_ERROR
    return EXIT_OK

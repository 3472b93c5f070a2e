"""``interlock compute ...``: kill switches (operator key); compute sessions, providers and
placements (the API key for its own sandbox, else the operator key for all)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from interlock.calls import PAUSE_SCOPES
from interlock.cli.common import (
    API_ELSE_OPERATOR_KEY,
    EXIT_OK,
    OPERATOR_KEY,
    CommandTree,
    Io,
    write_list,
)
from interlock.client import Client
from interlock.render import (
    render_compute_providers,
    render_compute_sessions,
    render_placement,
    to_json,
)
from interlock.v1 import compute_pb2

if TYPE_CHECKING:
    from interlock.cli.common import Subcommands

#: The session statuses `interlock compute sessions --status` takes ("creating" is a
#: moment's state, not worth a filter).
_SESSION_STATUSES = ("running", "suspended", "archived", "failed", "destroyed")


def add_commands(tree: CommandTree) -> None:
    """``interlock compute ACTION``."""
    compute = tree.group(
        "compute",
        "kill switches (operator key); compute sessions, providers and placements "
        "(API key for its sandbox, else operator key for all)",
    )
    scope_help = "global | end_user | agent_provider | compute_provider"
    paused = tree.leaf(
        compute,
        "pause",
        "pause runs in a scope; runs in flight it covers end with an error",
        _compute_pause,
        OPERATOR_KEY,
        [tree.json_output],
    )
    paused.add_argument("scope", choices=sorted(PAUSE_SCOPES), help=scope_help)
    paused.add_argument(
        "target", nargs="?", default="", help="the end user or provider (none for global)"
    )
    paused.add_argument("--sandbox", default="", metavar="ID", help="limit it to one sandbox")
    paused.add_argument("--reason", default="", help="shown in the errors it causes")
    unpaused = tree.leaf(
        compute, "unpause", "clear a pause", _compute_unpause, OPERATOR_KEY, [tree.json_output]
    )
    unpaused.add_argument("scope", choices=sorted(PAUSE_SCOPES), help=scope_help)
    unpaused.add_argument("target", nargs="?", default="", help="as given to pause")
    unpaused.add_argument("--sandbox", default="", metavar="ID", help="as given to pause")
    tree.leaf(
        compute,
        "pauses",
        "list the pauses in force",
        _compute_pauses,
        OPERATOR_KEY,
        [tree.json_output],
    )
    _add_session_commands(tree, compute)


def _add_session_commands(tree: CommandTree, compute: Subcommands) -> None:
    sessions = tree.leaf(
        compute,
        "sessions",
        "list compute sessions, oldest first (destroyed ones only with --status destroyed)",
        _compute_sessions,
        API_ELSE_OPERATOR_KEY,
        [tree.json_output],
    )
    sessions.add_argument("--user", default="", metavar="ID", help="only this end user's")
    sessions.add_argument(
        "--agent", default="", metavar="AGENT", help="only this agent's (a slug, or PROVIDER/MODEL)"
    )
    sessions.add_argument(
        "--status",
        default="",
        choices=_SESSION_STATUSES,
        help="only sessions in this status (default: all but destroyed)",
    )
    sessions.add_argument("--provider", default="", help="only sessions on this compute provider")
    sessions.add_argument(
        "--sandbox",
        default="",
        metavar="ID",
        help="only this sandbox's (operator key; an API key sees its own sandbox only)",
    )
    for name, help_text in (
        ("suspend", "stop a running session now, keeping its state"),
        ("resume", "start a suspended or archived session again, ahead of a run"),
        ("destroy", "delete a session and its state at its provider (irreversible)"),
    ):
        operate = tree.leaf(
            compute, name, help_text, _compute_operate, API_ELSE_OPERATOR_KEY, [tree.json_output]
        )
        operate.add_argument("session_id", metavar="SESSION_ID", help="the session (cs_...)")
    tree.leaf(
        compute,
        "providers",
        "list the compute providers in order of preference: health, load, start times, prices",
        _compute_providers,
        API_ELSE_OPERATOR_KEY,
        [tree.json_output],
    )
    explain = tree.leaf(
        compute,
        "explain",
        "show where a run's runtime was placed and why",
        _compute_explain,
        API_ELSE_OPERATOR_KEY,
        [tree.json_output],
    )
    explain.add_argument("run_id", metavar="RUN_ID", help="a run of a self-hosted runtime")


def _describe_pause(pause: compute_pb2.Pause) -> str:
    scope = compute_pb2.PauseScope.Name(pause.scope).removeprefix("PAUSE_SCOPE_").lower()
    where = f" in sandbox {pause.sandbox_id}" if pause.sandbox_id else ""
    what = f"{scope} {pause.target}".strip()
    return f"{what}{where}" + (f" ({pause.reason})" if pause.reason else "")


async def _compute_pause(client: Client, args: argparse.Namespace, io: Io) -> int:
    response = await client.compute.pause(
        args.scope, target=args.target, sandbox_id=args.sandbox, reason=args.reason
    )
    if args.json:
        io.out.write(to_json(response) + "\n")
    else:
        io.out.write(
            f"paused {_describe_pause(response.pause)}; "
            f"stopped {response.stopped_runs} run(s) in flight\n"
        )
    return EXIT_OK


async def _compute_unpause(client: Client, args: argparse.Namespace, io: Io) -> int:
    cleared = await client.compute.unpause(args.scope, target=args.target, sandbox_id=args.sandbox)
    if args.json:
        io.out.write(json.dumps({"cleared": cleared}) + "\n")
    elif cleared:
        io.out.write("cleared\n")
    else:
        io.err.write("no such pause\n")
    return EXIT_OK


async def _compute_pauses(client: Client, args: argparse.Namespace, io: Io) -> int:
    pauses = await client.compute.pauses()
    write_list(
        io,
        pauses,
        lambda pauses, out: out.writelines(_describe_pause(p) + "\n" for p in pauses),
        "no pauses",
        json=args.json,
    )
    return EXIT_OK


async def _compute_sessions(client: Client, args: argparse.Namespace, io: Io) -> int:
    found = await client.compute.sessions(
        end_user_id=args.user,
        agent=args.agent,
        status=args.status,
        provider=args.provider,
        sandbox_id=args.sandbox,
    )
    write_list(
        io, found, render_compute_sessions, "no compute sessions for this selection", json=args.json
    )
    return EXIT_OK


_PAST = {"suspend": "suspended", "resume": "resumed", "destroy": "destroyed"}


async def _compute_operate(client: Client, args: argparse.Namespace, io: Io) -> int:
    operations = {
        "suspend": client.compute.suspend,
        "resume": client.compute.resume,
        "destroy": client.compute.destroy,
    }
    session = await operations[args.action](args.session_id)
    if args.json:
        io.out.write(to_json(session) + "\n")
    else:
        status = compute_pb2.ComputeSessionStatus.Name(session.status)
        io.out.write(
            f"{_PAST[args.action]} compute session {session.id}: now "
            f"{status.removeprefix('COMPUTE_SESSION_STATUS_').lower()}\n"
        )
    return EXIT_OK


async def _compute_providers(client: Client, args: argparse.Namespace, io: Io) -> int:
    providers = await client.compute.providers()
    write_list(
        io, providers, render_compute_providers, "no compute providers configured", json=args.json
    )
    return EXIT_OK


async def _compute_explain(client: Client, args: argparse.Namespace, io: Io) -> int:
    placement = await client.compute.explain(args.run_id)
    if args.json:
        io.out.write(to_json(placement) + "\n")
    else:
        render_placement(placement, io.out)
    return EXIT_OK

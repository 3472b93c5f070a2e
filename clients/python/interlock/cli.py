"""The ``interlock`` command line: run turns and administer a daemon.

This module owns argument parsing, credential checks and exit codes; what the
output looks like lives in :mod:`interlock.render`, and every call goes
through :class:`interlock.Client`. :func:`main` (and its coroutine
:func:`amain`) can be called in-process with an argv list and return the exit
code instead of exiting, which is how the tests drive it.

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
import getpass
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO, TypedDict

from interlock import __version__
from interlock.bench.command import add_compare_arguments, bench_compare
from interlock.calls import PAUSE_SCOPES, connect_result
from interlock.client import (
    DEFAULT_ADDRESS,
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_OPERATOR_KEY,
    Client,
    RunStream,
    UsageGroup,
    from_env,
)
from interlock.errors import ConnectFailed, DeadlineExceeded, InterlockError, MissingCredentials
from interlock.google.deploy import (
    DEFAULT_MODEL,
    DeployConfigError,
    DeployFailed,
    MissingExtra,
    build_spec,
    deploy,
    require_extra,
)
from interlock.outcome import RunOutcome
from interlock.render import (
    RunRenderer,
    Style,
    describe_integration,
    format_timestamp,
    render_api_keys,
    render_catalog,
    render_compute_providers,
    render_compute_sessions,
    render_conversation_entries,
    render_conversation_header,
    render_conversations,
    render_integrations,
    render_ledger_entries,
    render_placement,
    render_sandbox,
    render_sandboxes,
    render_usage,
    to_json,
)
from interlock.v1 import agents_pb2, compute_pb2, conversations_pb2, ledger_pb2, sandboxes_pb2

__all__ = ["amain", "build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE

DEFAULT_END_USER = "default"

# Which key a command authenticates with; checked before connecting so a
# missing key is reported as a usage error instead of a round trip.
_API_KEY = "api"
_OPERATOR_KEY = "operator"
# The API key for its own sandbox, the operator key for the one --sandbox names.
_API_OR_OPERATOR_KEY = "api-or-operator"
# The API key when there is one (its own sandbox), else the operator key (every sandbox).
_API_ELSE_OPERATOR_KEY = "api-else-operator"

#: The session statuses `interlock compute sessions --status` takes ("creating" is a
#: moment's state, not worth a filter).
_SESSION_STATUSES = ("running", "suspended", "archived", "failed", "destroyed")


@dataclass(frozen=True)
class _Io:
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


_Handler = Callable[[Client, argparse.Namespace, _Io], Awaitable[int]]
# A command that needs no daemon (and so no key); blocking, run in the loop's
# thread so that Ctrl-C interrupts it.
_LocalHandler = Callable[[argparse.Namespace, _Io], int]


# -- arguments -------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


_RELATIVE = re.compile(r"([0-9]{1,6})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _when(text: str) -> datetime:
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


def _add_connection_options(parser: argparse.ArgumentParser, default: object) -> None:
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


def _add_quota_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-concurrent-runs",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="runs in progress at once across the sandbox (0: unlimited)",
    )
    parser.add_argument(
        "--max-concurrent-runs-per-end-user",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="runs in progress at once per end user (0: unlimited)",
    )
    parser.add_argument(
        "--max-tokens-per-day",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="tokens per UTC day across the sandbox (0: unlimited)",
    )


def _add_timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="stop waiting after this (the flow stays open until it expires)",
    )


def _quotas(args: argparse.Namespace) -> sandboxes_pb2.Quotas:
    return sandboxes_pb2.Quotas(
        max_concurrent_runs=args.max_concurrent_runs,
        max_concurrent_runs_per_end_user=args.max_concurrent_runs_per_end_user,
        max_tokens_per_day=args.max_tokens_per_day,
    )


def build_parser() -> argparse.ArgumentParser:
    """The full ``interlock`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="interlock",
        description="Run agent turns on an Interlock daemon and administer it.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_connection_options(parser, default=None)

    # Parents shared by the leaf commands.
    connection = argparse.ArgumentParser(add_help=False)
    _add_connection_options(connection, default=argparse.SUPPRESS)
    json_output = argparse.ArgumentParser(add_help=False)
    json_output.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per line (proto field names) and nothing else on stdout",
    )
    end_user = argparse.ArgumentParser(add_help=False)
    end_user.add_argument(
        "--end-user",
        default=DEFAULT_END_USER,
        metavar="ID",
        help=f"the end user the conversation belongs to (default {DEFAULT_END_USER!r})",
    )

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def leaf(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_text: str,
        handler: _Handler,
        key: str,
        parents: Sequence[argparse.ArgumentParser] = (),
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(
            name,
            help=help_text,
            description=help_text[:1].upper() + help_text[1:] + ".",
            parents=[*parents, connection],
            allow_abbrev=False,
        )
        sub.set_defaults(handler=handler, key=key)
        return sub

    def group_of(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        sub = commands.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        return sub.add_subparsers(dest="action", metavar="ACTION", required=True)

    # run
    run = leaf(
        commands,
        "run",
        "run one agent turn and stream its answer",
        _run,
        _API_KEY,
        [end_user, json_output],
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
        type=_label,
        default=[],
        dest="labels",
        metavar="KEY=VALUE",
        help="label recorded with the run (repeatable)",
    )
    run.add_argument(
        "--max-output-tokens",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="output token cap per provider call (0: the model's default)",
    )
    run.add_argument(
        "--timeout", type=_positive_float, metavar="SECONDS", help="give up on the run after this"
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

    # sandbox
    sandbox = group_of("sandbox", "administer sandboxes (operator key)")
    create = leaf(
        sandbox, "create", "create a sandbox", _sandbox_create, _OPERATOR_KEY, [json_output]
    )
    create.add_argument("name", help="1-64 letters, digits, '_', '-' or '.'")
    _add_quota_options(create)
    leaf(sandbox, "list", "list sandboxes", _sandbox_list, _OPERATOR_KEY, [json_output])
    get = leaf(sandbox, "get", "show one sandbox", _sandbox_get, _OPERATOR_KEY, [json_output])
    get.add_argument("sandbox_id", metavar="ID")
    delete = leaf(
        sandbox,
        "delete",
        "delete a sandbox and everything in it (irreversible)",
        _sandbox_delete,
        _OPERATOR_KEY,
    )
    delete.add_argument("sandbox_id", metavar="ID")
    quotas = leaf(
        sandbox,
        "set-quotas",
        "replace a sandbox's quotas (unset flags become unlimited)",
        _sandbox_set_quotas,
        _OPERATOR_KEY,
        [json_output],
    )
    quotas.add_argument("sandbox_id", metavar="ID")
    _add_quota_options(quotas)

    # keys
    keys = group_of("keys", "administer a sandbox's API keys (operator key)")
    key_create = leaf(
        keys, "create", "create an API key", _keys_create, _OPERATOR_KEY, [json_output]
    )
    key_create.add_argument("--sandbox", required=True, metavar="ID", help="the sandbox")
    key_create.add_argument("--name", default="default", help="a name to recognise the key by")
    key_list = leaf(
        keys, "list", "list a sandbox's API keys", _keys_list, _OPERATOR_KEY, [json_output]
    )
    key_list.add_argument("--sandbox", required=True, metavar="ID", help="the sandbox")
    revoke = leaf(
        keys, "revoke", "revoke an API key at once", _keys_revoke, _OPERATOR_KEY, [json_output]
    )
    revoke.add_argument("--sandbox", required=True, metavar="ID", help="the sandbox")
    revoke.add_argument("key_id", metavar="KEY_ID")

    # conversations
    conversations = group_of("conversations", "read an end user's conversations (API key)")
    leaf(
        conversations,
        "list",
        "list an end user's conversations, most recent first",
        _conversations_list,
        _API_KEY,
        [end_user, json_output],
    )
    show = leaf(
        conversations,
        "show",
        "print a conversation's entries, oldest first",
        _conversations_show,
        _API_KEY,
        [end_user, json_output],
    )
    show.add_argument("session_id", metavar="SESSION")
    forget = leaf(
        conversations,
        "delete",
        "delete a conversation and everything stored for it",
        _conversations_delete,
        _API_KEY,
        [end_user],
    )
    forget.add_argument("session_id", metavar="SESSION")

    # integrations
    integrations = group_of(
        "integrations", "connect OAuth apps and MCP servers whose tools runs get (API key)"
    )
    leaf(
        integrations,
        "catalog",
        "list the apps that can be connected, with the tools each provides",
        _integrations_catalog,
        _API_KEY,
        [json_output],
    )
    connect = leaf(
        integrations,
        "connect",
        "connect an OAuth app: print the URL the end user opens, then wait until they finish",
        _integrations_connect,
        _API_KEY,
        [json_output],
    )
    connect.add_argument("app", metavar="APP", help="the app, e.g. github (see catalog)")
    connect.add_argument(
        "--end-user",
        required=True,
        metavar="ID",
        help="the end user who opens the URL and grants access (theirs, unless --sandbox-wide)",
    )
    connect.add_argument(
        "--sandbox-wide",
        action="store_true",
        help="make the connection serve every end user of the sandbox",
    )
    _add_timeout_option(connect)
    connect.add_argument(
        "--no-wait",
        action="store_true",
        help="print the URL and the flow id and return (follow it with `integrations watch`)",
    )
    watch = leaf(
        integrations,
        "watch",
        "wait for a connect flow to finish",
        _integrations_watch,
        _API_KEY,
        [json_output],
    )
    watch.add_argument("flow_id", metavar="FLOW_ID")
    _add_timeout_option(watch)
    listing = leaf(
        integrations,
        "list",
        "list integrations, oldest first",
        _integrations_list,
        _API_KEY,
        [json_output],
    )
    listing.add_argument(
        "--end-user",
        default="",
        metavar="ID",
        help="only what this end user's runs get: theirs and the sandbox-wide ones "
        "(default: every integration of the sandbox)",
    )
    listing.add_argument(
        "--all",
        action="store_true",
        dest="include_disconnected",
        help="include disconnected integrations",
    )
    add_mcp = leaf(
        integrations,
        "add-mcp",
        "register an MCP server (Streamable HTTP) whose tools runs get",
        _integrations_add_mcp,
        _API_KEY,
        [json_output],
    )
    add_mcp.add_argument(
        "name", metavar="NAME", help="1-32 of a-z, 0-9 and '-'; its tools become mcp__NAME__TOOL"
    )
    add_mcp.add_argument(
        "url", metavar="URL", help="its Streamable HTTP URL (https, or http to a loopback address)"
    )
    add_mcp.add_argument(
        "--end-user",
        default="",
        metavar="ID",
        help="only for this end user (default: the whole sandbox)",
    )
    # Secrets never come as plain arguments: those show in `ps` and shell history.
    token = add_mcp.add_mutually_exclusive_group()
    token.add_argument(
        "--bearer-token-stdin",
        action="store_true",
        help="read a bearer token to send the server from stdin (asked for without echo "
        "at a terminal)",
    )
    token.add_argument(
        "--bearer-token-env",
        metavar="VAR",
        help="take the bearer token from the environment variable VAR",
    )
    add_mcp.add_argument(
        "--header",
        action="append",
        type=_label,
        default=[],
        dest="headers",
        metavar="NAME=VALUE",
        help="send this header too (repeatable); not for secrets, which would show in the "
        "process list: use --header-env",
    )
    add_mcp.add_argument(
        "--header-env",
        action="append",
        type=_label,
        default=[],
        dest="header_vars",
        metavar="NAME=VAR",
        help="send header NAME with the value of the environment variable VAR (repeatable)",
    )
    disconnect = leaf(
        integrations,
        "disconnect",
        "revoke an integration's grant upstream, then archive it",
        _integrations_disconnect,
        _API_KEY,
        [json_output],
    )
    disconnect.add_argument("integration_id", metavar="INTEGRATION_ID")

    run.add_argument(
        "--agent",
        default="",
        metavar="SLUG",
        help="run a saved agent (its provider, model, prompt)",
    )

    # agents
    agents = group_of("agents", "saved agents of the sandbox (API key)")
    leaf(agents, "list", "list the saved agents", _agents_list, _API_KEY, [json_output])
    agent_show = leaf(agents, "show", "show one agent", _agents_show, _API_KEY, [json_output])
    agent_show.add_argument("slug", metavar="SLUG")
    agent_put = leaf(
        agents, "put", "create or replace an agent", _agents_put, _API_KEY, [json_output]
    )
    agent_put.add_argument("slug", metavar="SLUG", help="1-64 of a-z, 0-9 and '-'")
    agent_put.add_argument("--provider", required=True, help="the provider its runs use")
    agent_put.add_argument("--model", default="", help="the model (default: the provider's)")
    agent_put.add_argument("--name", default="", help="a human-readable name")
    agent_put.add_argument("--system", default="", metavar="TEXT", help="its system prompt")
    agent_put.add_argument(
        "--tool", action="append", default=[], dest="tools", metavar="NAME", help="allow a tool"
    )
    agent_put.add_argument(
        "--max-runtime", type=_non_negative_int, default=0, metavar="SECONDS", help="run ceiling"
    )
    agent_delete = leaf(agents, "delete", "delete an agent", _agents_delete, _API_KEY)
    agent_delete.add_argument("slug", metavar="SLUG")

    # compute: kill switches, sessions, providers, placements
    compute = group_of(
        "compute",
        "kill switches (operator key); compute sessions, providers and placements "
        "(API key for its sandbox, else operator key for all)",
    )
    scope_help = "global | end_user | agent_provider | compute_provider"
    paused = leaf(
        compute,
        "pause",
        "pause runs in a scope; runs in flight it covers end with an error",
        _compute_pause,
        _OPERATOR_KEY,
        [json_output],
    )
    paused.add_argument("scope", choices=sorted(PAUSE_SCOPES), help=scope_help)
    paused.add_argument(
        "target", nargs="?", default="", help="the end user or provider (none for global)"
    )
    paused.add_argument("--sandbox", default="", metavar="ID", help="limit it to one sandbox")
    paused.add_argument("--reason", default="", help="shown in the errors it causes")
    unpaused = leaf(
        compute, "unpause", "clear a pause", _compute_unpause, _OPERATOR_KEY, [json_output]
    )
    unpaused.add_argument("scope", choices=sorted(PAUSE_SCOPES), help=scope_help)
    unpaused.add_argument("target", nargs="?", default="", help="as given to pause")
    unpaused.add_argument("--sandbox", default="", metavar="ID", help="as given to pause")
    leaf(
        compute, "pauses", "list the pauses in force", _compute_pauses, _OPERATOR_KEY, [json_output]
    )
    sessions = leaf(
        compute,
        "sessions",
        "list compute sessions, oldest first (destroyed ones only with --status destroyed)",
        _compute_sessions,
        _API_ELSE_OPERATOR_KEY,
        [json_output],
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
        operate = leaf(
            compute, name, help_text, _compute_operate, _API_ELSE_OPERATOR_KEY, [json_output]
        )
        operate.add_argument("session_id", metavar="SESSION_ID", help="the session (cs_...)")
    leaf(
        compute,
        "providers",
        "list the compute providers in order of preference: health, load, start times, prices",
        _compute_providers,
        _API_ELSE_OPERATOR_KEY,
        [json_output],
    )
    explain = leaf(
        compute,
        "explain",
        "show where a run's runtime was placed and why",
        _compute_explain,
        _API_ELSE_OPERATOR_KEY,
        [json_output],
    )
    explain.add_argument("run_id", metavar="RUN_ID", help="a run of a self-hosted runtime")

    # the ledger: usage and ledger entries
    ledger_filter = argparse.ArgumentParser(add_help=False)
    ledger_filter.add_argument("--user", default="", metavar="ID", help="only this end user")
    ledger_filter.add_argument(
        "--agent", default="", metavar="SLUG", help="only runs of this saved agent"
    )
    ledger_filter.add_argument("--run", default="", metavar="RUN_ID", help="only this run")
    ledger_filter.add_argument("--provider", default="", help="only this agent or compute provider")
    ledger_filter.add_argument(
        "--kind", default="", choices=["tokens", "compute"], help="only this kind of entry"
    )
    ledger_filter.add_argument(
        "--since",
        type=_when,
        metavar="WHEN",
        help="from this time on: 30m, 12h, 7d, 2w ago, or an ISO date/time (UTC by default)",
    )
    ledger_filter.add_argument(
        "--until", type=_when, metavar="WHEN", help="before this time (same forms as --since)"
    )
    ledger_filter.add_argument(
        "--sandbox",
        default="",
        metavar="ID",
        help="read this sandbox's ledger with the operator key (default: the API key's)",
    )
    usage = leaf(
        commands,
        "usage",
        "add up what runs cost, per end user, agent, run, provider or day",
        _usage,
        _API_OR_OPERATOR_KEY,
        [ledger_filter, json_output],
    )
    usage.add_argument(
        "--by",
        default="user",
        choices=sorted(_USAGE_GROUPS),
        help="what to add up by (default: user, the end user)",
    )
    ledger = leaf(
        commands,
        "ledger",
        "list ledger entries, newest first: each run's token and compute costs",
        _ledger,
        _API_OR_OPERATOR_KEY,
        [ledger_filter, json_output],
    )
    ledger.add_argument(
        "--limit",
        type=_non_negative_int,
        default=100,
        metavar="N",
        help="show at most N entries (default 100; 0: all of them)",
    )

    # bench
    bench = group_of("bench", "benchmark providers through the daemon (API key)")
    bench_compare_parser = leaf(
        bench,
        "compare",
        "run one scripted workload on each provider in turn and compare them",
        _bench_compare,
        _API_KEY,
        [json_output],
    )
    add_compare_arguments(bench_compare_parser)

    # google
    google = group_of("google", "Vertex AI Agent Engine (needs the google extra)")
    help_text = "deploy the agent that runs Interlock turns on Agent Engine"
    google_deploy = google.add_parser(
        "deploy",
        help=help_text,
        description=help_text[:1].upper()
        + help_text[1:]
        + ": an ADK agent with the system prompt and one tool, dispatch, that sends "
        "tool calls back to the router. Prints the reasoning engine name to run on.",
        allow_abbrev=False,
    )
    google_deploy.set_defaults(local_handler=_google_deploy)
    google_deploy.add_argument(
        "--display-name", required=True, metavar="NAME", help="the agent's name in Google Cloud"
    )
    google_deploy.add_argument("--project", required=True, help="the Google Cloud project id")
    google_deploy.add_argument(
        "--location", required=True, metavar="REGION", help="where it runs, e.g. us-central1"
    )
    google_deploy.add_argument(
        "--router-url",
        required=True,
        metavar="URL",
        help="the daemon's HTTP side as the agent reaches it, e.g. https://router.example.com",
    )
    google_deploy.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"the Gemini model (default {DEFAULT_MODEL})"
    )
    prompt = google_deploy.add_mutually_exclusive_group()
    prompt.add_argument("--instruction", metavar="TEXT", help="the system prompt")
    prompt.add_argument(
        "--instruction-file", metavar="FILE", help="read the system prompt from FILE ('-': stdin)"
    )
    google_deploy.add_argument(
        "--staging-bucket",
        metavar="gs://BUCKET",
        help="where the SDK uploads the package (default gs://PROJECT-interlock-staging, "
        "created if missing)",
    )
    return parser


# -- commands --------------------------------------------------------------


async def _run(client: Client, args: argparse.Namespace, io: _Io) -> int:
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


async def _run_json(stream: RunStream, io: _Io) -> int:
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


async def _bench_compare(client: Client, args: argparse.Namespace, io: _Io) -> int:
    return await bench_compare(client, args, io.out, io.err)


async def _sandbox_create(client: Client, args: argparse.Namespace, io: _Io) -> int:
    sandbox = await client.sandboxes.create(args.name, quotas=_quotas(args))
    if args.json:
        io.out.write(to_json(sandbox) + "\n")
    else:
        render_sandbox(sandbox, io.out)
    return EXIT_OK


def _describe_agent(agent: agents_pb2.Agent) -> str:
    model = f"{agent.provider}/{agent.model}" if agent.model else agent.provider
    tools = f" tools={','.join(agent.tools)}" if agent.tools else ""
    return f"{agent.slug}\t{model}{tools}\t{agent.name}".rstrip()


async def _agents_list(client: Client, args: argparse.Namespace, io: _Io) -> int:
    found = await client.agents.list()
    if args.json:
        io.out.writelines(to_json(a) + "\n" for a in found)
    elif found:
        io.out.writelines(_describe_agent(a) + "\n" for a in found)
    else:
        io.err.write("no agents\n")
    return EXIT_OK


async def _agents_show(client: Client, args: argparse.Namespace, io: _Io) -> int:
    agent = await client.agents.get(args.slug)
    if args.json:
        io.out.write(to_json(agent) + "\n")
    else:
        io.out.write(_describe_agent(agent) + "\n")
        if agent.system:
            io.out.write(agent.system + "\n")
    return EXIT_OK


async def _agents_put(client: Client, args: argparse.Namespace, io: _Io) -> int:
    agent = await client.agents.put(
        agents_pb2.Agent(
            slug=args.slug,
            name=args.name,
            provider=args.provider,
            model=args.model,
            system=args.system,
            tools=args.tools,
            max_runtime_seconds=args.max_runtime,
        )
    )
    io.out.write((to_json(agent) if args.json else f"saved agent {agent.slug}") + "\n")
    return EXIT_OK


async def _agents_delete(client: Client, args: argparse.Namespace, io: _Io) -> int:
    await client.agents.delete(args.slug)
    io.out.write(f"deleted agent {args.slug}\n")
    return EXIT_OK


def _describe_pause(pause: compute_pb2.Pause) -> str:
    scope = compute_pb2.PauseScope.Name(pause.scope).removeprefix("PAUSE_SCOPE_").lower()
    where = f" in sandbox {pause.sandbox_id}" if pause.sandbox_id else ""
    what = f"{scope} {pause.target}".strip()
    return f"{what}{where}" + (f" ({pause.reason})" if pause.reason else "")


async def _compute_pause(client: Client, args: argparse.Namespace, io: _Io) -> int:
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


async def _compute_unpause(client: Client, args: argparse.Namespace, io: _Io) -> int:
    cleared = await client.compute.unpause(args.scope, target=args.target, sandbox_id=args.sandbox)
    if args.json:
        io.out.write(json.dumps({"cleared": cleared}) + "\n")
    elif cleared:
        io.out.write("cleared\n")
    else:
        io.err.write("no such pause\n")
    return EXIT_OK


async def _compute_pauses(client: Client, args: argparse.Namespace, io: _Io) -> int:
    pauses = await client.compute.pauses()
    if args.json:
        io.out.writelines(to_json(p) + "\n" for p in pauses)
    elif pauses:
        io.out.writelines(_describe_pause(p) + "\n" for p in pauses)
    else:
        io.err.write("no pauses\n")
    return EXIT_OK


async def _compute_sessions(client: Client, args: argparse.Namespace, io: _Io) -> int:
    found = await client.compute.sessions(
        end_user_id=args.user,
        agent=args.agent,
        status=args.status,
        provider=args.provider,
        sandbox_id=args.sandbox,
    )
    if args.json:
        io.out.writelines(to_json(c) + "\n" for c in found)
    elif found:
        render_compute_sessions(found, io.out)
    else:
        io.err.write("no compute sessions for this selection\n")
    return EXIT_OK


_PAST = {"suspend": "suspended", "resume": "resumed", "destroy": "destroyed"}


async def _compute_operate(client: Client, args: argparse.Namespace, io: _Io) -> int:
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


async def _compute_providers(client: Client, args: argparse.Namespace, io: _Io) -> int:
    providers = await client.compute.providers()
    if args.json:
        io.out.writelines(to_json(p) + "\n" for p in providers)
    elif providers:
        render_compute_providers(providers, io.out)
    else:
        io.err.write("no compute providers configured\n")
    return EXIT_OK


async def _compute_explain(client: Client, args: argparse.Namespace, io: _Io) -> int:
    placement = await client.compute.explain(args.run_id)
    if args.json:
        io.out.write(to_json(placement) + "\n")
    else:
        render_placement(placement, io.out)
    return EXIT_OK


async def _sandbox_list(client: Client, args: argparse.Namespace, io: _Io) -> int:
    sandboxes = [s async for s in client.sandboxes.list_all()]
    if args.json:
        io.out.writelines(to_json(s) + "\n" for s in sandboxes)
    elif sandboxes:
        render_sandboxes(sandboxes, io.out)
    else:
        io.err.write("no sandboxes\n")
    return EXIT_OK


async def _sandbox_get(client: Client, args: argparse.Namespace, io: _Io) -> int:
    sandbox = await client.sandboxes.get(args.sandbox_id)
    if args.json:
        io.out.write(to_json(sandbox) + "\n")
    else:
        render_sandbox(sandbox, io.out)
    return EXIT_OK


async def _sandbox_delete(client: Client, args: argparse.Namespace, io: _Io) -> int:
    await client.sandboxes.delete(args.sandbox_id)
    io.out.write(f"deleted sandbox {args.sandbox_id}\n")
    return EXIT_OK


async def _sandbox_set_quotas(client: Client, args: argparse.Namespace, io: _Io) -> int:
    sandbox = await client.sandboxes.set_quotas(args.sandbox_id, _quotas(args))
    if args.json:
        io.out.write(to_json(sandbox) + "\n")
    else:
        render_sandbox(sandbox, io.out)
    return EXIT_OK


async def _keys_create(client: Client, args: argparse.Namespace, io: _Io) -> int:
    created = await client.sandboxes.create_api_key(args.sandbox, name=args.name)
    key = created.api_key
    if args.json:
        io.out.write(to_json(created) + "\n")
    else:
        # Only the secret goes to stdout, so KEY=$(interlock keys create ...) works.
        io.err.write(f"created key {key.key_id} ({key.name}) for sandbox {key.sandbox_id}\n")
        io.out.write(created.secret + "\n")
    io.err.write(
        "This secret is shown only now: the daemon keeps only its hash. Store it safely.\n"
    )
    return EXIT_OK


async def _keys_list(client: Client, args: argparse.Namespace, io: _Io) -> int:
    keys = await client.sandboxes.list_api_keys(args.sandbox)
    if args.json:
        io.out.writelines(to_json(k) + "\n" for k in keys)
    elif keys:
        render_api_keys(keys, io.out)
    else:
        io.err.write(f"no API keys in sandbox {args.sandbox}\n")
    return EXIT_OK


async def _keys_revoke(client: Client, args: argparse.Namespace, io: _Io) -> int:
    key = await client.sandboxes.revoke_api_key(args.sandbox, args.key_id)
    if args.json:
        io.out.write(to_json(key) + "\n")
    else:
        io.out.write(f"revoked key {key.key_id} ({key.name})\n")
    return EXIT_OK


async def _conversations_list(client: Client, args: argparse.Namespace, io: _Io) -> int:
    found = [c async for c in client.conversations.list_all(end_user_id=args.end_user)]
    if args.json:
        io.out.writelines(to_json(c) + "\n" for c in found)
    elif found:
        render_conversations(found, io.out)
    else:
        io.err.write(f"no conversations for end user {args.end_user}\n")
    return EXIT_OK


async def _conversations_show(client: Client, args: argparse.Namespace, io: _Io) -> int:
    page = await client.conversations.get(args.session_id, end_user_id=args.end_user)
    # All pages are merged into one response, so --json prints one object with
    # every entry, shaped like the API's own GetConversationResponse.
    whole = conversations_pb2.GetConversationResponse(conversation=page.conversation)
    whole.entries.extend(page.entries)
    if not args.json:
        render_conversation_header(page.conversation, io.out)
        render_conversation_entries(page.entries, io.out)
    while page.next_page_token:
        page = await client.conversations.get(
            args.session_id, end_user_id=args.end_user, page_token=page.next_page_token
        )
        if args.json:
            whole.entries.extend(page.entries)
        else:
            render_conversation_entries(page.entries, io.out)
    if args.json:
        io.out.write(to_json(whole) + "\n")
    return EXIT_OK


async def _conversations_delete(client: Client, args: argparse.Namespace, io: _Io) -> int:
    await client.conversations.delete(args.session_id, end_user_id=args.end_user)
    io.out.write(f"deleted conversation {args.session_id}\n")
    return EXIT_OK


_USAGE_GROUPS: dict[str, UsageGroup] = {
    "user": "end_user",
    "agent": "agent",
    "run": "run",
    "provider": "provider",
    "day": "day",
}


class _LedgerFilters(TypedDict):
    run_id: str
    end_user_id: str
    agent: str
    provider: str
    kind: str
    since: datetime | None
    until: datetime | None
    sandbox_id: str


def _ledger_filters(args: argparse.Namespace) -> _LedgerFilters:
    """The ledger filter flags as keyword arguments of ``client.ledger`` calls."""
    return _LedgerFilters(
        run_id=args.run,
        end_user_id=args.user,
        agent=args.agent,
        provider=args.provider,
        kind=args.kind,
        since=args.since,
        until=args.until,
        sandbox_id=args.sandbox,
    )


async def _usage(client: Client, args: argparse.Namespace, io: _Io) -> int:
    group = _USAGE_GROUPS[args.by]
    summary = await client.ledger.summarize_all(group, **_ledger_filters(args))
    if args.json:
        io.out.write(to_json(summary) + "\n")
    elif summary.summaries:
        render_usage(summary, group, io.out)
    else:
        io.err.write("no usage recorded for this selection\n")
    return EXIT_OK


async def _ledger(client: Client, args: argparse.Namespace, io: _Io) -> int:
    limit: int = args.limit
    entries: list[ledger_pb2.LedgerEntry] = []
    more = False
    page_token = ""
    while True:
        page = await client.ledger.list(
            page_size=min(limit, 1000) if limit else 1000,
            page_token=page_token,
            **_ledger_filters(args),
        )
        entries.extend(page.entries)
        page_token = page.next_page_token
        if limit and len(entries) >= limit:
            more = bool(page_token) or len(entries) > limit
            del entries[limit:]
            break
        if not page_token:
            break
    if args.json:
        io.out.writelines(to_json(e) + "\n" for e in entries)
    elif entries:
        render_ledger_entries(entries, io.out)
    else:
        io.err.write("no ledger entries for this selection\n")
    if more:
        io.err.write(f"showing the newest {limit} entries; --limit 0 shows all of them\n")
    return EXIT_OK


class _UsageError(Exception):
    """A command line that parsed but cannot be acted on; exit 2."""


async def _integrations_catalog(client: Client, args: argparse.Namespace, io: _Io) -> int:
    entries = await client.integrations.catalog()
    if args.json:
        io.out.writelines(to_json(e) + "\n" for e in entries)
    elif entries:
        render_catalog(entries, io.out)
    else:
        io.err.write(
            "no apps can be connected on this daemon (the operator configures them); "
            "MCP servers are added with `interlock integrations add-mcp`\n"
        )
    return EXIT_OK


async def _integrations_connect(client: Client, args: argparse.Namespace, io: _Io) -> int:
    started = await client.integrations.connect(
        args.app,
        end_user_id=args.end_user,
        scope="sandbox" if args.sandbox_wide else "end_user",
    )
    if args.json:
        io.out.write(to_json(started) + "\n")
    else:
        # Only the URL goes to stdout, so URL=$(... --no-wait) works.
        whom = "the whole sandbox" if args.sandbox_wide else f"end user {args.end_user}"
        io.err.write(
            f"to connect {args.app} for {whom}, {args.end_user} opens this URL "
            f"(it expires {format_timestamp(started.expire_time)}):\n"
        )
        io.err.flush()
        io.out.write(started.authorize_url + "\n")
    io.out.flush()
    if args.no_wait:
        if not args.json:
            io.err.write(f"follow it with: interlock integrations watch {started.flow_id}\n")
        return EXIT_OK
    return await _follow_connect(client, started.flow_id, f"connecting {args.app}", args, io)


async def _integrations_watch(client: Client, args: argparse.Namespace, io: _Io) -> int:
    return await _follow_connect(client, args.flow_id, f"connect flow {args.flow_id}", args, io)


async def _follow_connect(
    client: Client, flow_id: str, what: str, args: argparse.Namespace, io: _Io
) -> int:
    """Wait for a connect flow; print the integration, or one error line and exit 1."""
    if not args.json:
        io.err.write("waiting for the end user to finish (Ctrl-C stops waiting)\n")
        io.err.flush()
    updates = client.integrations.watch_connect(flow_id, timeout=args.timeout)
    try:
        async with contextlib.aclosing(updates):
            async for update in updates:
                if args.json:
                    io.out.write(to_json(update) + "\n")
                    io.out.flush()
                integration = connect_result(update)
                if integration is not None:
                    if not args.json:
                        io.out.write(f"connected {describe_integration(integration)}\n")
                    return EXIT_OK
    except ConnectFailed as exc:
        io.err.write(f"error: {what} {exc.state}: {exc.reason or 'no reason given'}\n")
        return EXIT_ERROR
    except DeadlineExceeded:
        if args.timeout is None:
            raise
        io.err.write(
            f"error: stopped waiting after {args.timeout:g} s; the flow stays open until it "
            f"expires (interlock integrations watch {flow_id})\n"
        )
        return EXIT_ERROR
    io.err.write(f"error: the watch of connect flow {flow_id} ended before the flow did\n")
    return EXIT_ERROR


async def _integrations_list(client: Client, args: argparse.Namespace, io: _Io) -> int:
    found = await client.integrations.list(args.end_user, args.include_disconnected)
    if args.json:
        io.out.writelines(to_json(i) + "\n" for i in found)
    elif found:
        render_integrations(found, io.out)
    else:
        whose = f" for end user {args.end_user}" if args.end_user else ""
        io.err.write(f"no integrations{whose}\n")
    return EXIT_OK


def _environment(variable: str, flag: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise _UsageError(f"{flag}: the environment variable {variable} is not set")
    return value


def _bearer_token(args: argparse.Namespace, io: _Io) -> str:
    """The bearer token from stdin or the named variable; empty when neither flag is given."""
    if args.bearer_token_env:
        token = _environment(args.bearer_token_env, "--bearer-token-env").strip()
    elif args.bearer_token_stdin:
        if sys.stdin.isatty():
            token = getpass.getpass("bearer token: ", stream=io.err).strip()
        else:
            token = sys.stdin.read().strip()
        if not token:
            raise _UsageError("--bearer-token-stdin: read an empty token")
    else:
        return ""
    if "\n" in token or "\r" in token:
        raise _UsageError("the bearer token must be one line")
    return token


def _mcp_headers(args: argparse.Namespace) -> dict[str, str]:
    headers = dict(args.headers)
    for name, variable in args.header_vars:
        if name in headers:
            raise _UsageError(f"header {name} is given twice")
        headers[name] = _environment(variable, f"--header-env {name}")
    return headers


async def _integrations_add_mcp(client: Client, args: argparse.Namespace, io: _Io) -> int:
    try:
        headers = _mcp_headers(args)
        token = _bearer_token(args, io)
    except _UsageError as exc:
        io.err.write(f"error: {exc}\n")
        return EXIT_USAGE
    integration = await client.integrations.add_mcp_server(
        args.name, args.url, end_user_id=args.end_user, bearer_token=token, headers=headers
    )
    if args.json:
        io.out.write(to_json(integration) + "\n")
    else:
        io.out.write(f"added MCP server {describe_integration(integration)}\n")
    return EXIT_OK


async def _integrations_disconnect(client: Client, args: argparse.Namespace, io: _Io) -> int:
    integration = await client.integrations.disconnect(args.integration_id)
    if args.json:
        io.out.write(to_json(integration) + "\n")
    else:
        io.out.write(f"disconnected {describe_integration(integration)}\n")
    return EXIT_OK


def _instruction(args: argparse.Namespace) -> str | None:
    """The system prompt from --instruction or --instruction-file; None for the default."""
    path: str | None = args.instruction_file
    if path is None:
        text: str | None = args.instruction
        return text
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as file:
                text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DeployConfigError("--instruction-file", f"cannot read it: {exc}") from None
    if not text.strip():
        raise DeployConfigError("--instruction-file", f"{path} is empty")
    return text


def _google_deploy(args: argparse.Namespace, io: _Io) -> int:
    try:
        spec = build_spec(
            display_name=args.display_name,
            project=args.project,
            location=args.location,
            router_url=args.router_url,
            model=args.model,
            instruction=_instruction(args),
            staging_bucket=args.staging_bucket,
        )
        require_extra()
    except (DeployConfigError, MissingExtra) as exc:
        io.err.write(f"error: {exc}\n")
        return EXIT_USAGE
    if spec.router_url.startswith("http:"):
        io.err.write(
            "warning: --router-url is plain http: dispatch tokens and tool results "
            "will cross the network unencrypted\n"
        )
    io.err.write(
        f"deploying {spec.display_name!r} to {spec.project} in {spec.location}; "
        "Agent Engine takes several minutes to build it\n"
    )
    try:
        name = deploy(spec)
    except DeployFailed as exc:
        io.err.write(f"error: deploy failed: {exc}\n")
        return EXIT_ERROR
    io.out.write(name + "\n")
    io.err.write(f"run on it with: interlock run --provider google --google-engine {name} ...\n")
    return EXIT_OK


# -- entry points ----------------------------------------------------------


async def amain(argv: Sequence[str] | None = None) -> int:
    """Run the CLI inside an already running event loop; returns the exit code.

    Output goes to ``sys.stdout``/``sys.stderr`` as they are when called.
    """
    io = _Io(sys.stdout, sys.stderr)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and bad usage
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    local: _LocalHandler | None = getattr(args, "local_handler", None)
    if local is not None:
        return local(args, io)

    address = from_env(args.address, ENV_ADDRESS) or DEFAULT_ADDRESS
    api_key = from_env(args.api_key, ENV_API_KEY)
    operator_key = from_env(args.operator_key, ENV_OPERATOR_KEY)
    key = args.key
    if key == _API_OR_OPERATOR_KEY:
        key = _OPERATOR_KEY if args.sandbox else _API_KEY
    if key == _API_ELSE_OPERATOR_KEY:
        if not api_key and not operator_key:
            io.err.write(
                "error: no key: pass --api-key (its own sandbox) or --operator-key "
                f"(every sandbox), or set {ENV_API_KEY} or {ENV_OPERATOR_KEY}\n"
            )
            return EXIT_USAGE
        key = _API_KEY if api_key else _OPERATOR_KEY
    if key == _API_KEY and not api_key:
        io.err.write(f"error: no sandbox API key: pass --api-key or set {ENV_API_KEY}\n")
        return EXIT_USAGE
    if key == _OPERATOR_KEY and not operator_key:
        io.err.write(f"error: no operator key: pass --operator-key or set {ENV_OPERATOR_KEY}\n")
        return EXIT_USAGE

    handler: _Handler = args.handler
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


if __name__ == "__main__":
    sys.exit(main())

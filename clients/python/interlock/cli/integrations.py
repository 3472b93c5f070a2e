"""``interlock integrations ...``: connect OAuth apps and MCP servers whose tools runs get
(API key). Secrets (bearer tokens, secret headers) come from stdin or the environment,
never from arguments, which show in ``ps`` and shell history."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from typing import TYPE_CHECKING

from interlock.calls import connect_result
from interlock.cli.common import (
    API_KEY,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CommandTree,
    Io,
    add_timeout_option,
    key_value,
    write_list,
)
from interlock.client import Client
from interlock.errors import ConnectFailed, DeadlineExceeded
from interlock.render import (
    describe_integration,
    format_timestamp,
    render_catalog,
    render_integrations,
    to_json,
)

if TYPE_CHECKING:
    from interlock.cli.common import Subcommands


def add_commands(tree: CommandTree) -> None:
    """``interlock integrations ACTION``."""
    integrations = tree.group(
        "integrations", "connect OAuth apps and MCP servers whose tools runs get (API key)"
    )
    tree.leaf(
        integrations,
        "catalog",
        "list the apps that can be connected, with the tools each provides",
        _integrations_catalog,
        API_KEY,
        [tree.json_output],
    )
    connect = tree.leaf(
        integrations,
        "connect",
        "connect an OAuth app: print the URL the end user opens, then wait until they finish",
        _integrations_connect,
        API_KEY,
        [tree.json_output],
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
    add_timeout_option(connect)
    connect.add_argument(
        "--no-wait",
        action="store_true",
        help="print the URL and the flow id and return (follow it with `integrations watch`)",
    )
    watch = tree.leaf(
        integrations,
        "watch",
        "wait for a connect flow to finish",
        _integrations_watch,
        API_KEY,
        [tree.json_output],
    )
    watch.add_argument("flow_id", metavar="FLOW_ID")
    add_timeout_option(watch)
    _add_list_command(tree, integrations)
    _add_mcp_command(tree, integrations)
    disconnect = tree.leaf(
        integrations,
        "disconnect",
        "revoke an integration's grant upstream, then archive it",
        _integrations_disconnect,
        API_KEY,
        [tree.json_output],
    )
    disconnect.add_argument("integration_id", metavar="INTEGRATION_ID")


def _add_list_command(tree: CommandTree, integrations: Subcommands) -> None:
    listing = tree.leaf(
        integrations,
        "list",
        "list integrations, oldest first",
        _integrations_list,
        API_KEY,
        [tree.json_output],
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


def _add_mcp_command(tree: CommandTree, integrations: Subcommands) -> None:
    add_mcp = tree.leaf(
        integrations,
        "add-mcp",
        "register an MCP server (Streamable HTTP) whose tools runs get",
        _integrations_add_mcp,
        API_KEY,
        [tree.json_output],
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
        type=key_value,
        default=[],
        dest="headers",
        metavar="NAME=VALUE",
        help="send this header too (repeatable); not for secrets, which would show in the "
        "process list: use --header-env",
    )
    add_mcp.add_argument(
        "--header-env",
        action="append",
        type=key_value,
        default=[],
        dest="header_vars",
        metavar="NAME=VAR",
        help="send header NAME with the value of the environment variable VAR (repeatable)",
    )


class _UsageError(Exception):
    """A command line that parsed but cannot be acted on; exit 2."""


async def _integrations_catalog(client: Client, args: argparse.Namespace, io: Io) -> int:
    entries = await client.integrations.catalog()
    write_list(
        io,
        entries,
        render_catalog,
        "no apps can be connected on this daemon (the operator configures them); "
        "MCP servers are added with `interlock integrations add-mcp`",
        json=args.json,
    )
    return EXIT_OK


async def _integrations_connect(client: Client, args: argparse.Namespace, io: Io) -> int:
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


async def _integrations_watch(client: Client, args: argparse.Namespace, io: Io) -> int:
    return await _follow_connect(client, args.flow_id, f"connect flow {args.flow_id}", args, io)


async def _follow_connect(
    client: Client, flow_id: str, what: str, args: argparse.Namespace, io: Io
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


async def _integrations_list(client: Client, args: argparse.Namespace, io: Io) -> int:
    found = await client.integrations.list(args.end_user, args.include_disconnected)
    whose = f" for end user {args.end_user}" if args.end_user else ""
    write_list(io, found, render_integrations, f"no integrations{whose}", json=args.json)
    return EXIT_OK


def _environment(variable: str, flag: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise _UsageError(f"{flag}: the environment variable {variable} is not set")
    return value


def _bearer_token(args: argparse.Namespace, io: Io) -> str:
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


async def _integrations_add_mcp(client: Client, args: argparse.Namespace, io: Io) -> int:
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


async def _integrations_disconnect(client: Client, args: argparse.Namespace, io: Io) -> int:
    integration = await client.integrations.disconnect(args.integration_id)
    if args.json:
        io.out.write(to_json(integration) + "\n")
    else:
        io.out.write(f"disconnected {describe_integration(integration)}\n")
    return EXIT_OK

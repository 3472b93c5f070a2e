"""``interlock sandbox ...`` and ``interlock keys ...``: sandboxes, their quotas and their
API keys (operator key)."""

from __future__ import annotations

import argparse

from interlock.cli.common import (
    EXIT_OK,
    OPERATOR_KEY,
    CommandTree,
    Io,
    non_negative_int,
    non_negative_usd,
    write_list,
)
from interlock.client import Client
from interlock.render import render_api_keys, render_sandbox, render_sandboxes, to_json
from interlock.v1 import sandboxes_pb2


def add_commands(tree: CommandTree) -> None:
    """``interlock sandbox ACTION`` and ``interlock keys ACTION``."""
    sandbox = tree.group("sandbox", "administer sandboxes (operator key)")
    create = tree.leaf(
        sandbox, "create", "create a sandbox", _sandbox_create, OPERATOR_KEY, [tree.json_output]
    )
    create.add_argument("name", help="1-64 letters, digits, '_', '-' or '.'")
    _add_quota_options(create)
    tree.leaf(sandbox, "list", "list sandboxes", _sandbox_list, OPERATOR_KEY, [tree.json_output])
    get = tree.leaf(
        sandbox, "get", "show one sandbox", _sandbox_get, OPERATOR_KEY, [tree.json_output]
    )
    get.add_argument("sandbox_id", metavar="ID")
    delete = tree.leaf(
        sandbox,
        "delete",
        "delete a sandbox and everything in it (irreversible)",
        _sandbox_delete,
        OPERATOR_KEY,
    )
    delete.add_argument("sandbox_id", metavar="ID")
    quotas = tree.leaf(
        sandbox,
        "set-quotas",
        "replace a sandbox's quotas (unset flags become unlimited)",
        _sandbox_set_quotas,
        OPERATOR_KEY,
        [tree.json_output],
    )
    quotas.add_argument("sandbox_id", metavar="ID")
    _add_quota_options(quotas)
    _add_key_commands(tree)


def _add_key_commands(tree: CommandTree) -> None:
    keys = tree.group("keys", "administer a sandbox's API keys (operator key)")
    key_create = tree.leaf(
        keys, "create", "create an API key", _keys_create, OPERATOR_KEY, [tree.json_output]
    )
    key_create.add_argument("--sandbox", required=True, metavar="ID", help="the sandbox")
    key_create.add_argument("--name", default="default", help="a name to recognise the key by")
    key_list = tree.leaf(
        keys, "list", "list a sandbox's API keys", _keys_list, OPERATOR_KEY, [tree.json_output]
    )
    key_list.add_argument("--sandbox", required=True, metavar="ID", help="the sandbox")
    revoke = tree.leaf(
        keys, "revoke", "revoke an API key at once", _keys_revoke, OPERATOR_KEY, [tree.json_output]
    )
    revoke.add_argument("--sandbox", required=True, metavar="ID", help="the sandbox")
    revoke.add_argument("key_id", metavar="KEY_ID")


def _add_quota_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-concurrent-runs",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="runs in progress at once across the sandbox (0: unlimited)",
    )
    parser.add_argument(
        "--max-concurrent-runs-per-end-user",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="runs in progress at once per end user (0: unlimited)",
    )
    parser.add_argument(
        "--max-tokens-per-day",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="tokens per UTC day across the sandbox (0: unlimited)",
    )
    for flag, what in (
        ("--usd-per-day", "USD per UTC day across the sandbox"),
        ("--usd-per-month", "USD per UTC calendar month across the sandbox"),
        ("--end-user-usd-per-day", "USD per UTC day for each end user"),
        ("--end-user-usd-per-month", "USD per UTC calendar month for each end user"),
    ):
        parser.add_argument(
            flag, type=non_negative_usd, default=0.0, metavar="USD", help=f"{what} (0: no limit)"
        )


def _quotas(args: argparse.Namespace) -> sandboxes_pb2.Quotas:
    return sandboxes_pb2.Quotas(
        max_concurrent_runs=args.max_concurrent_runs,
        max_concurrent_runs_per_end_user=args.max_concurrent_runs_per_end_user,
        max_tokens_per_day=args.max_tokens_per_day,
        usd_per_day=args.usd_per_day,
        usd_per_month=args.usd_per_month,
        end_user_usd_per_day=args.end_user_usd_per_day,
        end_user_usd_per_month=args.end_user_usd_per_month,
    )


async def _sandbox_create(client: Client, args: argparse.Namespace, io: Io) -> int:
    sandbox = await client.sandboxes.create(args.name, quotas=_quotas(args))
    if args.json:
        io.out.write(to_json(sandbox) + "\n")
    else:
        render_sandbox(sandbox, io.out)
    return EXIT_OK


async def _sandbox_list(client: Client, args: argparse.Namespace, io: Io) -> int:
    sandboxes = [s async for s in client.sandboxes.list_all()]
    write_list(io, sandboxes, render_sandboxes, "no sandboxes", json=args.json)
    return EXIT_OK


async def _sandbox_get(client: Client, args: argparse.Namespace, io: Io) -> int:
    sandbox = await client.sandboxes.get(args.sandbox_id)
    if args.json:
        io.out.write(to_json(sandbox) + "\n")
    else:
        render_sandbox(sandbox, io.out)
    return EXIT_OK


async def _sandbox_delete(client: Client, args: argparse.Namespace, io: Io) -> int:
    await client.sandboxes.delete(args.sandbox_id)
    io.out.write(f"deleted sandbox {args.sandbox_id}\n")
    return EXIT_OK


async def _sandbox_set_quotas(client: Client, args: argparse.Namespace, io: Io) -> int:
    sandbox = await client.sandboxes.set_quotas(args.sandbox_id, _quotas(args))
    if args.json:
        io.out.write(to_json(sandbox) + "\n")
    else:
        render_sandbox(sandbox, io.out)
    return EXIT_OK


async def _keys_create(client: Client, args: argparse.Namespace, io: Io) -> int:
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


async def _keys_list(client: Client, args: argparse.Namespace, io: Io) -> int:
    keys = await client.sandboxes.list_api_keys(args.sandbox)
    write_list(io, keys, render_api_keys, f"no API keys in sandbox {args.sandbox}", json=args.json)
    return EXIT_OK


async def _keys_revoke(client: Client, args: argparse.Namespace, io: Io) -> int:
    key = await client.sandboxes.revoke_api_key(args.sandbox, args.key_id)
    if args.json:
        io.out.write(to_json(key) + "\n")
    else:
        io.out.write(f"revoked key {key.key_id} ({key.name})\n")
    return EXIT_OK

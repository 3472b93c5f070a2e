"""``interlock usage`` and ``interlock ledger``: what runs cost, added up or entry by entry
(the API key for its own sandbox, the operator key for the one ``--sandbox`` names)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TypedDict

from interlock.cli.common import (
    API_OR_OPERATOR_KEY,
    EXIT_OK,
    CommandTree,
    Io,
    non_negative_int,
    when,
    write_list,
)
from interlock.client import Client, UsageGroup
from interlock.render import (
    budgets_in_use,
    render_budgets,
    render_ledger_entries,
    render_usage,
    to_json,
)
from interlock.v1 import ledger_pb2

_USAGE_GROUPS: dict[str, UsageGroup] = {
    "user": "end_user",
    "agent": "agent",
    "run": "run",
    "provider": "provider",
    "day": "day",
}


def add_commands(tree: CommandTree) -> None:
    """``interlock usage`` and ``interlock ledger``, with the filters both take."""
    filters = _filter_options()
    usage = tree.leaf(
        tree.commands,
        "usage",
        "add up what runs cost, per end user, agent, run, provider or day",
        _usage,
        API_OR_OPERATOR_KEY,
        [filters, tree.json_output],
    )
    usage.add_argument(
        "--by",
        default="user",
        choices=sorted(_USAGE_GROUPS),
        help="what to add up by (default: user, the end user)",
    )
    ledger = tree.leaf(
        tree.commands,
        "ledger",
        "list ledger entries, newest first: each run's token and compute costs",
        _ledger,
        API_OR_OPERATOR_KEY,
        [filters, tree.json_output],
    )
    ledger.add_argument(
        "--limit",
        type=non_negative_int,
        default=100,
        metavar="N",
        help="show at most N entries (default 100; 0: all of them)",
    )


def _filter_options() -> argparse.ArgumentParser:
    """The parent parser of the ledger's filter flags."""
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
        type=when,
        metavar="WHEN",
        help="from this time on: 30m, 12h, 7d, 2w ago, or an ISO date/time (UTC by default)",
    )
    ledger_filter.add_argument(
        "--until", type=when, metavar="WHEN", help="before this time (same forms as --since)"
    )
    ledger_filter.add_argument(
        "--sandbox",
        default="",
        metavar="ID",
        help="read this sandbox's ledger with the operator key (default: the API key's)",
    )
    return ledger_filter


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


async def _usage(client: Client, args: argparse.Namespace, io: Io) -> int:
    group = _USAGE_GROUPS[args.by]
    summary = await client.ledger.summarize_all(group, **_ledger_filters(args))
    if args.json:
        io.out.write(to_json(summary) + "\n")
    elif summary.summaries:
        render_usage(summary, group, io.out)
    else:
        io.err.write("no usage recorded for this selection\n")
        if budgets_in_use(summary.budgets):
            render_budgets(summary.budgets, io.out)
    return EXIT_OK


async def _ledger(client: Client, args: argparse.Namespace, io: Io) -> int:
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
    write_list(
        io, entries, render_ledger_entries, "no ledger entries for this selection", json=args.json
    )
    if more:
        io.err.write(f"showing the newest {limit} entries; --limit 0 shows all of them\n")
    return EXIT_OK

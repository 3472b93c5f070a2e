"""``interlock agents ...``: the sandbox's saved agents (API key)."""

from __future__ import annotations

import argparse

from interlock.cli.common import (
    API_KEY,
    EXIT_OK,
    CommandTree,
    Io,
    non_negative_int,
    write_list,
)
from interlock.client import Client
from interlock.render import to_json
from interlock.v1 import agents_pb2


def add_commands(tree: CommandTree) -> None:
    """``interlock agents ACTION``."""
    agents = tree.group("agents", "saved agents of the sandbox (API key)")
    tree.leaf(agents, "list", "list the saved agents", _agents_list, API_KEY, [tree.json_output])
    agent_show = tree.leaf(
        agents, "show", "show one agent", _agents_show, API_KEY, [tree.json_output]
    )
    agent_show.add_argument("slug", metavar="SLUG")
    agent_put = tree.leaf(
        agents, "put", "create or replace an agent", _agents_put, API_KEY, [tree.json_output]
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
        "--max-runtime", type=non_negative_int, default=0, metavar="SECONDS", help="run ceiling"
    )
    agent_delete = tree.leaf(agents, "delete", "delete an agent", _agents_delete, API_KEY)
    agent_delete.add_argument("slug", metavar="SLUG")


def _describe_agent(agent: agents_pb2.Agent) -> str:
    model = f"{agent.provider}/{agent.model}" if agent.model else agent.provider
    tools = f" tools={','.join(agent.tools)}" if agent.tools else ""
    return f"{agent.slug}\t{model}{tools}\t{agent.name}".rstrip()


async def _agents_list(client: Client, args: argparse.Namespace, io: Io) -> int:
    found = await client.agents.list()
    write_list(
        io,
        found,
        lambda agents, out: out.writelines(_describe_agent(a) + "\n" for a in agents),
        "no agents",
        json=args.json,
    )
    return EXIT_OK


async def _agents_show(client: Client, args: argparse.Namespace, io: Io) -> int:
    agent = await client.agents.get(args.slug)
    if args.json:
        io.out.write(to_json(agent) + "\n")
    else:
        io.out.write(_describe_agent(agent) + "\n")
        if agent.system:
            io.out.write(agent.system + "\n")
    return EXIT_OK


async def _agents_put(client: Client, args: argparse.Namespace, io: Io) -> int:
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


async def _agents_delete(client: Client, args: argparse.Namespace, io: Io) -> int:
    await client.agents.delete(args.slug)
    io.out.write(f"deleted agent {args.slug}\n")
    return EXIT_OK

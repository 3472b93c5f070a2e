"""``interlock conversations ...``: read and delete an end user's conversations (API key)."""

from __future__ import annotations

import argparse

from interlock.cli.common import (
    API_KEY,
    EXIT_OK,
    CommandTree,
    Io,
    write_list,
)
from interlock.client import Client
from interlock.render import (
    render_conversation_entries,
    render_conversation_header,
    render_conversations,
    to_json,
)
from interlock.v1 import conversations_pb2


def add_commands(tree: CommandTree) -> None:
    """``interlock conversations ACTION``."""
    conversations = tree.group("conversations", "read an end user's conversations (API key)")
    tree.leaf(
        conversations,
        "list",
        "list an end user's conversations, most recent first",
        _conversations_list,
        API_KEY,
        [tree.end_user, tree.json_output],
    )
    show = tree.leaf(
        conversations,
        "show",
        "print a conversation's entries, oldest first",
        _conversations_show,
        API_KEY,
        [tree.end_user, tree.json_output],
    )
    show.add_argument("session_id", metavar="SESSION")
    forget = tree.leaf(
        conversations,
        "delete",
        "delete a conversation and everything stored for it",
        _conversations_delete,
        API_KEY,
        [tree.end_user],
    )
    forget.add_argument("session_id", metavar="SESSION")


async def _conversations_list(client: Client, args: argparse.Namespace, io: Io) -> int:
    found = [c async for c in client.conversations.list_all(end_user_id=args.end_user)]
    write_list(
        io,
        found,
        render_conversations,
        f"no conversations for end user {args.end_user}",
        json=args.json,
    )
    return EXIT_OK


async def _conversations_show(client: Client, args: argparse.Namespace, io: Io) -> int:
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


async def _conversations_delete(client: Client, args: argparse.Namespace, io: Io) -> int:
    await client.conversations.delete(args.session_id, end_user_id=args.end_user)
    io.out.write(f"deleted conversation {args.session_id}\n")
    return EXIT_OK

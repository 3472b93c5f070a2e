"""An end user's conversations: run a turn, list them, read one, delete it.

INTERLOCK_API_KEY=ilk_... python conversations.py
"""

import asyncio
import sys

from interlock import Client, InterlockError, NotFound


async def main() -> None:
    async with Client() as client:  # INTERLOCK_ADDRESS, INTERLOCK_API_KEY
        outcome = await client.run_text("Remember: my order is #42.", end_user_id="u-conv")
        outcome.raise_for_error()

        # Most recently active first; list_all follows the page tokens.
        async for conversation in client.conversations.list_all(end_user_id="u-conv"):
            print("conversation:", conversation.session_id == outcome.session_id)

        stored = await client.conversations.get(outcome.session_id, end_user_id="u-conv")
        print("entries:", len(stored.entries), stored.entries[0].text)

        # Conversations are private to their end user: another one gets NotFound.
        try:
            await client.conversations.get(outcome.session_id, end_user_id="someone-else")
        except NotFound as exc:
            print("other user:", exc.reason)

        await client.conversations.delete(outcome.session_id, end_user_id="u-conv")


try:
    asyncio.run(main())
except InterlockError as exc:
    sys.exit(f"error: {exc}")

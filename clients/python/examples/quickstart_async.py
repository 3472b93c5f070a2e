"""Stream one turn, then continue the conversation, with the asyncio client.

    INTERLOCK_API_KEY=ilk_... python quickstart_async.py

INTERLOCK_ADDRESS (default 127.0.0.1:7600) says where the daemon listens; the
turn runs on the daemon's default provider and model.
"""

import asyncio
import sys

from interlock import Client, InterlockError


async def main() -> int:
    async with Client() as client:  # INTERLOCK_ADDRESS, INTERLOCK_API_KEY
        session_id = ""
        async with client.run("Where is my order?", end_user_id="u-123") as stream:
            async for event in stream:
                kind = event.WhichOneof("event")
                if kind == "run_started":
                    session_id = event.run_started.session_id
                elif kind == "text_delta":
                    print(event.text_delta.text, end="", flush=True)
                elif kind == "finish":
                    print()
                elif kind == "error":  # a failure after the run started: the last event
                    print(f"error: {event.error.code}: {event.error.message}", file=sys.stderr)
                    return 1

        # The same conversation: session_id from the first turn's run_started event.
        outcome = await client.run_text("Thanks!", end_user_id="u-123", session_id=session_id)
        outcome.raise_for_error()  # RunFailed if it ended with an error event
        print(outcome.text)
    return 0


try:
    sys.exit(asyncio.run(main()))
except InterlockError as exc:  # the one root of every client error
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)

"""Leaving a run early, deadlines, and retrying a run by its request_id.

INTERLOCK_API_KEY=ilk_... python cancel_and_retry.py
"""

import asyncio
import sys
import uuid

from interlock import Client, DeadlineExceeded, InterlockError, Unavailable


async def main() -> None:
    async with Client() as client:  # INTERLOCK_ADDRESS, INTERLOCK_API_KEY
        # Leaving the loop (break, return, an exception) cancels the run on the daemon:
        # it is recorded cancelled and not run, or billed, to its end.
        async for event in client.run("Tell me a long story.", end_user_id="u-retry"):
            if event.HasField("text_delta"):
                print("first words:", bool(event.text_delta.text))
                break

        # timeout= is the run's deadline; the daemon stops the turn when it passes.
        try:
            await client.run_text("hello", end_user_id="u-retry", timeout=60)
        except DeadlineExceeded:
            print("too slow")

        # A request_id makes a run safe to send again: a retry after a lost connection
        # or a daemon restart resumes the same run, and one that ended replays it.
        request_id = str(uuid.uuid4())
        for attempt in range(3):
            try:
                outcome = await client.run_text(
                    "hello", end_user_id="u-retry", request_id=request_id
                )
                break
            except Unavailable as exc:  # retryable: the daemon went away mid-run
                await asyncio.sleep(exc.retry_delay or 2**attempt)
        else:
            sys.exit("the daemon stayed unavailable")
        again = await client.run_text("hello", end_user_id="u-retry", request_id=request_id)
        print("replayed:", again.replayed, again.text == outcome.text)


try:
    asyncio.run(main())
except InterlockError as exc:
    sys.exit(f"error: {exc}")

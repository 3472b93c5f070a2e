"""What runs cost: the ledger's entries and usage summaries of the sandbox.

INTERLOCK_API_KEY=ilk_... python ledger.py
"""

import asyncio
import sys
from datetime import UTC, datetime, timedelta

from interlock import Client, InterlockError


async def main() -> None:
    async with Client() as client:  # INTERLOCK_ADDRESS, INTERLOCK_API_KEY
        outcome = await client.run_text("hello", end_user_id="u-ledger")
        outcome.raise_for_error()

        # Entries, newest first, narrowed by run, end user, agent, provider, kind or time.
        async for entry in client.ledger.list_all(run_id=outcome.run_id):
            print("entry:", entry.run_id == outcome.run_id, entry.end_user_id)

        # Usage and cost per end user ("agent", "run", "provider" or "day") over a day.
        since = datetime.now(UTC) - timedelta(days=1)
        summary = await client.ledger.summarize_all("end_user", since=since)
        for row in summary.summaries:
            print("end user:", row.key, row.run_count, "runs", row.total_cost_usd, "USD")


try:
    asyncio.run(main())
except InterlockError as exc:
    sys.exit(f"error: {exc}")

"""Saved agents: store a provider, model, system prompt and tools under a slug, run by slug.

    INTERLOCK_API_KEY=ilk_... python agents.py [PROVIDER]

PROVIDER is a provider configured on the daemon (default "local", as under make serve).
"""

import asyncio
import sys

from interlock import Client, InterlockError, InvalidArgument
from interlock.v1.agents_pb2 import Agent


async def main(provider: str) -> None:
    async with Client() as client:  # INTERLOCK_ADDRESS, INTERLOCK_API_KEY
        support = Agent(
            slug="support",
            name="Support",
            provider=provider,
            system="You answer questions about orders, briefly.",
            max_output_tokens=200,
        )
        await client.agents.put(support)  # creates it, or replaces it
        print("agents:", [agent.slug for agent in await client.agents.list()])
        print("system:", (await client.agents.get("support")).system)

        outcome = await client.run_text(
            "Where is my order?", end_user_id="u-agent", agent="support"
        )
        outcome.raise_for_error()
        print("ran on:", outcome.provider)

        try:  # a bad field is named, in the proto's spelling
            await client.agents.put(Agent(slug="Not A Slug", provider=provider))
        except InvalidArgument as exc:
            print("refused:", [violation.field for violation in exc.field_violations])

        await client.agents.delete("support")


try:
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "local"))
except InterlockError as exc:
    sys.exit(f"error: {exc}")

"""Integrations: what can be connected, and what an end user's runs get tools from.

    INTERLOCK_API_KEY=ilk_... python integrations.py

Connecting an OAuth app (connect, watch_connect, wait_connected) and adding an
MCP server are shown in the README's "Connecting" section.
"""

import asyncio
import sys

from interlock import Client, InterlockError


async def main() -> None:
    async with Client() as client:  # INTERLOCK_ADDRESS, INTERLOCK_API_KEY
        for entry in await client.integrations.catalog():
            print("catalog:", entry.app, "available" if entry.available else "not configured")
        connected = await client.integrations.list("u-int")  # the end user's and sandbox-wide
        print("connected:", [integration.app for integration in connected])
        for integration in connected:
            await client.integrations.disconnect(integration.integration_id)


try:
    asyncio.run(main())
except InterlockError as exc:
    sys.exit(f"error: {exc}")

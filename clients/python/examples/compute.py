"""Operating runs: kill switches (operator key), compute providers, sessions and placements.

INTERLOCK_API_KEY=ilk_... INTERLOCK_OPERATOR_KEY=ilop_... python compute.py
"""

import asyncio
import sys

from interlock import Client, FailedPrecondition, InterlockError, NotFound


async def main() -> None:
    async with Client() as client:  # INTERLOCK_ADDRESS, INTERLOCK_API_KEY, INTERLOCK_OPERATOR_KEY
        sandbox = await anext(client.sandboxes.list_all())
        # Stop one end user's runs until the pause is cleared.
        await client.compute.pause(
            "end_user", target="u-abuser", sandbox_id=sandbox.sandbox_id, reason="investigating"
        )
        print("pauses:", [(p.target, p.reason) for p in await client.compute.pauses()])
        try:
            await client.run_text("hello", end_user_id="u-abuser")
        except FailedPrecondition as exc:
            print("paused:", exc.reason)
        cleared = await client.compute.unpause(
            "end_user", target="u-abuser", sandbox_id=sandbox.sandbox_id
        )
        print("cleared:", cleared)

        # Where self-hosted runtimes (provider "hermes") run: providers, in order of preference.
        for provider in await client.compute.providers():
            print("compute provider:", provider.name)
        for session in await client.compute.sessions(status="running"):
            print("session:", session.id, session.end_user_id)
            # suspend, resume and destroy take a session's id:
            # await client.compute.suspend(session.id)

        # Why a run was placed where it was; a run that used no compute is NotFound.
        outcome = await client.run_text("hello", end_user_id="u-compute")
        try:
            placement = await client.compute.explain(outcome.run_id)
            print("placed on:", placement.provider, placement.reason)
        except NotFound:
            print("placed on: no compute")


try:
    asyncio.run(main())
except InterlockError as exc:
    sys.exit(f"error: {exc}")

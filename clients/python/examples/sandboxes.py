"""Set up a tenant with the operator key: a sandbox, its quotas, an API key, a secret.

    INTERLOCK_OPERATOR_KEY=ilop_... python sandboxes.py

Walks every Sandboxes call, then deletes the sandbox again (so it can run twice).
"""

import asyncio
import sys

from interlock import Client, InterlockError
from interlock.v1.sandboxes_pb2 import Quotas


async def main() -> None:
    async with Client() as client:  # INTERLOCK_ADDRESS, INTERLOCK_OPERATOR_KEY
        sandboxes = client.sandboxes
        sandbox = await sandboxes.create("example-tenant", quotas=Quotas(max_concurrent_runs=10))
        sandbox_id = sandbox.sandbox_id
        await sandboxes.set_quotas(
            sandbox_id, Quotas(max_concurrent_runs=20, max_tokens_per_day=10**6)
        )
        print("quotas:", (await sandboxes.get(sandbox_id)).quotas.max_concurrent_runs)

        created = await sandboxes.create_api_key(sandbox_id, name="backend")
        # created.secret is the tenant's INTERLOCK_API_KEY: shown this once, store it now.
        print("keys:", [key.name for key in await sandboxes.list_api_keys(sandbox_id)])

        # Provider credentials of the tenant's own (sealed at rest, never returned).
        await sandboxes.set_secret(sandbox_id, "openai_api_key", "sk-example")
        print("secrets:", await sandboxes.list_secrets(sandbox_id))
        await sandboxes.delete_secret(sandbox_id, "openai_api_key")

        revoked = await sandboxes.revoke_api_key(sandbox_id, created.api_key.key_id)
        print("revoked:", revoked.HasField("revoke_time"))
        print("sandboxes:", [s.name async for s in sandboxes.list_all()])
        await sandboxes.delete(sandbox_id)  # and everything in it


try:
    asyncio.run(main())
except InterlockError as exc:
    sys.exit(f"error: {exc}")

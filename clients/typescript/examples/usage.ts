// What this sandbox's runs cost today, per end user, and the state of the
// compute providers that self-hosted runtimes run on.
//
//   INTERLOCK_API_KEY=ilk_... node usage.js
//
// INTERLOCK_ADDRESS (default 127.0.0.1:7600) says where the daemon listens.
import { Interlock, InterlockError } from "@interlock/client";

const router = new Interlock(); // INTERLOCK_ADDRESS, INTERLOCK_API_KEY

try {
  const midnight = new Date();
  midnight.setUTCHours(0, 0, 0, 0);
  const { summaries, total } = await router.ledger.summarizeAll({ by: "endUser", since: midnight });
  for (const row of summaries) {
    const tokens = `${row.usage?.inputTokens ?? 0n} in, ${row.usage?.outputTokens ?? 0n} out`;
    console.log(`${row.key}: ${row.runCount} runs, ${tokens}, $${row.totalCostUsd.toFixed(4)}`);
  }
  console.log(`total: ${total?.runCount ?? 0n} runs, $${(total?.totalCostUsd ?? 0).toFixed(4)}`);

  for (const provider of await router.compute.providers()) {
    const health = provider.healthy ? "healthy" : `unhealthy (${provider.breaker})`;
    console.log(`compute ${provider.name}: ${health}, ${provider.runningSessions} running`);
  }
} catch (err) {
  if (!(err instanceof InterlockError)) throw err;
  console.error(`error: ${err.message}`);
  process.exitCode = 1;
} finally {
  router.close();
}

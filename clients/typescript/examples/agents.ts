// Save an agent, run a turn on it by its slug, read the conversation back.
//
//   INTERLOCK_API_KEY=ilk_... node agents.js
//
// INTERLOCK_ADDRESS (default 127.0.0.1:7600) says where the daemon listens;
// INTERLOCK_PROVIDER names the agent's provider (default "local", as under
// make serve).
import { Interlock, InterlockError, InvalidArgument, v1 } from "@interlock/client";

const router = new Interlock(); // INTERLOCK_ADDRESS, INTERLOCK_API_KEY

try {
  await router.agents.put({
    slug: "support",
    name: "Support",
    provider: process.env.INTERLOCK_PROVIDER ?? "local",
    system: "You are a support agent. Be brief.",
  });
  const turn = await router.runText({ agent: "support", message: "Where is my order?", endUserId: "u-123" });
  turn.throwIfFailed();

  const stored = await router.conversations.get({ endUserId: "u-123", sessionId: turn.sessionId });
  for (const entry of stored.entries) {
    console.log(`${v1.EntryKind[entry.kind].toLowerCase()}: ${entry.text}`);
  }
  console.log(`agents: ${(await router.agents.list()).map((a) => a.slug).join(", ")}`);
} catch (err) {
  if (err instanceof InvalidArgument) {
    // The fields at fault, as this client spells them (endUserId, agent.maxOutputTokens).
    for (const v of err.fieldViolations) console.error(`${v.jsonField}: ${v.description}`);
  } else if (err instanceof InterlockError) {
    console.error(`error: ${err.message}`);
  } else {
    throw err;
  }
  process.exitCode = 1;
} finally {
  router.close();
}

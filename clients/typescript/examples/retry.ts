// Run a turn that survives the daemon restarting or the connection dropping:
// a run repeated with the same requestId resumes where it stopped (the
// stream repeats what was recorded, then carries on), so only new text is
// printed.
//
//   INTERLOCK_API_KEY=ilk_... node retry.js
//
// INTERLOCK_ADDRESS (default 127.0.0.1:7600) says where the daemon listens.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import { Interlock, InterlockError, RunOutcome } from "@interlock/client";

const router = new Interlock(); // INTERLOCK_ADDRESS, INTERLOCK_API_KEY
const request = { message: "Tell me a long story.", endUserId: "u-123", requestId: randomUUID() };
const attempts = 5;

try {
  let printed = 0;
  for (let attempt = 1; ; attempt++) {
    const outcome = new RunOutcome();
    try {
      for await (const event of router.run(request)) {
        outcome.add(event);
        process.stdout.write(outcome.text.slice(printed));
        printed = Math.max(printed, outcome.text.length);
      }
      outcome.throwIfFailed(); // RunFailed (UNAVAILABLE, retryable) when the daemon stopped under it
      process.stdout.write("\n");
      break;
    } catch (err) {
      // Unavailable, RunFailed with retryable, ResourceExhausted, ...: the same requestId again.
      if (!(err instanceof InterlockError) || !err.retryable || attempt === attempts) throw err;
      const wait = err.retryDelayMs ?? 250 * 2 ** attempt;
      console.error(`${err.code}: retrying in ${wait} ms`);
      await sleep(wait);
    }
  }
} catch (err) {
  if (!(err instanceof InterlockError)) throw err;
  console.error(`error: ${err.message}`);
  process.exitCode = 1;
} finally {
  router.close();
}

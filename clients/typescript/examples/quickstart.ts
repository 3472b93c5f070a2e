// Stream one turn, then continue the conversation.
//
//   INTERLOCK_API_KEY=ilk_... node dist/examples/quickstart.js
//
// INTERLOCK_ADDRESS (default 127.0.0.1:7600) says where the daemon listens;
// INTERLOCK_PROVIDER and INTERLOCK_MODEL pick where the turn runs (default:
// the daemon's default provider and its default model).
import { Interlock, InterlockError } from "@interlock/client";

const apiKey = process.env.INTERLOCK_API_KEY;
const router = new Interlock({
  baseUrl: `http://${process.env.INTERLOCK_ADDRESS ?? "127.0.0.1:7600"}`,
  apiKey,
});

try {
  let sessionId = "";
  for await (const event of router.run({
    provider: process.env.INTERLOCK_PROVIDER,
    model: process.env.INTERLOCK_MODEL,
    system: "You are a support agent.",
    message: "Where is my order?",
    endUserId: "u-123",
  })) {
    switch (event.kind) {
      case "runStarted":
        sessionId = event.sessionId;
        break;
      case "textDelta":
        process.stdout.write(event.text);
        break;
      case "toolCall":
        console.error(`→ ${event.name}(${event.argumentsJson})`);
        break;
      case "finish":
        process.stdout.write("\n");
        console.error(`${event.stopReason}: ${event.usage.inputTokens} in, ${event.usage.outputTokens} out`);
        break;
      case "error":
        console.error(`error: ${event.code}: ${event.message}`);
        process.exitCode = 1;
        break;
    }
  }

  const next = await router.runText({ message: "Thanks!", endUserId: "u-123", sessionId });
  next.throwIfFailed();
  console.log(next.text);
} catch (err) {
  if (!(err instanceof InterlockError)) throw err;
  console.error(`error: ${err.message}`); // e.g. "UNAUTHENTICATED: unknown API key"
  process.exitCode = 1;
} finally {
  router.close();
}

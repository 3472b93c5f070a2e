// Stream one turn, then continue the conversation.
//
//   INTERLOCK_API_KEY=ilk_... node quickstart.js
//
// INTERLOCK_ADDRESS (default 127.0.0.1:7600) says where the daemon listens;
// the turn runs on the daemon's default provider and model.
import { Interlock, InterlockError, RunFailed } from "@interlock/client";

const router = new Interlock(); // INTERLOCK_ADDRESS, INTERLOCK_API_KEY

try {
  let sessionId = "";
  for await (const event of router.run({
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
      case "error": // a failure after the run started: the stream's last event
        throw new RunFailed(event.code, event.message, event.retryable, event.provider);
    }
  }

  // The same conversation: sessionId from the first turn's runStarted event.
  const next = await router.runText({ message: "Thanks!", endUserId: "u-123", sessionId });
  next.throwIfFailed(); // RunFailed if it ended with an error event
  console.log(next.text);
} catch (err) {
  if (!(err instanceof InterlockError)) throw err;
  console.error(`error: ${err.message}`); // e.g. "UNAUTHENTICATED: unknown API key"
  process.exitCode = 1;
} finally {
  router.close();
}

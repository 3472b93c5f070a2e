/** `Interlock.run` against a real interlockd over gRPC, with a scripted upstream. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  type AgentEvent,
  Cancelled,
  DeadlineExceeded,
  Interlock,
  MissingCredentials,
  RunFailed,
  RunOutcome,
  Unauthenticated,
  Unavailable,
} from "../src/index.js";
import { Harness } from "./harness.js";
import { Relay } from "./proxy.js";

let harness: Harness;
let router: Interlock;

before(async () => {
  harness = await Harness.start();
  const { baseUrl, apiKey } = harness.daemon;
  router = new Interlock({ baseUrl, apiKey });
});

after(async () => {
  router.close();
  await harness.stop();
});

async function collect(stream: AsyncIterable<AgentEvent>): Promise<AgentEvent[]> {
  const events: AgentEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

test("a turn streams text, a tool call and its result, then finish with the summed usage", async () => {
  await harness.enqueue(
    [["text", "Let me look. "], ["tool_call", "search_conversations", '{"query": "order"}'], ["usage", 30, 2]],
    [["text", "Your order ", "shipped."], ["usage", 40, 5]],
  );
  const events = await collect(
    router.run({
      provider: "fake",
      model: "fake-model",
      system: "You are a support agent.",
      message: "Where is my order?",
      endUserId: "u-123",
    }),
  );
  assert.deepEqual(
    events.map((e) => e.kind),
    ["runStarted", "textDelta", "toolCall", "toolResult", "textDelta", "textDelta", "finish"],
  );
  assert.deepEqual(
    events.map((e) => e.seq),
    events.map((_, i) => i + 1),
  );
  const [started, , call, result, , , finish] = events;
  assert.ok(started?.kind === "runStarted" && started.sessionId.startsWith("conv_"));
  assert.equal(started.provider, "fake");
  assert.ok(call?.kind === "toolCall" && call.name === "search_conversations");
  assert.deepEqual(JSON.parse(call.argumentsJson), { query: "order" });
  assert.ok(result?.kind === "toolResult" && result.callId === call.callId);
  assert.equal(result.error, "");
  assert.ok(Array.isArray(JSON.parse(result.resultJson).results));
  assert.ok(finish?.kind === "finish");
  assert.equal(finish.stopReason, "end_turn");
  assert.equal(finish.usage.inputTokens, 70);
  assert.equal(finish.usage.outputTokens, 7);
  assert.equal(finish.sessionId, started.sessionId);
  assert.ok(events.every((e) => e.runId === started.runId && e.time instanceof Date));
  const text = events.map((e) => (e.kind === "textDelta" ? e.text : "")).join("");
  assert.equal(text, "Let me look. Your order shipped.");
});

test("a second turn with the session id continues the same conversation", async () => {
  await harness.enqueue([["text", "First answer."]], [["text", "Second answer."]]);
  const first = await router.runText({ message: "One", endUserId: "u-2" });
  assert.ok(first.ok);
  const second = await router.runText({ message: "Two", endUserId: "u-2", sessionId: first.sessionId });
  assert.ok(second.ok);
  assert.equal(second.sessionId, first.sessionId);
  assert.equal(second.text, "Second answer.");
  const upstream = await harness.requests();
  assert.deepEqual(
    upstream.at(-1)?.messages.map((m) => m.role),
    ["user", "assistant", "user"],
  );
  const stored = await router.conversations.get({ endUserId: "u-2", sessionId: first.sessionId });
  assert.deepEqual(
    stored.entries.map((e) => e.text),
    ["One", "First answer.", "Two", "Second answer."],
  );
});

test("a wrong API key throws Unauthenticated before any event", async () => {
  const stranger = new Interlock({ baseUrl: harness.daemon.baseUrl, apiKey: "ilk_wrong" });
  try {
    const seen: AgentEvent[] = [];
    await assert.rejects(
      async () => {
        for await (const event of stranger.run({ message: "hi", endUserId: "u-1" })) seen.push(event);
      },
      (err: unknown) => {
        assert.ok(err instanceof Unauthenticated);
        assert.equal(err.code, "UNAUTHENTICATED");
        assert.equal(err.grpcCode, 16);
        return true;
      },
    );
    assert.deepEqual(seen, []);
  } finally {
    stranger.close();
  }
});

test("no API key throws MissingCredentials at once, sending nothing", async () => {
  const before = await harness.stats();
  const keyless = new Interlock({ baseUrl: harness.daemon.baseUrl, apiKey: "" });
  const saved = process.env.INTERLOCK_API_KEY;
  delete process.env.INTERLOCK_API_KEY;
  try {
    assert.throws(() => keyless.run({ message: "hi", endUserId: "u-1" }), MissingCredentials);
  } finally {
    if (saved !== undefined) process.env.INTERLOCK_API_KEY = saved;
    keyless.close();
  }
  assert.deepEqual(await harness.stats(), before);
});

test("leaving the loop early cancels the run on the router", async () => {
  const { disconnects } = await harness.stats();
  await harness.enqueue([["text", "Thinking"], ["stall"]]);
  for await (const event of router.run({ message: "hi", endUserId: "u-3", requestId: "ts-break" })) {
    if (event.kind === "textDelta") break;
  }
  assert.equal(await harness.waitRun("ts-break"), "cancelled");
  await harness.waitDisconnects(disconnects + 1);
});

test("an AbortSignal cancels the run on the router and throws Cancelled", async () => {
  const { disconnects } = await harness.stats();
  await harness.enqueue([["text", "Thinking"], ["stall"]]);
  const abort = new AbortController();
  await assert.rejects(async () => {
    for await (const event of router.run(
      { message: "hi", endUserId: "u-4", requestId: "ts-abort" },
      { signal: abort.signal },
    )) {
      if (event.kind === "textDelta") abort.abort();
    }
  }, Cancelled);
  assert.equal(await harness.waitRun("ts-abort"), "cancelled");
  await harness.waitDisconnects(disconnects + 1);
});

test("timeoutMs is a deadline: DeadlineExceeded, and the router stops the run", async () => {
  const { disconnects } = await harness.stats();
  await harness.enqueue([["text", "Thinking"], ["stall"]]);
  const started = Date.now();
  await assert.rejects(
    router.runText({ message: "hi", endUserId: "u-5", requestId: "ts-deadline" }, { timeoutMs: 500 }),
    DeadlineExceeded,
  );
  assert.ok(Date.now() - started < 5000);
  assert.equal(await harness.waitRun("ts-deadline"), "cancelled");
  await harness.waitDisconnects(disconnects + 1);
});

test("a daemon stopped under a run ends it UNAVAILABLE and retryable; the same requestId resumes it", async () => {
  await harness.enqueue([["text", "Part one. "], ["stall"]], [["text", "Part two."]]);
  const request = { message: "A long one", endUserId: "u-restart", requestId: "ts-restart" };
  const first = new RunOutcome();
  let failure: unknown;
  try {
    for await (const event of router.run(request)) {
      first.add(event);
      if (event.kind === "textDelta") await harness.stopDaemon();
    }
    first.throwIfFailed();
  } catch (err) {
    failure = err;
  }
  assert.equal(first.text, "Part one. ");
  // The daemon ends the stream with an error event (RunFailed); when its
  // last-calls second lapses first (a loaded machine), the stream is cut
  // (Unavailable). Either way: UNAVAILABLE, retryable, never Cancelled.
  assert.ok(failure instanceof RunFailed || failure instanceof Unavailable, String(failure));
  assert.equal(failure.code, "UNAVAILABLE");
  assert.equal(failure.retryable, true);

  await harness.startDaemon();
  const again = await router.runText(request);
  again.throwIfFailed();
  assert.deepEqual([again.runId, again.sessionId], [first.runId, first.sessionId]);
  assert.equal(again.text, "Part one. Part two.");
  assert.equal(await harness.waitRun("ts-restart"), "finished");
});

test("a connection lost mid-run throws Unavailable, retryable; the same requestId finishes the run", async () => {
  const relay = await Relay.start(harness.daemon.address);
  const cut = new Interlock({ baseUrl: relay.baseUrl, apiKey: harness.daemon.apiKey });
  try {
    await harness.enqueue([["text", "Part one. "], ["stall"]], [["text", "Part two."]]);
    const request = { message: "A long one", endUserId: "u-lost", requestId: "ts-lost" };
    const first = new RunOutcome();
    await assert.rejects(
      async () => {
        for await (const event of cut.run(request)) {
          first.add(event);
          if (event.kind === "textDelta") relay.cut();
        }
      },
      (err: unknown) => {
        assert.ok(err instanceof Unavailable, String(err));
        assert.equal(err.retryable, true);
        return true;
      },
    );
    // The daemon stops the run once it sees its caller gone (until then a
    // retry is refused as still in progress).
    assert.equal(await harness.waitRun("ts-lost"), "cancelled");
    const again = await router.runText(request);
    again.throwIfFailed();
    assert.deepEqual([again.runId, again.sessionId], [first.runId, first.sessionId]);
    assert.equal(again.text, "Part one. Part two.");
    assert.equal(await harness.waitRun("ts-lost"), "finished");
  } finally {
    cut.close();
    await relay.close();
  }
});

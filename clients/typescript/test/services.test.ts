/** Agents, the Ledger and Compute through `Interlock`, against a real interlockd. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  FailedPrecondition,
  Interlock,
  InvalidArgument,
  MissingCredentials,
  NotFound,
  v1,
} from "../src/index.js";
import { Harness } from "./harness.js";

let harness: Harness;
let router: Interlock;
let operator: Interlock;

before(async () => {
  harness = await Harness.start();
  const { baseUrl, apiKey, operatorKey } = harness.daemon;
  router = new Interlock({ baseUrl, apiKey });
  operator = new Interlock({ baseUrl, operatorKey });
});

after(async () => {
  router.close();
  operator.close();
  await harness.stop();
});

test("a saved agent runs by its slug with its system prompt, and is listed, read and deleted", async () => {
  const { provider, model } = harness.daemon;
  const saved = await router.agents.put({ slug: "support", name: "Support", provider, model, system: "Be brief." });
  assert.equal(saved.slug, "support");
  assert.ok(saved.createTime);
  await harness.enqueue([["text", "Brief."]]);
  const outcome = await router.runText({ agent: "support", message: "Hi", endUserId: "u-agent" });
  outcome.throwIfFailed();
  assert.equal(outcome.text, "Brief.");
  const upstream = (await harness.requests()).at(-1) as unknown as { messages: { role: string; content: unknown }[] };
  assert.deepEqual(upstream.messages[0], { role: "system", content: "Be brief." });

  assert.deepEqual(
    (await router.agents.list()).map((a) => a.slug),
    ["support"],
  );
  assert.equal((await router.agents.get("support")).name, "Support");
  await router.agents.delete("support");
  await assert.rejects(router.agents.get("support"), (err: unknown) => {
    assert.ok(err instanceof NotFound);
    assert.equal(err.reason, "NOT_FOUND");
    return true;
  });
});

test("the ledger lists a run's entries and adds them up by end user", async () => {
  await harness.enqueue([["text", "Counted."], ["usage", 30, 2]]);
  const outcome = await router.runText({ message: "Count me", endUserId: "u-ledger" });
  outcome.throwIfFailed();
  const page = await router.ledger.list({ runId: outcome.runId });
  assert.equal(page.entries.length, 1);
  const [entry] = page.entries;
  assert.equal(entry?.kind, v1.LedgerEntryKind.TOKENS);
  assert.equal(entry?.endUserId, "u-ledger");
  assert.equal(entry?.usage?.inputTokens, 30n);
  const listed = [];
  for await (const e of router.ledger.listAll({ endUserId: "u-ledger", kind: "tokens", pageSize: 1 })) listed.push(e);
  assert.deepEqual(
    listed.map((e) => e.runId),
    [outcome.runId],
  );

  const { summaries, total } = await router.ledger.summarizeAll({ by: "endUser", since: new Date(0) });
  const mine = summaries.find((s) => s.key === "u-ledger");
  assert.equal(mine?.runCount, 1n);
  assert.equal(mine?.usage?.outputTokens, 2n);
  assert.ok((total?.entryCount ?? 0n) >= 1n);

  // The operator reads a sandbox's ledger by naming it; the API key alone cannot.
  const { sandboxId } = harness.daemon;
  const theirs = await operator.ledger.list({ sandboxId, runId: outcome.runId });
  assert.equal(theirs.entries[0]?.runId, outcome.runId);
  await assert.rejects(router.ledger.list({ sandboxId }), MissingCredentials);
  await assert.rejects(router.ledger.summarize({ by: "week" as "day" }), TypeError);
});

test("a pause refuses an end user's new runs naming it; clearing it admits them again", async () => {
  const { sandboxId } = harness.daemon;
  const target = { scope: "endUser", sandboxId, target: "u-paused" } as const;
  const set = await operator.compute.pause({ ...target, reason: "abuse review" });
  assert.equal(set.pause?.scope, v1.PauseScope.END_USER);
  assert.deepEqual(
    (await operator.compute.pauses()).map((p) => [p.target, p.reason]),
    [["u-paused", "abuse review"]],
  );
  await assert.rejects(router.runText({ message: "Hi", endUserId: "u-paused" }), (err: unknown) => {
    assert.ok(err instanceof FailedPrecondition);
    assert.match(err.details, /abuse review/);
    return true;
  });
  assert.equal(await operator.compute.unpause(target), true);
  assert.equal(await operator.compute.unpause(target), false);
  await harness.enqueue([["text", "Back."]]);
  assert.equal((await router.runText({ message: "Hi", endUserId: "u-paused" })).text, "Back.");
  // Pauses are the operator's: the API key is not enough.
  await assert.rejects(router.compute.pauses(), MissingCredentials);
});

test("compute: providers with their health, sessions filtered by status, placements of runs", async () => {
  const providers = await router.compute.providers();
  assert.ok(providers.some((p) => p.name === "local"));
  assert.deepEqual(await router.compute.sessions({ status: "running" }), []);
  assert.deepEqual(await operator.compute.sessions({ sandboxId: harness.daemon.sandboxId }), []);
  await assert.rejects(router.compute.explain("run_doesnotexist"), NotFound);
  await assert.rejects(router.compute.suspend("cs_doesnotexist"), NotFound);
  await assert.rejects(router.compute.sessions({ status: "asleep" as "running" }), TypeError);
});

test("run's compute options reach the daemon: a bad policy is InvalidArgument naming compute.policy", async () => {
  await assert.rejects(
    router.runText({ message: "Hi", endUserId: "u-compute", compute: { policy: "cheapest" } }),
    (err: unknown) => {
      assert.ok(err instanceof InvalidArgument);
      assert.deepEqual(
        err.fieldViolations.map((v) => [v.field, v.jsonField]),
        [["compute.policy", "compute.policy"]],
      );
      return true;
    },
  );
});

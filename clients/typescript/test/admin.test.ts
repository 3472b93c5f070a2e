/** The Sandboxes and Conversations services through `Interlock`, against a real interlockd. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Interlock, NotFound, Unauthenticated } from "../src/index.js";
import { Harness } from "./harness.js";

let harness: Harness;
let operator: Interlock;

before(async () => {
  harness = await Harness.start();
  const { baseUrl, operatorKey } = harness.daemon;
  operator = new Interlock({ baseUrl, operatorKey });
});

after(async () => {
  operator.close();
  await harness.stop();
});

test("the operator creates a sandbox and a key that runs turns and reads its conversations", async () => {
  const sandbox = await operator.sandboxes.create("acme", { maxConcurrentRuns: 3 });
  assert.ok(sandbox.sandboxId.startsWith("sbx_"));
  assert.equal(sandbox.quotas?.maxConcurrentRuns, 3);
  const names: string[] = [];
  for await (const s of operator.sandboxes.listAll(1)) names.push(s.name);
  assert.deepEqual(names.sort(), ["acme", "default"]);

  const created = await operator.sandboxes.createApiKey(sandbox.sandboxId, "backend");
  assert.ok(created.secret.startsWith(created.apiKey?.prefix ?? "?"));
  const acme = new Interlock({ baseUrl: harness.daemon.baseUrl, apiKey: created.secret });
  try {
    const outcome = await acme.runText({ message: "Hello", endUserId: "alice" });
    assert.ok(outcome.ok);
    assert.equal(outcome.text, "Hello from the fake.");
    const listed = await acme.conversations.list({ endUserId: "alice" });
    assert.deepEqual(
      listed.conversations.map((c) => c.sessionId),
      [outcome.sessionId],
    );
    // Conversations are private to their end user.
    await assert.rejects(
      acme.conversations.get({ endUserId: "bob", sessionId: outcome.sessionId }),
      NotFound,
    );
    await acme.conversations.delete({ endUserId: "alice", sessionId: outcome.sessionId });
    assert.deepEqual((await acme.conversations.list({ endUserId: "alice" })).conversations, []);

    const revoked = await operator.sandboxes.revokeApiKey(sandbox.sandboxId, created.apiKey?.keyId ?? "");
    assert.ok(revoked.revokeTime);
    await assert.rejects(acme.runText({ message: "Again", endUserId: "alice" }), Unauthenticated);
  } finally {
    acme.close();
  }
});

test("sandbox secrets are write-only: their names are listed, never their values", async () => {
  const { sandboxId } = harness.daemon;
  await operator.sandboxes.setSecret(sandboxId, "anthropic_api_key", "sk-ant-test");
  assert.deepEqual(await operator.sandboxes.listSecrets(sandboxId), ["anthropic_api_key"]);
  await operator.sandboxes.deleteSecret(sandboxId, "anthropic_api_key");
  assert.deepEqual(await operator.sandboxes.listSecrets(sandboxId), []);
});

test("a sandbox API key is not an operator key", async () => {
  const { baseUrl, apiKey } = harness.daemon;
  const tenant = new Interlock({ baseUrl, operatorKey: apiKey });
  try {
    await assert.rejects(tenant.sandboxes.list(), Unauthenticated);
  } finally {
    tenant.close();
  }
});

/** `Interlock.integrations` against a real interlockd whose `github` app is the GitHub fake. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { toJsonString } from "@bufbuild/protobuf";

import {
  Cancelled,
  ConnectFailed,
  DeadlineExceeded,
  Interlock,
  InvalidArgument,
  MissingCredentials,
  NotFound,
  v1,
} from "../src/index.js";
import { Harness } from "./harness.js";

// Stored, never called: no test runs a turn in the sandboxes that have it.
const MCP_URL = "http://127.0.0.1:9/mcp";
const TOKEN = `mcp-token-${"7f3a9c".repeat(6)}`;

let harness: Harness;
let operator: Interlock;
const opened: Interlock[] = [];

before(async () => {
  harness = await Harness.start();
  const { baseUrl, operatorKey } = harness.daemon;
  operator = new Interlock({ baseUrl, operatorKey });
});

after(async () => {
  for (const client of opened) client.close();
  operator.close();
  await harness.stop();
});

/** A client of a new sandbox of its own, so that tests do not see each other's integrations. */
async function sandbox(name: string): Promise<Interlock> {
  const { sandboxId } = await operator.sandboxes.create(name);
  const { secret } = await operator.sandboxes.createApiKey(sandboxId, "test");
  const client = new Interlock({ baseUrl: harness.daemon.baseUrl, apiKey: secret });
  opened.push(client);
  return client;
}

function ids(integrations: v1.Integration[]): string[] {
  return integrations.map((i) => i.integrationId);
}

test("an MCP server is added, listed with its secrets sealed, and disconnected into the archive", async () => {
  const router = await sandbox("mcp-round-trip");
  const added = await router.integrations.addMcpServer({
    name: "docs",
    url: MCP_URL,
    endUserId: "u-1",
    bearerToken: TOKEN,
    headers: { "X-Team": "core" },
  });
  assert.match(added.integrationId, /^int_/);
  assert.equal(added.kind, v1.IntegrationKind.MCP);
  assert.deepEqual([added.app, added.endUserId, added.account], ["docs", "u-1", MCP_URL]);
  assert.equal(added.status, v1.IntegrationStatus.ACTIVE);
  assert.ok(!toJsonString(v1.IntegrationSchema, added).includes(TOKEN));
  assert.deepEqual(ids(await router.integrations.list({ endUserId: "u-1" })), [added.integrationId]);

  const gone = await router.integrations.disconnect(added.integrationId);
  assert.equal(gone.status, v1.IntegrationStatus.DISCONNECTED);
  assert.ok(gone.statusReason);
  assert.deepEqual(await router.integrations.list({ endUserId: "u-1" }), []);
  const archived = await router.integrations.list({ endUserId: "u-1", includeDisconnected: true });
  assert.deepEqual(ids(archived), [added.integrationId]);
  const again = await router.integrations.disconnect(added.integrationId);
  assert.equal(again.status, v1.IntegrationStatus.DISCONNECTED);
});

test("an end user's integration is theirs alone, a sandbox-wide one everyone's", async () => {
  const router = await sandbox("mcp-scoping");
  const shared = await router.integrations.addMcpServer({ name: "shared", url: MCP_URL });
  const mine = await router.integrations.addMcpServer({ name: "mine", url: MCP_URL, endUserId: "u-1" });
  assert.equal(shared.endUserId, "");
  assert.deepEqual(ids(await router.integrations.list({ endUserId: "u-1" })), ids([shared, mine]));
  assert.deepEqual(ids(await router.integrations.list({ endUserId: "u-2" })), ids([shared]));
  assert.deepEqual(ids(await router.integrations.list()), ids([shared, mine]));

  // Another sandbox's key reaches neither.
  const other = await sandbox("mcp-scoping-other");
  assert.deepEqual(await other.integrations.list(), []);
  await assert.rejects(other.integrations.disconnect(mine.integrationId), NotFound);
  assert.deepEqual(ids(await router.integrations.list({ endUserId: "u-1" })), ids([shared, mine]));
});

test("an app the daemon does not configure is InvalidArgument naming the field; a bad scope or URL is refused", async () => {
  const router = await sandbox("connect-unknown");
  await assert.rejects(router.integrations.connect({ app: "gitlab", endUserId: "u-1" }), (err: unknown) => {
    assert.ok(err instanceof InvalidArgument);
    assert.equal(err.code, "INVALID_ARGUMENT");
    assert.match(err.details, /^app: /);
    return true;
  });
  await assert.rejects(
    router.integrations.connect({ app: "github", endUserId: "u-1", scope: "everyone" as "sandbox" }),
    TypeError,
  );
  // Plain http only to a loopback address.
  await assert.rejects(
    router.integrations.addMcpServer({ name: "docs", url: "http://example.com/mcp" }),
    InvalidArgument,
  );
});

test("watching a flow that does not exist is NotFound", async () => {
  const router = await sandbox("watch-unknown");
  await assert.rejects(async () => {
    for await (const _ of router.integrations.watchConnect("flow_doesnotexist")) {
      assert.fail("an update of a flow that does not exist");
    }
  }, NotFound);
  await assert.rejects(router.integrations.waitConnected("flow_doesnotexist"), NotFound);
});

test("no API key throws MissingCredentials before anything is sent", async () => {
  const saved = process.env.INTERLOCK_API_KEY;
  delete process.env.INTERLOCK_API_KEY;
  const keyless = new Interlock({ baseUrl: harness.daemon.baseUrl, apiKey: "" });
  try {
    assert.throws(() => keyless.integrations.watchConnect("flow_doesnotexist"), MissingCredentials);
    await assert.rejects(keyless.integrations.list(), MissingCredentials);
  } finally {
    if (saved !== undefined) process.env.INTERLOCK_API_KEY = saved;
    keyless.close();
  }
});

test("the catalog offers the configured GitHub app with its side-effecting tools marked", async () => {
  const router = await sandbox("catalog");
  const [entry, ...rest] = await router.integrations.catalog();
  assert.deepEqual(rest, []);
  assert.deepEqual([entry?.app, entry?.kind, entry?.available], ["github", v1.IntegrationKind.OAUTH, true]);
  const sideEffecting = entry?.tools.filter((t) => t.sideEffecting).map((t) => t.name);
  assert.deepEqual(sideEffecting?.sort(), ["github__comment_issue", "github__create_issue"]);
});

test("connecting GitHub: the user approves at GitHub, the callback connects, waitConnected resolves", async () => {
  const router = await sandbox("connect-github");
  const started = await router.integrations.connect({ app: "github", endUserId: "u-1" });
  assert.ok(started.authorizeUrl.startsWith(`${harness.daemon.githubUrl}/login/oauth/authorize?`));
  assert.ok(started.expireTime);
  const updates = router.integrations.watchConnect(started.flowId, { timeoutMs: 20_000 });
  const first = await updates.next();
  assert.equal(first.value?.state, v1.ConnectState.PENDING);

  const waiting = router.integrations.waitConnected(started.flowId, { timeoutMs: 20_000 });
  assert.equal(await harness.approve(started.authorizeUrl), 200);
  const integration = await waiting;
  assert.deepEqual([integration.app, integration.account, integration.endUserId], ["github", "octocat", "u-1"]);
  assert.equal(integration.kind, v1.IntegrationKind.OAUTH);

  const last = await updates.next();
  assert.equal(last.value?.state, v1.ConnectState.CONNECTED);
  assert.equal(last.value?.integration?.integrationId, integration.integrationId);
  assert.equal((await updates.next()).done, true);

  // An ended flow answers at once; the connection is the end user's alone.
  assert.equal((await router.integrations.waitConnected(started.flowId)).integrationId, integration.integrationId);
  assert.deepEqual(ids(await router.integrations.list({ endUserId: "u-1" })), [integration.integrationId]);
  assert.deepEqual(await router.integrations.list({ endUserId: "u-2" }), []);
  const gone = await router.integrations.disconnect(integration.integrationId);
  assert.equal(gone.status, v1.IntegrationStatus.DISCONNECTED);
});

test("a sandbox-wide connection the user declines throws ConnectFailed with the state and explanation", async () => {
  const router = await sandbox("connect-declined");
  const started = await router.integrations.connect({ app: "github", endUserId: "u-1", scope: "sandbox" });
  const waiting = router.integrations.waitConnected(started.flowId, { timeoutMs: 20_000 });
  // Handled before the denial: the daemon may fail the flow before deny() returns.
  const refused = assert.rejects(waiting, (err: unknown) => {
    assert.ok(err instanceof ConnectFailed);
    assert.deepEqual([err.flowId, err.state, err.code], [started.flowId, "failed", "FAILED_PRECONDITION"]);
    assert.match(err.explanation, /access_denied/);
    assert.equal(err.reason, "CONNECT_FAILED");
    assert.match(err.message, new RegExp(`^FAILED_PRECONDITION: connect flow ${started.flowId} failed: `));
    return true;
  });
  assert.equal(await harness.deny(started.authorizeUrl), 400);
  await refused;
  assert.deepEqual(await router.integrations.list(), []);
});

test("timeoutMs, an AbortSignal and leaving the loop stop the watch, not the flow", async () => {
  const router = await sandbox("watch-stop");
  const started = await router.integrations.connect({ app: "github", endUserId: "u-1" });
  await assert.rejects(router.integrations.waitConnected(started.flowId, { timeoutMs: 300 }), DeadlineExceeded);

  const abort = new AbortController();
  await assert.rejects(async () => {
    for await (const update of router.integrations.watchConnect(started.flowId, { signal: abort.signal })) {
      assert.equal(update.state, v1.ConnectState.PENDING);
      abort.abort();
    }
  }, Cancelled);

  // Leaving the loop also clears the deadline's timer, which would otherwise
  // keep the process alive for timeoutMs.
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
  const before = timers();
  for await (const update of router.integrations.watchConnect(started.flowId, { timeoutMs: 60_000 })) {
    assert.equal(update.state, v1.ConnectState.PENDING);
    break;
  }
  assert.equal(timers(), before);
  // The flow is still open: approving it now connects.
  const waiting = router.integrations.waitConnected(started.flowId, { timeoutMs: 20_000 });
  assert.equal(await harness.approve(started.authorizeUrl), 200);
  assert.equal((await waiting).account, "octocat");
});

/**
 * Every RPC of every service in proto/interlock/v1 has a wrapper in the
 * client: the services come from the generated file descriptors, and the
 * calls the wrappers make are observed on the wire (an interceptor on a real
 * transport to a live interlockd), so a new RPC fails here until it is wrapped.
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import type { DescFile } from "@bufbuild/protobuf";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { Interlock, InterlockError, toInterlockError, Unauthenticated, v1 } from "../src/index.js";
import { authenticatedTransport } from "../src/connect.js";
import { Harness } from "./harness.js";

let harness: Harness;

before(async () => {
  harness = await Harness.start();
});

after(async () => {
  await harness.stop();
});

/** Every `Service/Method` the API's .proto files declare, from their descriptors. */
function declaredRpcs(): string[] {
  const files = Object.values(v1).filter(
    (value): value is DescFile =>
      typeof value === "object" && value !== null && (value as { kind?: unknown }).kind === "file",
  );
  assert.ok(files.length >= 8, "v1 exports the file descriptor of every .proto file");
  return files.flatMap((file) =>
    file.services.flatMap((service) => service.methods.map((m) => `${service.typeName}/${m.name}`)),
  );
}

/** Runs `call` and ignores the daemon's answer: only which RPC went out matters here. */
async function attempt(call: () => Promise<unknown>): Promise<void> {
  try {
    await call();
  } catch (err) {
    if (!(err instanceof InterlockError)) throw err;
  }
}

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream) break;
}

test("every RPC of every service in proto/interlock/v1 is called by a wrapper of the client", async () => {
  const declared = declaredRpcs();
  assert.ok(declared.includes("interlock.v1.AgentRouter/Run"));
  assert.ok(declared.includes("interlock.v1.Ledger/SummarizeUsage"));

  const called = new Set<string>();
  const record: Interceptor = (next) => (request) => {
    called.add(`${request.service.typeName}/${request.method.name}`);
    return next(request);
  };
  const { baseUrl, apiKey, operatorKey, sandboxId } = harness.daemon;
  const client = new Interlock({
    transport: createGrpcTransport({ baseUrl, interceptors: [record] }),
    apiKey,
    operatorKey,
  });
  try {
    await harness.enqueue([["text", "Hello."]]);
    await attempt(() => client.runText({ message: "hi", endUserId: "u-rpcs" }));

    await attempt(() => client.sandboxes.create("rpcs"));
    await attempt(() => client.sandboxes.get(sandboxId));
    await attempt(() => client.sandboxes.list());
    await attempt(() => client.sandboxes.setQuotas(sandboxId, {}));
    await attempt(() => client.sandboxes.createApiKey(sandboxId, "rpcs"));
    await attempt(() => client.sandboxes.listApiKeys(sandboxId));
    await attempt(() => client.sandboxes.revokeApiKey(sandboxId, "key_nope"));
    await attempt(() => client.sandboxes.setSecret(sandboxId, "rpcs_secret", "x"));
    await attempt(() => client.sandboxes.listSecrets(sandboxId));
    await attempt(() => client.sandboxes.deleteSecret(sandboxId, "rpcs_secret"));
    await attempt(() => client.sandboxes.delete("sbx_nope"));

    await attempt(() => client.conversations.list({ endUserId: "u-rpcs" }));
    await attempt(() => client.conversations.get({ endUserId: "u-rpcs", sessionId: "conv_nope" }));
    await attempt(() => client.conversations.delete({ endUserId: "u-rpcs", sessionId: "conv_nope" }));

    await attempt(() => client.integrations.catalog());
    await attempt(() => client.integrations.connect({ app: "github", endUserId: "u-rpcs" }));
    await attempt(() => drain(client.integrations.watchConnect("flow_nope")));
    await attempt(() => client.integrations.addMcpServer({ name: "rpcs", url: "http://127.0.0.1:9/mcp" }));
    await attempt(() => client.integrations.list());
    await attempt(() => client.integrations.disconnect("int_nope"));

    await attempt(() => client.agents.put({ slug: "rpcs", provider: harness.daemon.provider }));
    await attempt(() => client.agents.get("rpcs"));
    await attempt(() => client.agents.list());
    await attempt(() => client.agents.delete("rpcs"));

    await attempt(() => client.ledger.list());
    await attempt(() => client.ledger.summarize({ by: "endUser" }));

    await attempt(() => client.compute.pause({ scope: "endUser", sandboxId, target: "u-paused" }));
    await attempt(() => client.compute.pauses());
    await attempt(() => client.compute.unpause({ scope: "endUser", sandboxId, target: "u-paused" }));
    await attempt(() => client.compute.sessions());
    await attempt(() => client.compute.suspend("cs_nope"));
    await attempt(() => client.compute.resume("cs_nope"));
    await attempt(() => client.compute.destroy("cs_nope"));
    await attempt(() => client.compute.providers());
    await attempt(() => client.compute.explain("run_nope"));
  } finally {
    client.close();
  }
  const missing = declared.filter((rpc) => !called.has(rpc));
  assert.deepEqual(missing, [], "RPCs no wrapper of the client calls");
});

test("raw generated stubs reuse the client's authenticated connection, with either key", async () => {
  const { baseUrl, apiKey, operatorKey, sandboxId } = harness.daemon;
  const router = new Interlock({ baseUrl, apiKey, operatorKey });
  try {
    const agents = createClient(v1.Agents, authenticatedTransport(router));
    await agents.putAgent({ agent: { slug: "raw", provider: harness.daemon.provider } });
    const listed = await agents.listAgents({});
    assert.deepEqual(
      listed.agents.map((a) => a.slug),
      ["raw"],
    );
    const sandboxes = createClient(v1.Sandboxes, authenticatedTransport(router, "operatorKey"));
    assert.equal((await sandboxes.getSandbox({ sandboxId })).sandbox?.sandboxId, sandboxId);
    await agents.deleteAgent({ slug: "raw" });
  } finally {
    router.close();
  }
  const stranger = new Interlock({ baseUrl, apiKey: "ilk_wrong" });
  try {
    const agents = createClient(v1.Agents, authenticatedTransport(stranger));
    // A raw stub throws @connectrpc's ConnectError; toInterlockError gives the client's.
    await assert.rejects(agents.listAgents({}), (err: unknown) => {
      const error = toInterlockError(err);
      assert.ok(error instanceof Unauthenticated);
      assert.equal(error.reason, "UNAUTHENTICATED");
      return true;
    });
  } finally {
    stranger.close();
  }
});

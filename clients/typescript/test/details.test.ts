/** The daemon's google.rpc error details (ErrorInfo, BadRequest, RetryInfo) as typed fields of InterlockError. */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { Code, ConnectError } from "@connectrpc/connect";

import {
  FailedPrecondition,
  Interlock,
  InvalidArgument,
  jsonFieldPath,
  toInterlockError,
  Unavailable,
} from "../src/index.js";
import { ErrorInfoSchema, RetryInfoSchema } from "../src/rpc/google/rpc/error_details_pb.js";
import { Harness } from "./harness.js";

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

test("a refused field is a field violation with the proto's path and the TypeScript one", async () => {
  await assert.rejects(router.runText({ message: "hi", endUserId: "" }), (err: unknown) => {
    assert.ok(err instanceof InvalidArgument);
    assert.equal(err.reason, "INVALID_ARGUMENT");
    assert.deepEqual(err.metadata, { field: "end_user_id" });
    assert.equal(err.fieldViolations.length, 1);
    const [violation] = err.fieldViolations;
    assert.equal(violation?.field, "end_user_id");
    assert.equal(violation?.jsonField, "endUserId");
    assert.ok(violation?.description);
    assert.equal(err.details, `end_user_id: ${violation?.description}`);
    assert.equal(err.retryable, false);
    assert.equal(err.retryDelayMs, undefined);
    return true;
  });
  await assert.rejects(
    router.agents.put({ slug: "slow", provider: harness.daemon.provider, maxRuntimeSeconds: -1 }),
    (err: unknown) => {
      assert.ok(err instanceof InvalidArgument);
      assert.deepEqual(
        err.fieldViolations.map((v) => [v.field, v.jsonField]),
        [["agent.max_runtime_seconds", "agent.maxRuntimeSeconds"]],
      );
      return true;
    },
  );
});

test("a provider down before the first event is Unavailable naming it, with the delay to wait", async () => {
  const down: [string, ...(string | number)[]] = ["error", 503, "down"];
  // Every attempt the daemon makes (the provider's max_attempts, 3 by default) fails.
  await harness.enqueue([down], [down], [down]);
  await assert.rejects(router.runText({ message: "hi", endUserId: "u-down" }), (err: unknown) => {
    assert.ok(err instanceof Unavailable);
    assert.equal(err.reason, "PROVIDER_UNAVAILABLE");
    assert.deepEqual(err.metadata, { provider: "fake" });
    assert.ok((err.retryDelayMs ?? 0) >= 1000, String(err.retryDelayMs));
    assert.equal(err.retryable, true);
    assert.deepEqual(err.fieldViolations, []);
    return true;
  });
});

test("RetryInfo makes any status retryable; a status without details has empty fields", () => {
  const detailed = new ConnectError("busy", Code.FailedPrecondition, undefined, [
    { desc: ErrorInfoSchema, value: { reason: "TURN_IN_PROGRESS", domain: "interlock.dev" } },
    { desc: RetryInfoSchema, value: { retryDelay: { seconds: 1n, nanos: 500_000_000 } } },
  ]);
  const error = toInterlockError(detailed);
  assert.ok(error instanceof FailedPrecondition);
  assert.equal(error.reason, "TURN_IN_PROGRESS");
  assert.equal(error.retryDelayMs, 1500);
  assert.equal(error.retryable, true);

  const bare = toInterlockError(new ConnectError("gone", Code.Unavailable));
  assert.deepEqual([bare.reason, bare.metadata, bare.fieldViolations, bare.retryDelayMs], ["", {}, [], undefined]);
  assert.equal(bare.retryable, true);
});

test("a field path becomes lowerCamelCase segment by segment, as protobuf's JSON names it", () => {
  assert.equal(jsonFieldPath("end_user_id"), "endUserId");
  assert.equal(jsonFieldPath("compute.policy"), "compute.policy");
  assert.equal(jsonFieldPath("agent.max_output_tokens"), "agent.maxOutputTokens");
  assert.equal(jsonFieldPath("labels"), "labels");
});

test("src/rpc is what npm run generate-rpc makes of the vendored error_details.proto", async () => {
  const root = fileURLToPath(new URL("../../", import.meta.url));
  const out = mkdtempSync(join(tmpdir(), "interlock-rpc-"));
  try {
    await promisify(execFile)("sh", [`${root}scripts/generate-rpc.sh`, out]);
    const path = "google/rpc/error_details_pb.ts";
    assert.equal(readFileSync(join(out, path), "utf8"), readFileSync(`${root}src/rpc/${path}`, "utf8"));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

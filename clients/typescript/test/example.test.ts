/** examples/quickstart.ts, the README's runnable example, against a real interlockd. */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { Harness } from "./harness.js";

const QUICKSTART = fileURLToPath(new URL("../examples/quickstart.js", import.meta.url));
const run = promisify(execFile);

let harness: Harness;

before(async () => {
  harness = await Harness.start();
});

after(async () => {
  await harness.stop();
});

function env(apiKey: string): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, INTERLOCK_ADDRESS: harness.daemon.address, INTERLOCK_API_KEY: apiKey };
}

test("the quickstart streams a turn and continues the conversation", async () => {
  await harness.enqueue([["text", "It shipped ", "yesterday."]], [["text", "You're welcome."]]);
  const { stdout, stderr } = await run(process.execPath, [QUICKSTART], { env: env(harness.daemon.apiKey) });
  assert.equal(stdout, "It shipped yesterday.\nYou're welcome.\n");
  assert.match(stderr, /^end_turn: \d+ in, \d+ out\n$/);
  const upstream = await harness.requests();
  // The second turn (no system prompt) carried the first one's history.
  assert.deepEqual(
    upstream.at(-1)?.messages.map((m) => m.role),
    ["user", "assistant", "user"],
  );
});

test("the quickstart reports a wrong key as UNAUTHENTICATED and exits 1", async () => {
  await assert.rejects(run(process.execPath, [QUICKSTART], { env: env("ilk_wrong") }), (err: unknown) => {
    const failed = err as { code: number; stderr: string };
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /^error: UNAUTHENTICATED: /);
    return true;
  });
});

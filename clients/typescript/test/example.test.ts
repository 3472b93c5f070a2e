/** The README's runnable examples (examples/*.ts) against a real interlockd. */

import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { Harness } from "./harness.js";

const QUICKSTART = fileURLToPath(new URL("../examples/quickstart.js", import.meta.url));
const CONNECT_GITHUB = fileURLToPath(new URL("../examples/connect_github.js", import.meta.url));
const SOURCES = fileURLToPath(new URL("../../", import.meta.url));
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

/**
 * Run examples/connect_github.js for `endUserId`; once it prints the URL,
 * `decide` plays the end user at GitHub. Its exit code, stdout and stderr.
 */
async function connectGitHub(
  endUserId: string,
  decide: (authorizeUrl: string) => Promise<number>,
): Promise<{ code: number | null; stdout: string[]; stderr: string }> {
  const child = spawn(process.execPath, [CONNECT_GITHUB, endUserId], {
    env: env(harness.daemon.apiKey),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = once(child, "exit");
  const stdout: string[] = [];
  for await (const line of createInterface({ input: child.stdout })) {
    stdout.push(line);
    if (line.startsWith("Open ")) await decide(line.slice("Open ".length));
  }
  const [code] = (await exited) as [number | null];
  return { code, stdout, stderr };
}

test("connect_github prints the URL, then the account once the user approves at GitHub", async () => {
  const { code, stdout, stderr } = await connectGitHub("u-example", (url) => harness.approve(url));
  assert.equal(stderr, "");
  assert.equal(code, 0);
  assert.equal(stdout.length, 3);
  assert.ok(stdout[0]?.startsWith(`Open ${harness.daemon.githubUrl}/login/oauth/authorize?`));
  assert.match(stdout[1] ?? "", /^connected octocat \(int_\w+\)$/);
  assert.equal(stdout[2], "u-example has github");
});

test("connect_github exits 1 saying why when the user declines", async () => {
  const { code, stdout, stderr } = await connectGitHub("u-declines", (url) => harness.deny(url));
  assert.equal(code, 1);
  assert.equal(stdout.length, 1);
  assert.match(stderr, /^not connected: failed: .*access_denied.*\n$/);
});

test("the README's integrations example is examples/connect_github.ts as it is", () => {
  const readme = readFileSync(`${SOURCES}README.md`, "utf8");
  const example = readFileSync(`${SOURCES}examples/connect_github.ts`, "utf8");
  const block = /## Integrations\n[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block, "README.md has a ts block under ## Integrations");
  assert.ok(example.endsWith(block), "the README's block is the example without its header comment");
});

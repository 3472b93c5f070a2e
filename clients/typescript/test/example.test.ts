/**
 * The README's runnable examples (examples/*.ts) and its install steps against
 * a real interlockd; the README's blocks are the example files as they are.
 */

import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { Harness } from "./harness.js";

const QUICKSTART = fileURLToPath(new URL("../examples/quickstart.js", import.meta.url));
const CONNECT_GITHUB = fileURLToPath(new URL("../examples/connect_github.js", import.meta.url));
const SOURCES = fileURLToPath(new URL("../../", import.meta.url));
// Where README.md's install steps say the checkout is.
const CHECKOUT_PLACEHOLDER = "/path/to/interlock";
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

test("the README's first ts block is examples/quickstart.ts as it is", () => {
  const readme = readFileSync(`${SOURCES}README.md`, "utf8");
  const example = readFileSync(`${SOURCES}examples/quickstart.ts`, "utf8");
  assert.equal(/```ts\n([\s\S]*?)```/.exec(readme)?.[1], example);
});

const INSTALL = "the README's install steps pack the client into a new project whose quickstart runs";
test(INSTALL, { timeout: 300_000 }, async () => {
  const readme = readFileSync(`${SOURCES}README.md`, "utf8");
  const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? "");
  const steps = blocks.find((block) => block.includes("npm pack"));
  if (steps === undefined || !steps.includes(CHECKOUT_PLACEHOLDER)) {
    assert.fail("README.md has an sh block with the npm pack steps from the checkout");
  }
  // The steps pack a copy of the package's sources: packing builds it, and
  // building this checkout in place would rewrite dist/ under the running suite.
  const root = mkdtempSync(join(tmpdir(), "interlock-readme-"));
  try {
    const copy = join(root, "interlock", "clients", "typescript");
    for (const name of ["package.json", "package-lock.json", "tsconfig.json", "README.md", "src", "examples"]) {
      cpSync(`${SOURCES}${name}`, join(copy, name), { recursive: true });
    }
    symlinkSync(`${SOURCES}node_modules`, join(copy, "node_modules"));
    const project = join(root, "project");
    mkdirSync(project);
    await harness.enqueue([["text", "It shipped ", "yesterday."]], [["text", "You're welcome."]]);
    const script = steps.replaceAll(CHECKOUT_PLACEHOLDER, join(root, "interlock"));
    const { stdout } = await run("sh", ["-e", "-c", script], {
      cwd: project,
      env: {
        ...env(harness.daemon.apiKey),
        HOME: process.env.HOME,
        // npm's cache answers what it can (the registry is asked only for what it lacks).
        npm_config_prefer_offline: "true",
        npm_config_audit: "false",
        npm_config_fund: "false",
        npm_config_update_notifier: "false",
      },
      maxBuffer: 16 * 1024 * 1024,
    });
    assert.ok(stdout.endsWith("It shipped yesterday.\nYou're welcome.\n"), stdout);
    const upstream = await harness.requests();
    assert.deepEqual(
      upstream.at(-1)?.messages.map((m) => m.role),
      ["user", "assistant", "user"],
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
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

/**
 * The README's runnable examples (examples/*.ts) and its install steps against
 * a real interlockd; the README's blocks are the example files as they are.
 */

import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { Interlock } from "../src/index.js";
import { Harness } from "./harness.js";

const example = (name: string) => fileURLToPath(new URL(`../examples/${name}.js`, import.meta.url));
const QUICKSTART = example("quickstart");
const CONNECT_GITHUB = example("connect_github");
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

function env(apiKey: string, more: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, INTERLOCK_ADDRESS: harness.daemon.address, INTERLOCK_API_KEY: apiKey, ...more };
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

test("every example is a ts block of the README, as it is (its header comment aside)", () => {
  const readme = readFileSync(`${SOURCES}README.md`, "utf8");
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1] ?? "");
  const names = readdirSync(`${SOURCES}examples`).filter((n) => n.endsWith(".ts"));
  assert.ok(names.length >= 6);
  for (const name of names) {
    const source = readFileSync(`${SOURCES}examples/${name}`, "utf8");
    assert.ok(
      blocks.some((block) => block.includes("import ") && source.endsWith(block)),
      `README.md has examples/${name} as a ts block`,
    );
  }
});

test("the operator example creates a sandbox and its key, pauses an end user and lists sandboxes", async () => {
  const { stdout } = await run(process.execPath, [example("operator"), "acme-example"], {
    env: { PATH: process.env.PATH, INTERLOCK_ADDRESS: harness.daemon.address, INTERLOCK_OPERATOR_KEY: harness.daemon.operatorKey },
  });
  const lines = stdout.trimEnd().split("\n");
  const [sandboxId, apiKey] = (lines[0] ?? "").split(" INTERLOCK_API_KEY=");
  assert.match(sandboxId ?? "", /^sbx_\w+$/);
  assert.equal(lines[1], "paused u-abuse: abuse review");
  assert.ok(lines.includes(`${sandboxId} acme-example`), stdout);
  // The key it printed works for the new sandbox, and the pause was lifted.
  const tenant = new Interlock({ baseUrl: harness.daemon.baseUrl, apiKey });
  try {
    await harness.enqueue([["text", "Welcome."]]);
    assert.equal((await tenant.runText({ message: "Hi", endUserId: "u-abuse" })).text, "Welcome.");
  } finally {
    tenant.close();
  }
  await assert.rejects(
    run(process.execPath, [example("operator"), "acme-example"], {
      env: { PATH: process.env.PATH, INTERLOCK_ADDRESS: harness.daemon.address, INTERLOCK_OPERATOR_KEY: harness.daemon.operatorKey },
    }),
    (err: unknown) => (err as { stderr: string }).stderr === "a sandbox named acme-example exists already\n",
  );
});

test("the agents example saves an agent, runs it by slug and prints the stored conversation", async () => {
  await harness.enqueue([["text", "It ", "shipped."]]);
  const { stdout, stderr } = await run(process.execPath, [example("agents")], {
    env: env(harness.daemon.apiKey, { INTERLOCK_PROVIDER: harness.daemon.provider }),
  });
  assert.equal(stderr, "");
  assert.equal(stdout, "user: Where is my order?\nassistant: It shipped.\nagents: support\n");
  const upstream = await harness.requests();
  assert.deepEqual(upstream.at(-1)?.messages[0], { role: "system", content: "You are a support agent. Be brief." });
});

test("the agents example prints a refused field as this client spells it", async () => {
  await assert.rejects(
    run(process.execPath, [example("agents")], { env: env(harness.daemon.apiKey, { INTERLOCK_PROVIDER: "" }) }),
    (err: unknown) => {
      const failed = err as { code: number; stderr: string };
      assert.equal(failed.code, 1);
      assert.match(failed.stderr, /^agent\.provider: is required\n$/);
      return true;
    },
  );
});

test("the usage example prints today's cost per end user and the compute providers", async () => {
  const router = new Interlock({ baseUrl: harness.daemon.baseUrl, apiKey: harness.daemon.apiKey });
  try {
    await harness.enqueue([["text", "Counted."], ["usage", 30, 2]]);
    (await router.runText({ message: "Count me", endUserId: "u-usage" })).throwIfFailed();
  } finally {
    router.close();
  }
  const { stdout, stderr } = await run(process.execPath, [example("usage")], { env: env(harness.daemon.apiKey) });
  assert.equal(stderr, "");
  assert.match(stdout, /^u-usage: 1 runs, 30 in, 2 out, \$\d+\.\d{4}$/m);
  assert.match(stdout, /^total: \d+ runs, \$\d+\.\d{4}$/m);
  assert.match(stdout, /^compute local: healthy, 0 running$/m);
});

test("the retry example finishes its turn across a daemon restart, printing each piece once", async () => {
  await harness.enqueue([["text", "Once upon "], ["stall"]], [["text", "a time."]]);
  const child = spawn(process.execPath, [example("retry")], {
    env: env(harness.daemon.apiKey),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = once(child, "exit");
  let restarted = false;
  for await (const chunk of child.stdout) {
    stdout += (chunk as Buffer).toString();
    if (!restarted && stdout.includes("Once upon ")) {
      restarted = true;
      await harness.stopDaemon();
      await harness.startDaemon();
    }
  }
  const [code] = (await exited) as [number | null];
  assert.equal(code, 0, stderr);
  assert.equal(stdout, "Once upon a time.\n");
  assert.match(stderr, /^UNAVAILABLE: retrying in \d+ ms\n/);
});

const INSTALL = "the README's install steps pack the client into a new project whose quickstart runs";
test(INSTALL, { timeout: 300_000 }, async () => {
  const readme = readFileSync(`${SOURCES}README.md`, "utf8");
  const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? "");
  const steps = blocks.find((block) => block.includes("npm pack"));
  if (steps === undefined || !steps.includes(CHECKOUT_PLACEHOLDER)) {
    assert.fail("README.md has an sh block with the npm pack steps from the checkout");
  }
  // The project's tsconfig is a plain Node.js one: no DOM lib, and the
  // client's declaration files checked too (skipLibCheck off).
  assert.match(steps, /"lib": \["es2023"\]/);
  assert.doesNotMatch(steps, /skipLibCheck|"dom"/i);
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

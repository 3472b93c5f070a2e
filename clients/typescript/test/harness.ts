/**
 * A live interlockd for the tests: clients/testing/live_daemon.py started as
 * a subprocess with the project's virtualenv Python (or INTERLOCK_PYTHON). It
 * runs the scripted OpenAI-compatible fake as the upstream of a real daemon,
 * whose `github` app is the GitHub fake; commands to script and observe them,
 * and to play the end user's browser in a connect flow, go over its stdin,
 * one JSON line each.
 */

import { type ChildProcessByStdio, spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** One step of a scripted upstream reply: a Reply builder method and its arguments. */
export type Step = [string, ...(string | number)[]];

/** What the harness started. */
export interface LiveDaemon {
  address: string;
  baseUrl: string;
  apiKey: string;
  operatorKey: string;
  sandboxId: string;
  provider: string;
  model: string;
  /** The daemon's HTTP side, where connect flows come back to. */
  publicUrl: string;
  /** The GitHub fake (both its web and API side). */
  githubUrl: string;
}

// dist/test/harness.js -> the repository root.
const REPO = fileURLToPath(new URL("../../../../", import.meta.url));
const SCRIPT = `${REPO}clients/testing/live_daemon.py`;

function python(): string {
  const venv = `${REPO}.venv/bin/python`;
  return process.env.INTERLOCK_PYTHON || (existsSync(venv) ? venv : "python3");
}

type Answer = Record<string, unknown>;

export class Harness {
  readonly daemon: LiveDaemon;
  readonly #child: ChildProcessByStdio<Writable, Readable, null>;
  readonly #waiting: ((line: string | undefined) => void)[];

  private constructor(
    daemon: LiveDaemon,
    child: ChildProcessByStdio<Writable, Readable, null>,
    waiting: ((line: string | undefined) => void)[],
  ) {
    this.daemon = daemon;
    this.#child = child;
    this.#waiting = waiting;
  }

  /** Start the fake and the daemon; resolves once both listen. */
  static async start(): Promise<Harness> {
    const child = spawn(python(), [SCRIPT], { stdio: ["pipe", "pipe", "inherit"] });
    const waiting: ((line: string | undefined) => void)[] = [];
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => waiting.shift()?.(line));
    lines.on("close", () => {
      for (const resolve of waiting.splice(0)) resolve(undefined);
    });
    const first = await new Promise<string | undefined>((resolve) => waiting.push(resolve));
    if (first === undefined) {
      throw new Error(`the live daemon harness exited before it was ready (${SCRIPT})`);
    }
    const ready = JSON.parse(first) as Record<string, string>;
    const daemon: LiveDaemon = {
      address: ready.address ?? "",
      baseUrl: ready.base_url ?? "",
      apiKey: ready.api_key ?? "",
      operatorKey: ready.operator_key ?? "",
      sandboxId: ready.sandbox_id ?? "",
      provider: ready.provider ?? "",
      model: ready.model ?? "",
      publicUrl: ready.public_url ?? "",
      githubUrl: ready.github_url ?? "",
    };
    return new Harness(daemon, child, waiting);
  }

  /** Send one command and wait for its answer; throws if the harness reports a failure. */
  async command(command: Answer): Promise<Answer> {
    const answer = new Promise<string | undefined>((resolve) => this.#waiting.push(resolve));
    this.#child.stdin.write(`${JSON.stringify(command)}\n`);
    const line = await answer;
    if (line === undefined) {
      throw new Error("the live daemon harness exited");
    }
    const parsed = JSON.parse(line) as Answer;
    if (parsed.ok !== true) {
      throw new Error(`harness: ${String(parsed.error)}`);
    }
    return parsed;
  }

  /** Script the upstream's next answers, one list of steps per provider call. */
  async enqueue(...replies: Step[][]): Promise<void> {
    await this.command({ op: "enqueue", replies });
  }

  /** How many calls the upstream received and how many the daemon abandoned mid-answer. */
  async stats(): Promise<{ requests: number; disconnects: number }> {
    const answer = await this.command({ op: "stats" });
    return { requests: answer.requests as number, disconnects: answer.disconnects as number };
  }

  /** The JSON bodies of every upstream call so far. */
  async requests(): Promise<{ messages: { role: string; content?: unknown }[] }[]> {
    return (await this.command({ op: "requests" })).requests as { messages: { role: string; content?: unknown }[] }[];
  }

  /** Resolves once `count` upstream calls were abandoned by the daemon mid-answer. */
  async waitDisconnects(count: number): Promise<void> {
    await this.command({ op: "wait_disconnects", count });
  }

  /** Waits until the run started with `requestId` has ended; its stored status. */
  async waitRun(requestId: string): Promise<string> {
    return (await this.command({ op: "wait_run", request_id: requestId })).status as string;
  }

  /**
   * The end user at GitHub grants access on `authorizeUrl` (from Connect) and
   * their browser follows the redirect to the daemon's callback; resolves to
   * the callback page's HTTP status once the daemon has handled it.
   */
  async approve(authorizeUrl: string): Promise<number> {
    return (await this.command({ op: "approve", authorize_url: authorizeUrl })).status as number;
  }

  /** Like {@link approve}, but the end user declines. */
  async deny(authorizeUrl: string): Promise<number> {
    return (await this.command({ op: "deny", authorize_url: authorizeUrl })).status as number;
  }

  /**
   * Stop the daemon as a shutdown past its grace does: runs in flight end
   * with an `error` event (UNAVAILABLE, retryable). {@link startDaemon}
   * starts it again on the same data directory and address.
   */
  async stopDaemon(): Promise<void> {
    await this.command({ op: "stop" });
  }

  /** Start the daemon again after {@link stopDaemon}: same data, same address. */
  async startDaemon(): Promise<void> {
    await this.command({ op: "start" });
  }

  /** Close the harness's stdin, which stops the daemon and the fake. */
  async stop(): Promise<void> {
    const exited = new Promise((resolve) => this.#child.once("exit", resolve));
    this.#child.stdin.end();
    await exited;
  }
}

/**
 * `Interlock`: one connection to an Interlock daemon, over gRPC (HTTP/2).
 *
 * It adds three things to the generated service descriptors and nothing else:
 * the right key on every call (the sandbox API key for runs, conversations,
 * integrations, agents and the ledger, the operator key for sandboxes and
 * pauses, either for compute), the client's errors instead of transport
 * errors, and run events as plain objects discriminated by `kind`. Requests
 * and results of the administrative calls stay the generated messages
 * (exported as `v1`).
 *
 * Its types never name @connectrpc's (which need the DOM lib): a transport is
 * a {@link ConnectTransport}; `@interlock/client/connect` hands out the
 * client's authenticated transport typed as @connectrpc's own.
 */

import { create } from "@bufbuild/protobuf";
import type { Client, Transport } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { Agents } from "./agents.js";
import {
  bearer,
  ENV_ADDRESS,
  ENV_API_KEY,
  ENV_OPERATOR_KEY,
  fromEnv,
  type KeySource,
} from "./auth.js";
import { Compute } from "./compute.js";
import { Conversations } from "./conversations.js";
import { type AgentEvent, fromMessage } from "./events.js";
import {
  AgentRouter,
  type RunRequest as RunRequestMessage,
  RunRequestSchema,
} from "./gen/interlock/v1/router_pb.js";
import { Integrations } from "./integrations.js";
import { Ledger } from "./ledger.js";
import type { CallOptions } from "./options.js";
import { RunOutcome } from "./outcome.js";
import { Sandboxes } from "./sandboxes.js";
import { serverStream } from "./stream.js";
import { authenticated, connectTransport, TRANSPORTS } from "./internal.js";
import type { ConnectTransport } from "./transport.js";

export type { ConnectTransport } from "./transport.js";

export const DEFAULT_ADDRESS = "127.0.0.1:7600";

/** Which of the client's keys an authenticated transport sends. */
export type KeyName = "apiKey" | "operatorKey";

export interface InterlockOptions {
  /**
   * Where the daemon listens, e.g. `"http://127.0.0.1:7600"` (`https://` for
   * TLS). Defaults to `http://` + `INTERLOCK_ADDRESS`, then 127.0.0.1:7600.
   */
  baseUrl?: string;
  /** Sandbox API key for runs, conversations and integrations; defaults to `INTERLOCK_API_KEY`. */
  apiKey?: string;
  /** Operator key for sandboxes; defaults to `INTERLOCK_OPERATOR_KEY`. */
  operatorKey?: string;
  /**
   * A @connectrpc/connect transport of your own (TLS settings, interceptors,
   * a shared connection); `baseUrl` is then ignored and
   * {@link Interlock.close} leaves it alone.
   */
  transport?: ConnectTransport;
}

/** One agent turn. Empty or unset fields use the daemon's defaults. */
export interface RunRequest {
  /** The user's message. */
  message: string;
  /** Your id of the end user; conversations are private to one. */
  endUserId: string;
  /** Continue this conversation; unset starts a new one (its id comes in `runStarted`). */
  sessionId?: string;
  /** Provider configured on the daemon, e.g. "anthropic", "openai", "local". */
  provider?: string;
  /** Model on that provider. */
  model?: string;
  /** System prompt for this turn (not stored in the conversation). */
  system?: string;
  /** Allow-list of tool names; unset allows every tool of the sandbox. */
  tools?: string[];
  /**
   * Idempotency key (at most 128 characters). A run repeated with the same
   * `requestId` replays a run that ended on its own (`runStarted.replayed`),
   * resumes one the daemon stopped under or whose caller went away (the
   * stream repeats what was recorded, then carries the turn on), and runs
   * afresh one refused before its first event. Set it to retry safely after
   * `Unavailable` or an `error` event with `retryable`.
   */
  requestId?: string;
  /** Labels recorded with the run (cohorts, experiments). */
  labels?: Record<string, string>;
  /** Output token cap per provider call; 0 uses the model's default. */
  maxOutputTokens?: number;
  /** Google (Vertex AI Agent Engine): the deployed agent and its region. */
  google?: { reasoningEngineId?: string; location?: string };
  /**
   * A saved agent's slug (see {@link Interlock.agents}): its provider, model,
   * system prompt, tools and settings apply; `provider`, `model`, `system`,
   * `tools`, `maxOutputTokens` and `google` must then be unset.
   */
  agent?: string;
  /**
   * Where a self-hosted runtime (provider `hermes`) runs; ignored by the other
   * providers. `provider` pins a compute provider ("local", "daytona", ...),
   * `policy` is "latency-aware" (the default) or "cost-aware", `region` e.g. "us".
   */
  compute?: { provider?: string; policy?: string; region?: string };
}

export class Interlock {
  /** Sandboxes, API keys and quotas (operator key). */
  readonly sandboxes: Sandboxes;
  /** An end user's conversations (API key). */
  readonly conversations: Conversations;
  /** Data sources of the sandbox — OAuth apps, MCP servers — and their connections (API key). */
  readonly integrations: Integrations;
  /** Saved agents of the sandbox, run by slug with `run({ agent })` (API key). */
  readonly agents: Agents;
  /** What runs cost: ledger entries and usage summaries (API key; operator key for another sandbox). */
  readonly ledger: Ledger;
  /** Pauses (operator key); compute sessions, providers and placements (API key, else operator key). */
  readonly compute: Compute;
  readonly #router: Client<typeof AgentRouter>;
  readonly #apiKey: KeySource;
  readonly #sessions: Http2SessionManager | undefined;

  constructor(options: InterlockOptions = {}) {
    let transport = options.transport && connectTransport(options.transport);
    if (transport === undefined) {
      const baseUrl = options.baseUrl || `http://${process.env[ENV_ADDRESS] || DEFAULT_ADDRESS}`;
      this.#sessions = new Http2SessionManager(baseUrl);
      transport = createGrpcTransport({ baseUrl, sessionManager: this.#sessions });
    }
    this.#apiKey = {
      key: fromEnv(options.apiKey, ENV_API_KEY),
      what: "sandbox API key",
      hint: `pass apiKey or set ${ENV_API_KEY}`,
    };
    const operatorKey: KeySource = {
      key: fromEnv(options.operatorKey, ENV_OPERATOR_KEY),
      what: "operator key",
      hint: `pass operatorKey or set ${ENV_OPERATOR_KEY}`,
    };
    this.#router = createClient(AgentRouter, transport);
    this.sandboxes = new Sandboxes(transport, operatorKey);
    this.conversations = new Conversations(transport, this.#apiKey);
    this.integrations = new Integrations(transport, this.#apiKey);
    this.agents = new Agents(transport, this.#apiKey);
    this.ledger = new Ledger(transport, this.#apiKey, operatorKey);
    this.compute = new Compute(transport, this.#apiKey, operatorKey);
    const keys: Record<KeyName, KeySource> = { apiKey: this.#apiKey, operatorKey };
    const base = transport;
    TRANSPORTS.set(this, (name: KeyName) => authenticated(base, keys[name]));
  }

  /**
   * Run one agent turn and stream its events.
   *
   * The call starts when the iteration does. Leaving the loop early (`break`,
   * `return`, an exception) cancels the run on the router, and so do
   * `options.signal` and `options.timeoutMs`. A status the router returns
   * before the first event throws the matching `InterlockError`; a failure
   * after that arrives as the last event (`kind: "error"`), not as an exception.
   * Throws `MissingCredentials` at once when no API key is configured.
   */
  run(request: RunRequest, options: CallOptions = {}): AsyncGenerator<AgentEvent, void, undefined> {
    const headers = bearer(this.#apiKey);
    const message = create(RunRequestSchema, request);
    return this.#stream(message, headers, options);
  }

  /**
   * Run one turn to its end and return what it said. An `error` event does
   * not throw: it lands in `RunOutcome.error` (see `RunOutcome.throwIfFailed`).
   */
  async runText(request: RunRequest, options: CallOptions = {}): Promise<RunOutcome> {
    const outcome = new RunOutcome();
    for await (const event of this.run(request, options)) {
      outcome.add(event);
    }
    return outcome;
  }

  /** Close the connection the client opened; calls in flight fail. */
  close(): void {
    this.#sessions?.abort();
  }

  async *#stream(
    request: RunRequestMessage,
    headers: Record<string, string>,
    options: CallOptions,
  ): AsyncGenerator<AgentEvent, void, undefined> {
    for await (const message of serverStream(headers, options, (o) => this.#router.run(request, o))) {
      const event = fromMessage(message);
      if (event !== undefined) {
        yield event;
      }
    }
  }
}

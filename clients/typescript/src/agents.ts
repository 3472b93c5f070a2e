/**
 * Saved agents of a sandbox (sandbox API key): a named bundle of provider,
 * model, system prompt, tool allow-list and settings that a run names by its
 * slug (`run({ agent: "support", ... })`).
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";

import type { KeySource } from "./auth.js";
import { type Agent, type AgentSchema, Agents as AgentsService } from "./gen/interlock/v1/agents_pb.js";
import type { CallOptions } from "./options.js";
import { required } from "./sandboxes.js";
import { connectTransport } from "./internal.js";
import type { ConnectTransport } from "./transport.js";
import { unary } from "./unary.js";

/** An agent as a plain object: `slug` and `provider` are required; create and update times are ignored. */
export type AgentInit = MessageInitShape<typeof AgentSchema>;

export class Agents {
  readonly #stub: Client<typeof AgentsService>;
  readonly #key: KeySource;

  constructor(transport: ConnectTransport, key: KeySource) {
    this.#stub = createClient(AgentsService, connectTransport(transport));
    this.#key = key;
  }

  /** Create or replace the agent `agent.slug`; resolves to it as stored. */
  async put(agent: AgentInit, options: CallOptions = {}): Promise<Agent> {
    const response = await unary(this.#key, options, (o) => this.#stub.putAgent({ agent }, o));
    return required(response.agent, "PutAgent");
  }

  /** Read one agent; an unknown slug throws `NotFound`. */
  async get(slug: string, options: CallOptions = {}): Promise<Agent> {
    const response = await unary(this.#key, options, (o) => this.#stub.getAgent({ slug }, o));
    return required(response.agent, "GetAgent");
  }

  /** The sandbox's agents, by slug. */
  async list(options: CallOptions = {}): Promise<Agent[]> {
    const response = await unary(this.#key, options, (o) => this.#stub.listAgents({}, o));
    return response.agents;
  }

  /** Delete an agent; the conversations it ran stay. */
  async delete(slug: string, options: CallOptions = {}): Promise<void> {
    await unary(this.#key, options, (o) => this.#stub.deleteAgent({ slug }, o));
  }
}

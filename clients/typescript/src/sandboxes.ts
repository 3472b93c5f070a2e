/** Administration of sandboxes, their API keys and quotas (operator key). */

import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";

import type { KeySource } from "./auth.js";
import {
  type ApiKey,
  type CreateApiKeyResponse,
  type ListSandboxesResponse,
  type QuotasSchema,
  type Sandbox,
  Sandboxes as SandboxesService,
} from "./gen/interlock/v1/sandboxes_pb.js";
import type { CallOptions } from "./options.js";
import { connectTransport } from "./internal.js";
import type { ConnectTransport } from "./transport.js";
import { unary } from "./unary.js";

/** Quotas as a plain object; unset or zero fields mean unlimited. */
export type QuotasInit = MessageInitShape<typeof QuotasSchema>;

export class Sandboxes {
  readonly #stub: Client<typeof SandboxesService>;
  readonly #key: KeySource;

  constructor(transport: ConnectTransport, key: KeySource) {
    this.#stub = createClient(SandboxesService, connectTransport(transport));
    this.#key = key;
  }

  /** Create a sandbox; unset quotas mean unlimited. */
  async create(name: string, quotas?: QuotasInit, options: CallOptions = {}): Promise<Sandbox> {
    const response = await unary(this.#key, options, (o) =>
      this.#stub.createSandbox({ name, quotas }, o),
    );
    return required(response.sandbox, "CreateSandbox");
  }

  /** Read one sandbox. */
  async get(sandboxId: string, options: CallOptions = {}): Promise<Sandbox> {
    const response = await unary(this.#key, options, (o) =>
      this.#stub.getSandbox({ sandboxId }, o),
    );
    return required(response.sandbox, "GetSandbox");
  }

  /** One page of sandboxes in creation order; see {@link listAll} for all of them. */
  list(
    page: { pageSize?: number; pageToken?: string } = {},
    options: CallOptions = {},
  ): Promise<ListSandboxesResponse> {
    return unary(this.#key, options, (o) => this.#stub.listSandboxes(page, o));
  }

  /** Every sandbox, fetching pages as the iteration needs them. */
  async *listAll(pageSize = 0, options: CallOptions = {}): AsyncGenerator<Sandbox, void> {
    let pageToken = "";
    do {
      const page = await this.list({ pageSize, pageToken }, options);
      yield* page.sandboxes;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Delete a sandbox and everything in it, its encryption keys included. */
  async delete(sandboxId: string, options: CallOptions = {}): Promise<void> {
    await unary(this.#key, options, (o) => this.#stub.deleteSandbox({ sandboxId }, o));
  }

  /** Replace a sandbox's quotas entirely (zero means unlimited). */
  async setQuotas(sandboxId: string, quotas: QuotasInit, options: CallOptions = {}): Promise<Sandbox> {
    const response = await unary(this.#key, options, (o) =>
      this.#stub.setQuotas({ sandboxId, quotas }, o),
    );
    return required(response.sandbox, "SetQuotas");
  }

  /** Create an API key; the response's `secret` is the only copy there will be. */
  createApiKey(
    sandboxId: string,
    name: string,
    options: CallOptions = {},
  ): Promise<CreateApiKeyResponse> {
    return unary(this.#key, options, (o) => this.#stub.createApiKey({ sandboxId, name }, o));
  }

  /** A sandbox's keys, revoked ones included, in creation order (no secrets). */
  async listApiKeys(sandboxId: string, options: CallOptions = {}): Promise<ApiKey[]> {
    const response = await unary(this.#key, options, (o) =>
      this.#stub.listApiKeys({ sandboxId }, o),
    );
    return response.apiKeys;
  }

  /** Revoke a key; it stops working at once. Returns the revoked key. */
  async revokeApiKey(sandboxId: string, keyId: string, options: CallOptions = {}): Promise<ApiKey> {
    const response = await unary(this.#key, options, (o) =>
      this.#stub.revokeApiKey({ sandboxId, keyId }, o),
    );
    return required(response.apiKey, "RevokeApiKey");
  }

  /**
   * Store (or replace) a secret of the sandbox, sealed at rest, e.g.
   * `anthropic_api_key`. Write-only: no call returns a secret's value.
   */
  async setSecret(
    sandboxId: string,
    name: string,
    value: string,
    options: CallOptions = {},
  ): Promise<void> {
    await unary(this.#key, options, (o) => this.#stub.setSecret({ sandboxId, name, value }, o));
  }

  /** The names of a sandbox's secrets, sorted (never their values). */
  async listSecrets(sandboxId: string, options: CallOptions = {}): Promise<string[]> {
    const response = await unary(this.#key, options, (o) =>
      this.#stub.listSecrets({ sandboxId }, o),
    );
    return response.names;
  }

  /** Delete a secret; deleting an absent one is not an error. */
  async deleteSecret(sandboxId: string, name: string, options: CallOptions = {}): Promise<void> {
    await unary(this.#key, options, (o) => this.#stub.deleteSecret({ sandboxId, name }, o));
  }
}

/** A response field the API always sets; its absence is a broken server, not a case to handle. */
export function required<T>(value: T | undefined, rpc: string): T {
  if (value === undefined) {
    throw new TypeError(`${rpc} answered without its result`);
  }
  return value;
}

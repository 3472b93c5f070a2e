/**
 * Data sources of a sandbox — OAuth apps such as GitHub, MCP servers — and
 * their connections (sandbox API key). A connection is for one end user or for
 * the whole sandbox; its tools are offered to every run of that end user (or
 * of anyone in the sandbox), whichever provider runs it.
 *
 * OAuth apps connect in two steps: {@link Integrations.connect} returns the
 * URL to send the end user to, then {@link Integrations.waitConnected} (or
 * {@link Integrations.watchConnect}) follows the flow until they have finished.
 */

import type { Client } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";

import { bearer, type KeySource } from "./auth.js";
import { ConnectFailed, Unavailable } from "./errors.js";
import {
  type CatalogEntry,
  ConnectScope,
  type ConnectResponse,
  ConnectState,
  type Integration,
  Integrations as IntegrationsService,
  type WatchConnectResponse,
} from "./gen/interlock/v1/integrations_pb.js";
import type { CallOptions } from "./options.js";
import { required } from "./sandboxes.js";
import { serverStream } from "./stream.js";
import { connectTransport } from "./internal.js";
import type { ConnectTransport } from "./transport.js";
import { unary } from "./unary.js";

/** Who a connection serves: the end user who grants it, or every end user of the sandbox. */
export type ConnectScopeName = "endUser" | "sandbox";

const SCOPES: Record<ConnectScopeName, ConnectScope> = {
  endUser: ConnectScope.END_USER,
  sandbox: ConnectScope.SANDBOX,
};

/** Start connecting an OAuth app. */
export interface ConnectInit {
  /** The app, e.g. `"github"` (see {@link Integrations.catalog}). */
  app: string;
  /** The end user connecting it: their browser goes to the authorize URL. */
  endUserId: string;
  /** `"endUser"` (the default) or `"sandbox"`; `endUserId` still names who grants it. */
  scope?: ConnectScopeName;
}

/** Register an MCP server (Streamable HTTP). */
export interface McpServerInit {
  /** 1-32 of a-z, 0-9 and `-`; its tools are named `mcp__<name>__<tool>`. */
  name: string;
  /** Its URL: https, or http to a loopback address. */
  url: string;
  /** The end user it is for; unset or empty serves the whole sandbox. */
  endUserId?: string;
  /** Sent as `Authorization: Bearer ...`; sealed at rest, never returned. */
  bearerToken?: string;
  /** Other headers to send it (an API key header); sealed, never returned. */
  headers?: Record<string, string>;
}

/** Which integrations to list. */
export interface ListIntegrationsInit {
  /** That end user's and the sandbox-wide ones; unset lists all of the sandbox's. */
  endUserId?: string;
  /** Include disconnected (archived) integrations. */
  includeDisconnected?: boolean;
}

export class Integrations {
  readonly #stub: Client<typeof IntegrationsService>;
  readonly #key: KeySource;

  constructor(transport: ConnectTransport, key: KeySource) {
    this.#stub = createClient(IntegrationsService, connectTransport(transport));
    this.#key = key;
  }

  /**
   * What can be connected on this daemon, by name, with the tools each
   * provides. An entry with `available` false is known but not configured by
   * the operator: connecting it fails.
   */
  async catalog(options: CallOptions = {}): Promise<CatalogEntry[]> {
    const response = await unary(this.#key, options, (o) => this.#stub.catalog({}, o));
    return response.entries;
  }

  /**
   * Start connecting an OAuth app for an end user. Send them to the
   * response's `authorizeUrl`, then follow its `flowId` with
   * {@link waitConnected}. An app the daemon does not configure throws
   * `InvalidArgument`; OAuth without the daemon's public URL,
   * `FailedPrecondition`. An unknown `scope` rejects with a TypeError, unsent.
   */
  async connect(request: ConnectInit, options: CallOptions = {}): Promise<ConnectResponse> {
    const name = request.scope ?? "endUser";
    if (!Object.hasOwn(SCOPES, name)) {
      throw new TypeError(`scope must be "endUser" or "sandbox", not ${JSON.stringify(name)}`);
    }
    const message = { app: request.app, endUserId: request.endUserId, scope: SCOPES[name] };
    return unary(this.#key, options, (o) => this.#stub.connect(message, o));
  }

  /**
   * The connect flow's state now and at every change, until it has ended:
   * the last update is `CONNECTED` (with `integration`), `FAILED` or
   * `EXPIRED` (with `reason`); compare `state` with `v1.ConnectState`.
   *
   * The call starts when the iteration does. Leaving the loop early,
   * `options.signal` and `options.timeoutMs` (the call's deadline) stop the
   * watch, not the flow. A flow of another sandbox, or none, throws
   * `NotFound`. Throws `MissingCredentials` at once when no API key is
   * configured.
   */
  watchConnect(
    flowId: string,
    options: CallOptions = {},
  ): AsyncGenerator<WatchConnectResponse, void, undefined> {
    const headers = bearer(this.#key);
    return serverStream(headers, options, (o) => this.#stub.watchConnect({ flowId }, o));
  }

  /**
   * Wait until the connect flow ends and resolve to the new integration. A
   * flow that failed (the end user declined, the provider refused) or expired
   * throws {@link ConnectFailed} with its `state` and `explanation`.
   * `options.timeoutMs` bounds the wait, not the flow: `DeadlineExceeded`
   * leaves the flow open until it expires, and waiting again picks it up.
   */
  async waitConnected(flowId: string, options: CallOptions = {}): Promise<Integration> {
    for await (const update of this.watchConnect(flowId, options)) {
      switch (update.state) {
        case ConnectState.CONNECTED:
          return required(update.integration, "WatchConnect");
        case ConnectState.FAILED:
          throw new ConnectFailed(update.flowId, "failed", update.reason);
        case ConnectState.EXPIRED:
          throw new ConnectFailed(update.flowId, "expired", update.reason);
        default:
          // Pending, or a state added to the API after this client was built.
          break;
      }
    }
    throw new Unavailable(
      "UNAVAILABLE",
      `the watch of connect flow ${flowId} ended before the flow did; wait again`,
    );
  }

  /**
   * Register an MCP server as an integration and return it. Adding a name
   * again for the same end user replaces the earlier one. `bearerToken` and
   * `headers` go to the server on every call; no call returns them.
   */
  async addMcpServer(request: McpServerInit, options: CallOptions = {}): Promise<Integration> {
    const response = await unary(this.#key, options, (o) => this.#stub.addMcpServer(request, o));
    return required(response.integration, "AddMcpServer");
  }

  /**
   * Integrations, oldest first. With `endUserId`: that end user's and the
   * sandbox-wide ones (what their runs get); without: every integration of
   * the sandbox. Disconnected ones only with `includeDisconnected`.
   */
  async list(request: ListIntegrationsInit = {}, options: CallOptions = {}): Promise<Integration[]> {
    const response = await unary(this.#key, options, (o) =>
      this.#stub.listIntegrations(request, o),
    );
    return response.integrations;
  }

  /**
   * Revoke the grant upstream (OAuth apps), then archive the integration;
   * resolves to it, disconnected. Its tools disappear from later runs.
   * Disconnecting twice is not an error. If the provider refuses to revoke,
   * `FailedPrecondition` and the integration stays connected.
   */
  async disconnect(integrationId: string, options: CallOptions = {}): Promise<Integration> {
    const response = await unary(this.#key, options, (o) =>
      this.#stub.disconnect({ integrationId }, o),
    );
    return required(response.integration, "Disconnect");
  }
}

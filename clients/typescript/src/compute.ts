/**
 * Operating runs and compute: kill switches (pauses), the compute sessions of
 * self-hosted runtimes, compute providers and placement explanations.
 *
 * Pauses need the operator key. The other calls use the sandbox API key when
 * the client has one (they then see only that sandbox), else the operator key
 * (every sandbox); `sessions({ sandboxId })` with an operator key reads that
 * sandbox's.
 */

import type { Client } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";

import { apiKeyElseOperator, type KeySource } from "./auth.js";
import { choice } from "./choice.js";
import {
  Compute as ComputeService,
  type ComputeProviderStatus,
  type ComputeSession,
  ComputeSessionStatus,
  type ExplainPlacementResponse,
  type Pause,
  PauseScope,
  type SetPauseResponse,
} from "./gen/interlock/v1/compute_pb.js";
import type { CallOptions } from "./options.js";
import { required } from "./sandboxes.js";
import { connectTransport } from "./internal.js";
import type { ConnectTransport } from "./transport.js";
import { unary } from "./unary.js";

/** What a pause covers. */
export type PauseScopeName = "global" | "endUser" | "agentProvider" | "computeProvider";

const SCOPES: Record<PauseScopeName, PauseScope> = {
  global: PauseScope.GLOBAL,
  endUser: PauseScope.END_USER,
  agentProvider: PauseScope.AGENT_PROVIDER,
  computeProvider: PauseScope.COMPUTE_PROVIDER,
};

/** Where a compute session is. */
export type ComputeSessionStatusName =
  | "creating"
  | "running"
  | "suspended"
  | "archived"
  | "destroyed"
  | "failed";

const STATUSES: Record<ComputeSessionStatusName, ComputeSessionStatus> = {
  creating: ComputeSessionStatus.CREATING,
  running: ComputeSessionStatus.RUNNING,
  suspended: ComputeSessionStatus.SUSPENDED,
  archived: ComputeSessionStatus.ARCHIVED,
  destroyed: ComputeSessionStatus.DESTROYED,
  failed: ComputeSessionStatus.FAILED,
};

/** Which pause: its scope, and the sandbox and target it was set with. */
export interface PauseTarget {
  /** `"global"` (every run), `"endUser"`, `"agentProvider"` or `"computeProvider"`. */
  scope: PauseScopeName;
  /** The sandbox (required for `"endUser"`; optional for the provider scopes; unset for global). */
  sandboxId?: string;
  /** The end user id or the provider's name; unset for the global pause. */
  target?: string;
}

/** Which compute sessions to list; every filter is optional. */
export interface ComputeSessionsInit {
  /** Operator key: one sandbox's sessions. A sandbox key: unset or its own sandbox. */
  sandboxId?: string;
  endUserId?: string;
  /** A saved agent's slug, or `"<provider>/<model>"`. */
  agent?: string;
  /** Only sessions in this status; unset lists every status but `"destroyed"`. */
  status?: ComputeSessionStatusName;
  /** Only sessions on this compute provider. */
  provider?: string;
}

export class Compute {
  readonly #stub: Client<typeof ComputeService>;
  readonly #operatorKey: KeySource;
  readonly #apiKey: KeySource;

  constructor(transport: ConnectTransport, apiKey: KeySource, operatorKey: KeySource) {
    this.#stub = createClient(ComputeService, connectTransport(transport));
    this.#apiKey = apiKey;
    this.#operatorKey = operatorKey;
  }

  get #either(): KeySource {
    return apiKeyElseOperator(this.#apiKey, this.#operatorKey);
  }

  /**
   * Set a pause (operator key): new runs it covers are refused with
   * `FailedPrecondition` naming it, runs in flight end with an `error` event.
   * Setting it again replaces its reason. Resolves to the pause and how many
   * runs it stopped.
   */
  async pause(
    request: PauseTarget & { reason?: string },
    options: CallOptions = {},
  ): Promise<SetPauseResponse> {
    const message = { ...request, scope: choice(SCOPES, request.scope, "scope") };
    return unary(this.#operatorKey, options, (o) => this.#stub.setPause(message, o));
  }

  /** Clear a pause (operator key); resolves to false when there was none. */
  async unpause(request: PauseTarget, options: CallOptions = {}): Promise<boolean> {
    const message = { ...request, scope: choice(SCOPES, request.scope, "scope") };
    const response = await unary(this.#operatorKey, options, (o) => this.#stub.clearPause(message, o));
    return response.cleared;
  }

  /** The pauses in force, oldest first (operator key). */
  async pauses(options: CallOptions = {}): Promise<Pause[]> {
    const response = await unary(this.#operatorKey, options, (o) => this.#stub.listPauses({}, o));
    return response.pauses;
  }

  /** Compute sessions, oldest first, narrowed by the filters given. */
  async sessions(request: ComputeSessionsInit = {}, options: CallOptions = {}): Promise<ComputeSession[]> {
    const { status, ...filters } = request;
    const message = {
      ...filters,
      status: status === undefined ? ComputeSessionStatus.UNSPECIFIED : choice(STATUSES, status, "status"),
    };
    // Naming a sandbox is the operator's view of it, when the client has that key.
    const key = request.sandboxId && this.#operatorKey.key ? this.#operatorKey : this.#either;
    const response = await unary(key, options, (o) => this.#stub.listComputeSessions(message, o));
    return response.sessions;
  }

  /** Stop a running session now, keeping its state (waits for a run using it); resolves to it. */
  async suspend(sessionId: string, options: CallOptions = {}): Promise<ComputeSession> {
    const response = await unary(this.#either, options, (o) =>
      this.#stub.suspendComputeSession({ sessionId }, o),
    );
    return required(response.session, "SuspendComputeSession");
  }

  /** Start a suspended or archived session again, ahead of a run; resolves to it. */
  async resume(sessionId: string, options: CallOptions = {}): Promise<ComputeSession> {
    const response = await unary(this.#either, options, (o) =>
      this.#stub.resumeComputeSession({ sessionId }, o),
    );
    return required(response.session, "ResumeComputeSession");
  }

  /**
   * Delete a session and its state at its provider (waits for a run using
   * it); resolves to it, destroyed. The next run starts a new one.
   */
  async destroy(sessionId: string, options: CallOptions = {}): Promise<ComputeSession> {
    const response = await unary(this.#either, options, (o) =>
      this.#stub.destroyComputeSession({ sessionId }, o),
    );
    return required(response.session, "DestroyComputeSession");
  }

  /** The compute providers in order of preference: health, load, start times and prices. */
  async providers(options: CallOptions = {}): Promise<ComputeProviderStatus[]> {
    const response = await unary(this.#either, options, (o) => this.#stub.listComputeProviders({}, o));
    return response.providers;
  }

  /**
   * Where a run's runtime was placed and why, with every provider considered.
   * A run that was not placed on compute (or of another sandbox) is `NotFound`.
   */
  explain(runId: string, options: CallOptions = {}): Promise<ExplainPlacementResponse> {
    return unary(this.#either, options, (o) => this.#stub.explainPlacement({ runId }, o));
  }
}

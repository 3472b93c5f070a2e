/**
 * TypeScript client for the Interlock agent router.
 *
 * ```ts
 * const router = new Interlock({ baseUrl: "http://127.0.0.1:7600", apiKey });
 * for await (const event of router.run({ message: "Hello!", endUserId: "u-1" })) {
 *   if (event.kind === "textDelta") process.stdout.write(event.text);
 * }
 * ```
 *
 * The generated messages and service descriptors are exported as `v1`.
 */

export { type AgentInit, Agents } from "./agents.js";
export {
  type ConnectTransport,
  DEFAULT_ADDRESS,
  Interlock,
  type InterlockOptions,
  type KeyName,
  type RunRequest,
} from "./client.js";
export {
  Compute,
  type ComputeSessionsInit,
  type ComputeSessionStatusName,
  type PauseScopeName,
  type PauseTarget,
} from "./compute.js";
export { Conversations } from "./conversations.js";
export * from "./errors.js";
export type * from "./events.js";
export {
  type ConnectInit,
  type ConnectScopeName,
  Integrations,
  type ListIntegrationsInit,
  type McpServerInit,
} from "./integrations.js";
export {
  Ledger,
  type LedgerFilterInit,
  type LedgerKindName,
  type PageInit,
  type UsageGroupName,
  type UsageSummaries,
} from "./ledger.js";
export type { CallOptions } from "./options.js";
export { RunOutcome } from "./outcome.js";
export { type QuotasInit, Sandboxes } from "./sandboxes.js";
export * as v1 from "./v1.js";

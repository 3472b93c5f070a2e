/** Options every call takes. */

/** How long a call may take and how to cancel it. */
export interface CallOptions {
  /**
   * Cancels the call when it fires: the router stops the run (provider call,
   * tools) and the call throws `Cancelled`.
   */
  signal?: AbortSignal;
  /**
   * The call's deadline in milliseconds. It travels to the router as the gRPC
   * deadline, so the run stops there too; the call throws `DeadlineExceeded`.
   */
  timeoutMs?: number;
}

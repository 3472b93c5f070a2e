/**
 * Folding a run's events into one {@link RunOutcome}: the meaning of the
 * stream's shape (`runStarted` first, one `finish` or `error` last, text
 * deltas concatenated into the answer) in one place. No I/O.
 */

import { RunFailed } from "./errors.js";
import type {
  AgentEvent,
  ErrorEvent,
  FinishEvent,
  ToolCallEvent,
  ToolResultEvent,
} from "./events.js";

/** Everything a finished run said, collected event by event with {@link add}. */
export class RunOutcome {
  runId = "";
  sessionId = "";
  provider = "";
  model = "";
  requestId = "";
  /** True when the router replayed a recorded run (same `requestId`). */
  replayed = false;
  readonly toolCalls: ToolCallEvent[] = [];
  readonly toolResults: ToolResultEvent[] = [];
  finish: FinishEvent | undefined = undefined;
  error: ErrorEvent | undefined = undefined;
  #text: string[] = [];
  #thinking: string[] = [];

  /** The assistant's answer: every text delta of the run, concatenated. */
  get text(): string {
    return this.#text.join("");
  }

  /** The model's reasoning, when the provider exposed it. */
  get thinking(): string {
    return this.#thinking.join("");
  }

  /** True when the run ended with `finish`. */
  get ok(): boolean {
    return this.finish !== undefined && this.error === undefined;
  }

  /** Fold one event into the outcome. */
  add(event: AgentEvent): void {
    this.runId = event.runId || this.runId;
    switch (event.kind) {
      case "runStarted":
        this.sessionId = event.sessionId;
        this.provider = event.provider;
        this.model = event.model;
        this.requestId = event.requestId;
        this.replayed = event.replayed;
        break;
      case "textDelta":
        this.#text.push(event.text);
        break;
      case "thinkingDelta":
        this.#thinking.push(event.text);
        break;
      case "toolCall":
        this.toolCalls.push(event);
        break;
      case "toolResult":
        this.toolResults.push(event);
        break;
      case "finish":
        this.finish = event;
        this.sessionId ||= event.sessionId;
        break;
      case "error":
        this.error = event;
        break;
    }
  }

  /** Throw {@link RunFailed} unless the run finished normally. */
  throwIfFailed(): void {
    if (this.error !== undefined) {
      const e = this.error;
      throw new RunFailed(e.code, e.message, e.retryable, e.provider);
    }
    if (this.finish === undefined) {
      throw new RunFailed("UNKNOWN", "the stream ended without a finish or error event", false);
    }
  }
}

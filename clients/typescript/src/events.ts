/**
 * The events of a run, as plain objects discriminated by `kind`.
 *
 * The generated `AgentEvent` message keeps its payload in a oneof
 * (`event.event.case`); this module flattens it so a `switch (event.kind)`
 * narrows to the fields of that kind. 64-bit counters become numbers (a run's
 * seq and token counts stay far below 2^53) and timestamps become `Date`s.
 * Every event keeps the generated message as `raw`.
 */

import { timestampDate } from "@bufbuild/protobuf/wkt";

import { type AgentEvent as AgentEventMessage, StopReason } from "./gen/interlock/v1/events_pb.js";

/** Fields every event has. */
export interface EventBase {
  /** The run the event belongs to. */
  runId: string;
  /** Position in the run: 1, 2, ... strictly increasing. */
  seq: number;
  /** When the router produced the event. */
  time: Date | undefined;
  /** The generated message, for fields this client does not surface yet. */
  raw: AgentEventMessage;
}

/** The first event of every run; names the conversation (pass it as `sessionId` to continue). */
export interface RunStartedEvent extends EventBase {
  kind: "runStarted";
  sessionId: string;
  provider: string;
  model: string;
  requestId: string;
  /** True when this stream replays a finished run with the same `requestId`. */
  replayed: boolean;
}

/** A piece of the answer; concatenate them all for the whole text. */
export interface TextDeltaEvent extends EventBase {
  kind: "textDelta";
  text: string;
}

/** A piece of the model's reasoning, when the provider exposes it. */
export interface ThinkingDeltaEvent extends EventBase {
  kind: "thinkingDelta";
  text: string;
}

/** The model called a tool; the router is executing it. */
export interface ToolCallEvent extends EventBase {
  kind: "toolCall";
  callId: string;
  name: string;
  /** The arguments as JSON text, exactly as the model produced them. */
  argumentsJson: string;
  /** True when the provider runs the tool itself (a managed runtime's server-side tool). */
  providerExecuted: boolean;
}

/** The outcome of a tool call, as fed back to the model. */
export interface ToolResultEvent extends EventBase {
  kind: "toolResult";
  callId: string;
  name: string;
  /** The result as JSON text; empty when `error` is set. */
  resultJson: string;
  /** Why the tool failed; empty when it succeeded. */
  error: string;
  /** True when a stored result of an earlier attempt was reused. */
  reused: boolean;
  /** True for the result of a tool the provider ran itself. */
  providerExecuted: boolean;
}

/**
 * Why a run finished: the proto's StopReason without its prefix, in lower
 * case ("end_turn", "max_tokens", "tool_limit", ...).
 */
export type StopReasonName = Lowercase<keyof typeof StopReason>;

/** Token counts of a run, summed over its provider calls. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens: number;
  cacheWriteTokens: number;
  reasoningTokens: number;
}

/** What a run cost, from the router's price table. */
export interface Cost {
  tokenUsd: number;
  computeUsd: number;
  priceVersion: string;
}

/** The last event of a run that ended normally. */
export interface FinishEvent extends EventBase {
  kind: "finish";
  stopReason: StopReasonName;
  usage: Usage;
  cost: Cost;
  sessionId: string;
}

/** The last event of a run that failed after it had started streaming. */
export interface ErrorEvent extends EventBase {
  kind: "error";
  /** A gRPC status code name, e.g. "UNAVAILABLE", "DEADLINE_EXCEEDED". */
  code: string;
  message: string;
  /** True when running the same turn again may succeed. */
  retryable: boolean;
  /** The provider at fault, when there is one. */
  provider: string;
}

/** One event of a run's stream. */
export type AgentEvent =
  | RunStartedEvent
  | TextDeltaEvent
  | ThinkingDeltaEvent
  | ToolCallEvent
  | ToolResultEvent
  | FinishEvent
  | ErrorEvent;

function stopReasonName(value: StopReason): StopReasonName {
  // A reason added to the API after this client was built has no name here.
  const name = (StopReason[value] as keyof typeof StopReason | undefined) ?? "UNSPECIFIED";
  return name.toLowerCase() as StopReasonName;
}

/**
 * The event for one generated message, or `undefined` for a kind added to the
 * API after this client was built (an older client keeps working against a
 * newer router by skipping it).
 */
export function fromMessage(message: AgentEventMessage): AgentEvent | undefined {
  const base: EventBase = {
    runId: message.runId,
    seq: Number(message.seq),
    time: message.time ? timestampDate(message.time) : undefined,
    raw: message,
  };
  const { case: kind, value } = message.event;
  switch (kind) {
    case "runStarted":
      return {
        ...base,
        kind,
        sessionId: value.sessionId,
        provider: value.provider,
        model: value.model,
        requestId: value.requestId,
        replayed: value.replayed,
      };
    case "textDelta":
    case "thinkingDelta":
      return { ...base, kind, text: value.text };
    case "toolCall":
      return {
        ...base,
        kind,
        callId: value.callId,
        name: value.name,
        argumentsJson: value.argumentsJson,
        providerExecuted: value.providerExecuted,
      };
    case "toolResult":
      return {
        ...base,
        kind,
        callId: value.callId,
        name: value.name,
        resultJson: value.resultJson,
        error: value.error,
        reused: value.reused,
        providerExecuted: value.providerExecuted,
      };
    case "finish":
      return {
        ...base,
        kind,
        stopReason: stopReasonName(value.stopReason),
        usage: {
          inputTokens: Number(value.usage?.inputTokens ?? 0n),
          outputTokens: Number(value.usage?.outputTokens ?? 0n),
          cacheReadTokens: Number(value.usage?.cacheReadTokens ?? 0n),
          cacheWriteTokens: Number(value.usage?.cacheWriteTokens ?? 0n),
          reasoningTokens: Number(value.usage?.reasoningTokens ?? 0n),
        },
        cost: {
          tokenUsd: value.cost?.tokenUsd ?? 0,
          computeUsd: value.cost?.computeUsd ?? 0,
          priceVersion: value.cost?.priceVersion ?? "",
        },
        sessionId: value.sessionId,
      };
    case "error":
      return {
        ...base,
        kind,
        code: value.code,
        message: value.message,
        retryable: value.retryable,
        provider: value.provider,
      };
    default:
      return undefined;
  }
}

/**
 * The client's one error root and the single place gRPC failures map to it.
 *
 * Every failure the client reports is an {@link InterlockError} carrying the
 * gRPC status `code` (its name, e.g. `"UNAUTHENTICATED"`) and `grpcCode` (its
 * number, 16); a subclass per status code lets callers branch with
 * `instanceof` instead of comparing codes. The daemon's structured details
 * (google.rpc `ErrorInfo`, `BadRequest`, `RetryInfo` in the
 * `grpc-status-details-bin` trailer) become typed fields: `reason` (a stable
 * UPPER_SNAKE name such as `PROVIDER_UNAVAILABLE`), `metadata` (e.g.
 * `{ provider: "openai" }`), `fieldViolations` (the request field at fault, as
 * the proto spells it and as this client's request objects do) and
 * `retryDelayMs`:
 *
 * ```
 * InterlockError            code, grpcCode, details, retryable,
 * │                         reason, metadata, fieldViolations, retryDelayMs
 * ├── Cancelled             CANCELLED          (the caller's AbortSignal fired)
 * ├── Unknown               UNKNOWN
 * ├── InvalidArgument       INVALID_ARGUMENT   (details name the field)
 * ├── DeadlineExceeded      DEADLINE_EXCEEDED  (timeoutMs passed)
 * ├── NotFound              NOT_FOUND
 * ├── AlreadyExists         ALREADY_EXISTS
 * ├── PermissionDenied      PERMISSION_DENIED
 * ├── ResourceExhausted     RESOURCE_EXHAUSTED (a quota or cap; retryable)
 * ├── FailedPrecondition    FAILED_PRECONDITION (e.g. a turn already in progress)
 * ├── Aborted               ABORTED            (retryable)
 * ├── OutOfRange            OUT_OF_RANGE
 * ├── Unimplemented         UNIMPLEMENTED
 * ├── Internal              INTERNAL
 * ├── Unavailable           UNAVAILABLE        (retryable)
 * ├── DataLoss              DATA_LOSS
 * ├── Unauthenticated       UNAUTHENTICATED
 * │   └── MissingCredentials no key configured; thrown before anything is sent
 * ├── RunFailed             a started run ended with an `error` event
 * └── ConnectFailed         a connect flow ended failed or expired
 * ```
 *
 * `RunFailed` is not a status the call returned: the run had started
 * streaming and recorded part of the turn before it failed, so "retry" means
 * something different than for a call the router refused up front.
 * `ConnectFailed` is not a refused call either: the flow was accepted, then
 * the end user declined, the provider refused or time ran out; what to do is
 * start connecting again.
 */

import { ConnectError } from "@connectrpc/connect";

import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./rpc/google/rpc/error_details_pb.js";

/** gRPC status code names, as the router also uses them in `error` events. */
export type StatusCode =
  | "CANCELLED"
  | "UNKNOWN"
  | "INVALID_ARGUMENT"
  | "DEADLINE_EXCEEDED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "OUT_OF_RANGE"
  | "UNIMPLEMENTED"
  | "INTERNAL"
  | "UNAVAILABLE"
  | "DATA_LOSS"
  | "UNAUTHENTICATED";

// Index = the gRPC status number, which @connectrpc/connect's Code enum uses
// too (0 is OK, never an error).
const NAMES: readonly (StatusCode | "OK")[] = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/** One request field the daemon refused (a google.rpc `BadRequest` field violation). */
export interface FieldViolation {
  /** The field's path as the proto spells it, e.g. `end_user_id`, `compute.policy`. */
  field: string;
  /** The same path as this client's request objects spell it: `endUserId`, `compute.policy`. */
  jsonField: string;
  /** What is wrong with it and what is accepted. */
  description: string;
}

export interface ErrorOptions {
  /** Overrides the class's default (whether the same request may succeed later). */
  retryable?: boolean;
  /** The lower-level error, for debugging. */
  cause?: unknown;
  /** The error's stable name (google.rpc `ErrorInfo.reason`). */
  reason?: string;
  /** What the error is about (`ErrorInfo.metadata`), e.g. `{ field: "end_user_id" }`. */
  metadata?: Record<string, string>;
  /** The fields at fault (google.rpc `BadRequest`). */
  fieldViolations?: FieldViolation[];
  /** How long to wait before trying again (google.rpc `RetryInfo`); implies retryable. */
  retryDelayMs?: number;
}

/** Root of every error the client throws: a gRPC status code and its details. */
export class InterlockError extends Error {
  /** Whether sending the same request again may succeed; subclasses override. */
  static readonly defaultRetryable: boolean = false;

  /** The status code's name, e.g. `"UNAUTHENTICATED"`. */
  readonly code: StatusCode;
  /** The status code's number, e.g. 16. */
  readonly grpcCode: number;
  /** What went wrong and what to do, as the router said it. */
  readonly details: string;
  /** Whether sending the same request again may succeed. */
  readonly retryable: boolean;
  /**
   * The error's stable name from the daemon (e.g. `"INVALID_ARGUMENT"`,
   * `"NOT_FOUND"`, `"PROVIDER_UNAVAILABLE"`); branch on it rather than on
   * `details`. Empty when the failure did not come from the daemon (a
   * connection that failed, a deadline this client enforced).
   */
  readonly reason: string;
  /** What the error is about, e.g. `{ field: "end_user_id" }` or `{ provider: "openai" }`. */
  readonly metadata: Record<string, string>;
  /** For `InvalidArgument`: the request fields at fault; empty otherwise. */
  readonly fieldViolations: FieldViolation[];
  /** When the daemon says a retry may succeed: how long to wait first, in milliseconds. */
  readonly retryDelayMs: number | undefined;

  constructor(code: StatusCode, details: string, options: ErrorOptions = {}) {
    super(details ? `${code}: ${details}` : code, { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.grpcCode = NAMES.indexOf(code);
    this.details = details;
    const defaults = new.target as unknown as typeof InterlockError;
    this.retryDelayMs = options.retryDelayMs;
    this.retryable =
      options.retryable ?? (options.retryDelayMs !== undefined || defaults.defaultRetryable);
    this.reason = options.reason ?? "";
    this.metadata = options.metadata ?? {};
    this.fieldViolations = options.fieldViolations ?? [];
  }
}

/**
 * The caller's `AbortSignal` cancelled the call; the daemon stopped the run
 * (recorded `cancelled`). Not a failure of the call: tell it apart with
 * `instanceof Cancelled`. (Leaving a loop early cancels too, but throws nothing.)
 */
export class Cancelled extends InterlockError {}
/** The server failed in a way it could not classify. */
export class Unknown extends InterlockError {}
/** The request was malformed; the details name the field at fault. */
export class InvalidArgument extends InterlockError {}
/** The call's deadline (`timeoutMs`) passed before it completed. */
export class DeadlineExceeded extends InterlockError {}
/** An id in the request names nothing the key can see. */
export class NotFound extends InterlockError {}
/** The thing to create exists already (e.g. a sandbox name in use). */
export class AlreadyExists extends InterlockError {}
/** The key is valid but may not do this. */
export class PermissionDenied extends InterlockError {}
/** A quota, cap or budget is spent; retry later. */
export class ResourceExhausted extends InterlockError {
  static override readonly defaultRetryable = true;
}
/** The target is in a state that refuses the call (paused, turn in progress). */
export class FailedPrecondition extends InterlockError {}
/** A concurrent change won; retry the whole operation. */
export class Aborted extends InterlockError {
  static override readonly defaultRetryable = true;
}
/** A value is outside the accepted range. */
export class OutOfRange extends InterlockError {}
/** The daemon does not offer this call (it is older than the client). */
export class Unimplemented extends InterlockError {}
/** The router failed; what was recorded is kept. */
export class Internal extends InterlockError {}
/**
 * The daemon or the provider could not be reached, or the connection to the
 * daemon was lost mid-call (it restarted). Retryable: a `run` repeated with
 * the same `requestId` resumes the turn where it stopped.
 */
export class Unavailable extends InterlockError {
  static override readonly defaultRetryable = true;
}
/** Data was lost or corrupted. */
export class DataLoss extends InterlockError {}
/** The key was missing, unknown or revoked. */
export class Unauthenticated extends InterlockError {}

/** No key was configured for a call that needs one; nothing was sent. */
export class MissingCredentials extends Unauthenticated {
  constructor(details: string) {
    super("UNAUTHENTICATED", details);
  }
}

/**
 * A run that had started streaming ended with an `error` event. `code` is the
 * status the router named in the event (`UNKNOWN` if this client does not know
 * the name); `provider` names the provider at fault, when there is one.
 */
export class RunFailed extends InterlockError {
  readonly provider: string;

  constructor(code: string, details: string, retryable: boolean, provider = "") {
    super(statusCodeNamed(code), details, {
      retryable,
      metadata: provider ? { provider } : {},
    });
    this.provider = provider;
  }
}

/**
 * A connect flow ended without a connection. `state` is `"failed"` (the end
 * user declined, or the provider refused the grant) or `"expired"` (the end
 * user did not finish in time); `explanation` is the router's one-line
 * account of it, and `reason` the stable `CONNECT_FAILED` or `CONNECT_EXPIRED`.
 * `code` is always `FAILED_PRECONDITION`: the flow is over, and only a new
 * `connect` can succeed.
 */
export class ConnectFailed extends InterlockError {
  readonly flowId: string;
  readonly state: "failed" | "expired";
  readonly explanation: string;

  constructor(flowId: string, state: "failed" | "expired", explanation: string) {
    super(
      "FAILED_PRECONDITION",
      `connect flow ${flowId} ${state}${explanation ? `: ${explanation}` : ""}`,
      { reason: state === "failed" ? "CONNECT_FAILED" : "CONNECT_EXPIRED", metadata: { flow_id: flowId } },
    );
    this.flowId = flowId;
    this.state = state;
    this.explanation = explanation;
  }
}

const BY_CODE: Record<StatusCode, typeof InterlockError> = {
  CANCELLED: Cancelled,
  UNKNOWN: Unknown,
  INVALID_ARGUMENT: InvalidArgument,
  DEADLINE_EXCEEDED: DeadlineExceeded,
  NOT_FOUND: NotFound,
  ALREADY_EXISTS: AlreadyExists,
  PERMISSION_DENIED: PermissionDenied,
  RESOURCE_EXHAUSTED: ResourceExhausted,
  FAILED_PRECONDITION: FailedPrecondition,
  ABORTED: Aborted,
  OUT_OF_RANGE: OutOfRange,
  UNIMPLEMENTED: Unimplemented,
  INTERNAL: Internal,
  UNAVAILABLE: Unavailable,
  DATA_LOSS: DataLoss,
  UNAUTHENTICATED: Unauthenticated,
};

/** The status code called `name`, or `"UNKNOWN"`: an unrecognised name must not crash a client. */
export function statusCodeNamed(name: string): StatusCode {
  return name in BY_CODE ? (name as StatusCode) : "UNKNOWN";
}

/**
 * A proto field path in lowerCamelCase, as protobuf's JSON mapping and this
 * client's request objects spell it: `end_user_id` → `endUserId`,
 * `agent.max_output_tokens` → `agent.maxOutputTokens`.
 */
export function jsonFieldPath(field: string): string {
  return field.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/**
 * The most specific {@link InterlockError} for a failed call, with the
 * google.rpc details the daemon sent as typed fields. Errors that are already
 * InterlockErrors pass through; anything that is not a gRPC failure becomes
 * `Unknown` with the original as its `cause`.
 */
export function toInterlockError(reason: unknown): InterlockError {
  if (reason instanceof InterlockError) {
    return reason;
  }
  const error = ConnectError.from(reason);
  const code = NAMES[error.code] ?? "UNKNOWN";
  const name: StatusCode = code === "OK" ? "UNKNOWN" : code;
  return new BY_CODE[name](name, error.rawMessage, { cause: reason, ...statusDetails(error) });
}

/**
 * {@link toInterlockError} for a call that was given `signal`. @connectrpc
 * reports an HTTP/2 stream reset (RST_STREAM CANCEL, as when the connection
 * to the daemon drops or the daemon goes away) as CANCELLED, like a
 * cancellation of the caller's own; but `Cancelled` means the caller
 * cancelled. A CANCELLED the caller did not cause, and that the daemon did
 * not send as a status of its own (those carry a reason), is the connection
 * lost: `Unavailable`, retryable.
 */
export function callError(reason: unknown, signal: AbortSignal | undefined): InterlockError {
  const error = toInterlockError(reason);
  if (error instanceof Cancelled && !error.reason && !signal?.aborted) {
    return new Unavailable("UNAVAILABLE", `the connection to the daemon was lost (${error.details})`, {
      cause: reason,
    });
  }
  return error;
}

/** The google.rpc details of a status; a detail that is absent or does not decode is left out. */
function statusDetails(error: ConnectError): ErrorOptions {
  const options: ErrorOptions = {};
  const [info] = error.findDetails(ErrorInfoSchema);
  if (info !== undefined) {
    options.reason = info.reason;
    options.metadata = { ...info.metadata };
  }
  const violations = error.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
  if (violations.length > 0) {
    options.fieldViolations = violations.map((v) => ({
      field: v.field,
      jsonField: jsonFieldPath(v.field),
      description: v.description,
    }));
  }
  const [retry] = error.findDetails(RetryInfoSchema);
  if (retry !== undefined) {
    const delay = retry.retryDelay;
    options.retryDelayMs = delay ? Number(delay.seconds) * 1000 + delay.nanos / 1e6 : 0;
  }
  return options;
}


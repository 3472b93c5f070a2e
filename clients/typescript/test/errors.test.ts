/** The mapping of gRPC failures and `error` events to the client's error classes. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import {
  DeadlineExceeded,
  Internal,
  InterlockError,
  ResourceExhausted,
  RunFailed,
  RunOutcome,
  toInterlockError,
  Unauthenticated,
  Unavailable,
} from "../src/index.js";

test("every gRPC status code maps to its own InterlockError subclass", () => {
  const codes = Object.values(Code).filter((c): c is Code => typeof c === "number");
  const classes = new Set<unknown>();
  for (const code of codes) {
    const error = toInterlockError(new ConnectError("details", code));
    assert.equal(error.grpcCode, code);
    assert.equal(error.details, "details");
    assert.equal(error.message, `${error.code}: details`);
    classes.add(error.constructor);
  }
  assert.equal(classes.size, codes.length);
  assert.ok(toInterlockError(new ConnectError("", Code.Unauthenticated)) instanceof Unauthenticated);
  assert.ok(toInterlockError(new ConnectError("", Code.DeadlineExceeded)) instanceof DeadlineExceeded);
  assert.ok(toInterlockError(new ConnectError("", Code.Internal)) instanceof Internal);
});

test("only the codes worth retrying are retryable", () => {
  assert.equal(toInterlockError(new ConnectError("", Code.Unavailable)).retryable, true);
  assert.equal(toInterlockError(new ConnectError("", Code.ResourceExhausted)).retryable, true);
  assert.equal(toInterlockError(new ConnectError("", Code.InvalidArgument)).retryable, false);
  assert.ok(new Unavailable("UNAVAILABLE", "x") instanceof InterlockError);
  assert.equal(new ResourceExhausted("RESOURCE_EXHAUSTED", "x", { retryable: false }).retryable, false);
});

test("anything that is not a gRPC failure becomes Unknown with the original as cause", () => {
  const original = new TypeError("boom");
  const error = toInterlockError(original);
  assert.equal(error.code, "UNKNOWN");
  assert.equal(error.cause, original);
});

test("an error event becomes RunFailed with the router's code, or UNKNOWN for a name it does not know", () => {
  const outcome = new RunOutcome();
  assert.throws(() => outcome.throwIfFailed(), (e: unknown) => e instanceof RunFailed && e.code === "UNKNOWN");
  const base = { runId: "run_1", seq: 2, time: undefined, raw: undefined as never };
  outcome.add({ ...base, kind: "error", code: "UNAVAILABLE", message: "gone", retryable: true, provider: "openai" });
  assert.throws(
    () => outcome.throwIfFailed(),
    (e: unknown) =>
      e instanceof RunFailed && e.code === "UNAVAILABLE" && e.retryable && e.provider === "openai",
  );
  const odd = new RunFailed("NOT_A_CODE", "m", false);
  assert.equal(odd.code, "UNKNOWN");
});

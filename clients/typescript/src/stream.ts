/** One server-streaming call: the key's headers in, the client's errors out, cancelled when left. */

import type { CallOptions as ConnectCallOptions } from "@connectrpc/connect";

import { callError } from "./errors.js";
import type { CallOptions } from "./options.js";

/**
 * The messages of a server-streaming call, which starts when the iteration
 * does. Leaving the loop early (`break`, `return`, an exception) cancels the
 * call on the router and throws nothing (the caller chose to leave);
 * `options.signal` cancels it and throws `Cancelled`, `options.timeoutMs`
 * throws `DeadlineExceeded`, a connection lost mid-stream `Unavailable`;
 * other failures throw the matching `InterlockError`. The caller computes
 * `headers` up front, so that a missing key throws before any iteration.
 */
export async function* serverStream<T>(
  headers: Record<string, string>,
  options: CallOptions,
  open: (options: ConnectCallOptions) => AsyncIterable<T>,
): AsyncGenerator<T, void, undefined> {
  // Our own signal, so that leaving the loop early cancels the HTTP/2 stream
  // (and with it the work on the router) right away.
  const leave = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, leave.signal]) : leave.signal;
  const messages = open({ headers, signal, timeoutMs: options.timeoutMs })[Symbol.asyncIterator]();
  let ended = false;
  try {
    for (;;) {
      const next = await messages.next();
      if (next.done) {
        ended = true;
        return;
      }
      yield next.value;
    }
  } catch (reason) {
    ended = true;
    throw callError(reason, options.signal);
  } finally {
    leave.abort();
    if (!ended) {
      // Left early. @connectrpc/connect clears the `timeoutMs` timer only when
      // a read ends or fails, so read once more (it fails, cancelled): else
      // the timer would keep the process alive until the deadline.
      await messages.next().catch(() => undefined);
    }
  }
}

/** One unary call: the key's headers in, the client's errors out. */

import type { CallOptions as ConnectCallOptions } from "@connectrpc/connect";

import { bearer, type KeySource } from "./auth.js";
import { callError } from "./errors.js";
import type { CallOptions } from "./options.js";

export async function unary<T>(
  key: KeySource,
  options: CallOptions,
  call: (options: ConnectCallOptions) => Promise<T>,
): Promise<T> {
  const headers = bearer(key);
  try {
    return await call({ headers, signal: options.signal, timeoutMs: options.timeoutMs });
  } catch (reason) {
    throw callError(reason, options.signal);
  }
}

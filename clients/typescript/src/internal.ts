/**
 * What `@interlock/client/connect` reaches inside an `Interlock`: its
 * transport with a key. Typed loosely on purpose: the main entry's types must
 * not name @connectrpc's (see `ConnectTransport`).
 */

import type { Transport } from "@connectrpc/connect";

import { bearer, type KeySource } from "./auth.js";
import type { ConnectTransport } from "./transport.js";

/** The @connectrpc transport a {@link ConnectTransport} is. */
export function connectTransport(transport: ConnectTransport): Transport {
  return transport as Transport;
}

/** Per client: its transport sending the key named. */
export const TRANSPORTS = new WeakMap<object, (key: "apiKey" | "operatorKey") => unknown>();

/**
 * `transport` with the key's `authorization` header on every call. A missing
 * key rejects the call with MissingCredentials, before anything is sent.
 */
export function authenticated(transport: Transport, key: KeySource): Transport {
  const withKey = (header: ConstructorParameters<typeof Headers>[0]): Headers => {
    const headers = new Headers(header);
    for (const [name, value] of Object.entries(bearer(key))) headers.set(name, value);
    return headers;
  };
  return {
    unary: async (method, signal, timeoutMs, header, input, contextValues) =>
      transport.unary(method, signal, timeoutMs, withKey(header), input, contextValues),
    stream: async (method, signal, timeoutMs, header, input, contextValues) =>
      transport.stream(method, signal, timeoutMs, withKey(header), input, contextValues),
  };
}

/**
 * `@interlock/client/connect`: the client's authenticated connection for the
 * generated stubs of @connectrpc/connect, for a call this client does not
 * wrap the way you need:
 *
 * ```ts
 * import { createClient } from "@connectrpc/connect";
 * import { Interlock, v1 } from "@interlock/client";
 * import { authenticatedTransport } from "@interlock/client/connect";
 *
 * const router = new Interlock();
 * const ledger = createClient(v1.Ledger, authenticatedTransport(router));
 * const page = await ledger.listLedgerEntries({ pageSize: 10 });
 * ```
 *
 * A separate entry point because its types are @connectrpc's own, which a
 * TypeScript project checks only with the DOM lib or `skipLibCheck`; the main
 * entry's types never name them. Raw stubs throw @connectrpc's `ConnectError`;
 * `toInterlockError` turns one into this client's errors.
 */

import type { Transport } from "@connectrpc/connect";

import type { Interlock, KeyName } from "./client.js";
import { TRANSPORTS } from "./internal.js";

/**
 * The client's transport (its HTTP/2 connection, or the transport it was
 * given) sending `key` — the sandbox API key by default, or the operator key —
 * on every call. It stays usable until `router.close()`.
 */
export function authenticatedTransport(router: Interlock, key: KeyName = "apiKey"): Transport {
  const make = TRANSPORTS.get(router);
  if (make === undefined) {
    throw new TypeError("not an Interlock client");
  }
  return make(key) as Transport;
}

/** The shape of a @connectrpc/connect transport, as this package's public types name it. */

/**
 * A `Transport` of @connectrpc/connect (`createGrpcTransport` of
 * @connectrpc/connect-node, with your TLS settings or interceptors). Declared
 * by its shape here so that this package's types do not pull in
 * @connectrpc's, which a plain Node.js tsconfig (no DOM lib) cannot check.
 */
export interface ConnectTransport {
  unary(...args: never[]): Promise<unknown>;
  stream(...args: never[]): Promise<unknown>;
}

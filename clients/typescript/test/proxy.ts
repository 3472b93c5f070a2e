/**
 * A TCP relay in front of the daemon whose connections a test can cut, as a
 * network that drops does: the client sees its connection lost mid-call
 * while the daemon keeps running.
 */

import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";

export class Relay {
  readonly #server: Server;
  readonly #sockets: Set<Socket>;

  private constructor(server: Server, sockets: Set<Socket>) {
    this.#server = server;
    this.#sockets = sockets;
  }

  /** Relay 127.0.0.1:PORT (a free one) to `target` ("host:port"). */
  static async start(target: string): Promise<Relay> {
    const [host, port] = target.split(":");
    const sockets = new Set<Socket>();
    const server = createServer((client) => {
      const upstream = connect(Number(port), host ?? "127.0.0.1");
      for (const socket of [client, upstream]) {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
        socket.on("error", () => undefined);
      }
      client.pipe(upstream).pipe(client);
    });
    const relay = new Relay(server, sockets);
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return relay;
  }

  /** Its base URL, for `new Interlock({ baseUrl })`. */
  get baseUrl(): string {
    const address = this.#server.address();
    if (address === null || typeof address === "string") throw new Error("the relay is not listening");
    return `http://127.0.0.1:${address.port}`;
  }

  /** Drop every connection now (both sides), as a lost network does. */
  cut(): void {
    for (const socket of this.#sockets) socket.destroy();
  }

  async close(): Promise<void> {
    this.cut();
    this.#server.close();
    await once(this.#server, "close");
  }
}

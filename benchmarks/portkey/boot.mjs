// Preloaded with `node --import` by benchmarks/side_by_side.py before Portkey's
// gateway starts (its bin, build/start-server.js).
//
// Loopback: the gateway (1.15.2) starts its HTTP server without a host, so on
// every interface, and has no option to choose one. Here every TCP server this
// process opens listens on 127.0.0.1 instead, whatever host it asked for.
//
// No orphan: the process exits once its stdin (a pipe from the harness) closes,
// which happens when the harness exits, even by SIGKILL.
import net from "node:net";

const LOOPBACK = "127.0.0.1";
const listen = net.Server.prototype.listen;

net.Server.prototype.listen = function (...args) {
  const [first, second] = args;
  if (typeof first === "number" || typeof first === "string") {
    // listen(port[, host][, backlog][, callback])
    if (second === undefined || typeof second === "string") args[1] = LOOPBACK;
    else args.splice(1, 0, LOOPBACK);
  } else if (first && typeof first === "object" && first.path === undefined) {
    args[0] = { ...first, host: LOOPBACK }; // listen({port, host, ...}[, callback])
  }
  return listen.apply(this, args);
};

if (process.env.BENCH_EXIT_ON_STDIN_EOF) {
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("error", () => process.exit(0));
  process.stdin.resume();
}

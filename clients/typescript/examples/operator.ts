// Set up a tenant as the operator: a sandbox with quotas and an API key for
// its backend; then pause one of its end users and lift the pause again.
//
//   INTERLOCK_OPERATOR_KEY=ilk_op_... node operator.js acme
//
// INTERLOCK_ADDRESS (default 127.0.0.1:7600) says where the daemon listens.
import { AlreadyExists, Interlock, InterlockError } from "@interlock/client";

const admin = new Interlock(); // INTERLOCK_ADDRESS, INTERLOCK_OPERATOR_KEY
const name = process.argv[2] ?? "acme";

try {
  const sandbox = await admin.sandboxes.create(name, { maxConcurrentRuns: 10 });
  const created = await admin.sandboxes.createApiKey(sandbox.sandboxId, "backend");
  // The only copy of the secret: hand it to the tenant's backend now.
  console.log(`${sandbox.sandboxId} INTERLOCK_API_KEY=${created.secret}`);

  // A kill switch: the end user's new runs are refused, runs in flight stop.
  const target = { scope: "endUser", sandboxId: sandbox.sandboxId, target: "u-abuse" } as const;
  await admin.compute.pause({ ...target, reason: "abuse review" });
  for (const pause of await admin.compute.pauses()) console.log(`paused ${pause.target}: ${pause.reason}`);
  await admin.compute.unpause(target);

  for await (const each of admin.sandboxes.listAll()) console.log(`${each.sandboxId} ${each.name}`);
} catch (err) {
  if (err instanceof AlreadyExists) {
    console.error(`a sandbox named ${name} exists already`);
  } else if (err instanceof InterlockError) {
    console.error(`error: ${err.message}`); // e.g. "UNAUTHENTICATED: unknown operator key"
  } else {
    throw err;
  }
  process.exitCode = 1;
} finally {
  admin.close();
}

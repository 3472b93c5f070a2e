// Connect GitHub for an end user: print the URL to send them to, wait until
// they have approved, print the account.
//
//   INTERLOCK_API_KEY=ilk_... node dist/examples/connect_github.js u-123
//
// INTERLOCK_ADDRESS (default 127.0.0.1:7600) says where the daemon listens;
// the daemon must configure the github app and its public URL.
import { ConnectFailed, Interlock, InterlockError } from "@interlock/client";

const router = new Interlock({
  baseUrl: `http://${process.env.INTERLOCK_ADDRESS ?? "127.0.0.1:7600"}`,
  apiKey: process.env.INTERLOCK_API_KEY,
});
const endUserId = process.argv[2] ?? "u-123";

try {
  const started = await router.integrations.connect({ app: "github", endUserId });
  console.log(`Open ${started.authorizeUrl}`);
  const github = await router.integrations.waitConnected(started.flowId, { timeoutMs: 10 * 60_000 });
  console.log(`connected ${github.account} (${github.integrationId})`);
  // From now on, every run of this end user is offered GitHub's tools.
  const apps = (await router.integrations.list({ endUserId })).map((i) => i.app);
  console.log(`${endUserId} has ${apps.join(", ")}`);
} catch (err) {
  if (err instanceof ConnectFailed) {
    console.error(`not connected: ${err.state}: ${err.explanation}`); // e.g. "failed: ... access_denied"
  } else if (err instanceof InterlockError) {
    console.error(`error: ${err.message}`); // e.g. "INVALID_ARGUMENT: app: unknown app 'github'; ..."
  } else {
    throw err;
  }
  process.exitCode = 1;
} finally {
  router.close();
}

/**
 * Hostile clients against tlsd (issue 8): one spawned tlsd (client-named targets inside TLS,
 * --allow '*'), our pongd behind it, a test
 * certificate. TLS-level abuse over plain TCP (garbage, plain HTTP, truncated and
 * slowloris ClientHellos, silence), then the byte-stream catalogue inside TLS, batch after
 * batch, with the checks of hostile-tcpd.test.ts after each one. Churn:
 * hostile-tlsd-churn.test.ts.
 */
import test from 'ava';
import { afterBatch } from './helpers/hostile-byte.js';
import {
  concurrentBatch,
  deadlineBatch,
  framesBatch,
  namesBatch,
  serviceKilledBatch,
  tlsBatch,
} from './helpers/hostile-catalogue.js';
import { CONCURRENT, HANDSHAKE_TIMEOUT, startEnv, SUITE_TIMEOUT } from './helpers/hostile-env.js';

test.serial("tlsd, client-named targets (--allow '*'): TLS abuse, the catalogue inside TLS; back to the baseline after each batch", async (t) => {
  t.timeout(SUITE_TIMEOUT);
  const env = await startEnv(t, 'tlsd', ['--allow', '*'], 'pong');
  await afterBatch(t, env, 'TLS', await tlsBatch(t, env.transport.port, HANDSHAKE_TIMEOUT));
  await afterBatch(t, env, 'names', await namesBatch(t, env.transport));
  await afterBatch(t, env, 'frames', await framesBatch(t, env.transport, 'pong'));
  await afterBatch(t, env, 'deadlines', await deadlineBatch(t, env.transport, HANDSHAKE_TIMEOUT));
  const concurrent = await concurrentBatch(t, env.transport, 'pong', CONCURRENT);
  t.log(`${concurrent.served} of ${CONCURRENT} concurrent TLS clients served (the others refused with a code)`);
  await afterBatch(t, env, 'concurrent handshakes', concurrent.hostile);
  await afterBatch(t, env, 'service killed', await serviceKilledBatch(t, env));
});

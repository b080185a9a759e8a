/**
 * Hostile clients against tcpd with a fixed target (issue 8): one spawned tcpd
 * (--service pong), our pongd behind it, the frame-level catalogue, concurrent clients,
 * a killed service and churn, with the checks of hostile-tcpd.test.ts after each batch.
 */
import test from 'ava';
import { afterBatch } from './helpers/hostile-byte.js';
import { churnBatch, concurrentBatch, framesBatch, serviceKilledBatch } from './helpers/hostile-catalogue.js';
import { CHURN, CONCURRENT, startEnv, SUITE_TIMEOUT } from './helpers/hostile-env.js';

test.serial('tcpd, fixed target (--service pong): frames, concurrent clients, a killed service, churn', async (t) => {
  t.timeout(SUITE_TIMEOUT);
  const env = await startEnv(t, 'tcpd', ['--service', 'pong'], null, 'both');
  await afterBatch(t, env, 'frames', await framesBatch(t, env.transport, null));
  const concurrent = await concurrentBatch(t, env.transport, null, CONCURRENT);
  t.log(`${concurrent.served} of ${CONCURRENT} concurrent clients served (the others ended with a code)`);
  await afterBatch(t, env, 'concurrent clients', concurrent.hostile);
  await afterBatch(t, env, 'service killed', await serviceKilledBatch(t, env));
  // Every timing, closing right at connect (before the service connect completes) included.
  await churnBatch(t, env, CHURN);
});


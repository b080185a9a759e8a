/**
 * Hostile clients against tcpd with client-named targets (issue 8): one spawned tcpd
 * (--allow '*'), our pongd behind it, and the catalogue of test/helpers/hostile-catalogue.ts
 * thrown at it batch after batch. After each batch: every hostile connection has its
 * refusal/teardown line with its code, a fresh client gets a verified echo, and tcpd's
 * descriptors and collected RSS are back to the baseline. The fixed target (--service):
 * hostile-tcpd-fixed.test.ts. HOSTILE_CHURN=N sets the churn cycles (default 5,000).
 */
import test from 'ava';
import { afterBatch, open } from './helpers/hostile-byte.js';
import { churnBatch, concurrentBatch, deadlineBatch, framesBatch, namesBatch, serviceKilledBatch } from './helpers/hostile-catalogue.js';
import { CHURN, CONCURRENT, HANDSHAKE_TIMEOUT, startEnv, SUITE_TIMEOUT } from './helpers/hostile-env.js';
import { ErrorCode } from '../src/errors.js';

test.serial("tcpd, client-named targets (--allow '*'): the hostile catalogue, back to the baseline after each batch", async (t) => {
  t.timeout(SUITE_TIMEOUT);
  const env = await startEnv(t, 'tcpd', ['--allow', '*'], 'pong', 'both');
  await afterBatch(t, env, 'names', await namesBatch(t, env.transport));
  await afterBatch(t, env, 'frames', await framesBatch(t, env.transport, 'pong'));
  await afterBatch(t, env, 'deadlines', await deadlineBatch(t, env.transport, HANDSHAKE_TIMEOUT));
  const concurrent = await concurrentBatch(t, env.transport, 'pong', CONCURRENT);
  t.log(`${concurrent.served} of ${CONCURRENT} concurrent clients served (the others refused with a code)`);
  await afterBatch(t, env, 'concurrent handshakes', concurrent.hostile);
  await afterBatch(t, env, 'service killed', await serviceKilledBatch(t, env));
  await churnBatch(t, env, CHURN);
});

test.serial('tcpd refuses a name outside its allow-list with IPC_ERR_SERVICE_NOT_ALLOWED and stays at its baseline', async (t) => {
  const env = await startEnv(t, 'tcpd', ['--allow', 'pong'], 'pong', 'none');
  const conn = await open(t, env.transport);
  await conn.write(Buffer.from('other'));
  await conn.expectEnd();
  await afterBatch(t, env, 'not allowed', [{ what: 'a name outside the allow-list', peer: conn.peer, code: ErrorCode.SERVICE_NOT_ALLOWED, msgs: ['connection refused'] }]);
});

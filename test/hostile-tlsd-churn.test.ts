/**
 * Connection churn against tlsd (issue 8): CHURN connect/close cycles (default 5,000;
 * HOSTILE_CHURN=50000 for a soak), 50 in flight, every timing in turn: close right at
 * TCP connect (before the TLS handshake), after the `ok` and an echo, mid-handshake
 * (right after the ClientHello). The baseline is taken after a warm-up churn (RSS
 * high-water, hostile-env.ts). Then the checks of hostile-tcpd.test.ts.
 */
import test from 'ava';
import { churnBatch } from './helpers/hostile-catalogue.js';
import { CHURN, startEnv, SUITE_TIMEOUT } from './helpers/hostile-env.js';

test.serial("tlsd, client-named targets: churn at every timing leaves it at its baseline", async (t) => {
  t.timeout(SUITE_TIMEOUT);
  const env = await startEnv(t, 'tlsd', ['--allow', '*'], 'pong', 'churn');
  await churnBatch(t, env, CHURN);
});

test.serial('tlsd, fixed target: churn at every timing leaves it at its baseline', async (t) => {
  t.timeout(SUITE_TIMEOUT);
  const env = await startEnv(t, 'tlsd', ['--service', 'pong'], null, 'churn');
  await churnBatch(t, env, CHURN, ['at-connect', 'after-echo', 'mid-handshake']);
});

/**
 * tcpd and tlsd under the hostile-client suite (test/hostile-*.test.ts): pongd, the
 * gateway spawned with --expose-gc, and the baseline the batches are compared with.
 */
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { spawnCli, startPongd, START_TIMEOUT } from './daemon.js';
import { baselineOf, HOSTILE_NODE_ARGS } from './hostile.js';
import { churn, churnCount, markBatch, verifiedEcho, type Transport } from './hostile-byte.js';
import { concurrentBatch, type ServedEnv } from './hostile-catalogue.js';
import { tempDir } from './rundir.js';
import { makeMaterial, type Material } from './tls-certs.js';

/** The gateways' --handshake-timeout in the suite (silence and slowloris wait for it). */
export const HANDSHAKE_TIMEOUT = 2000;
/** Churn cycles per target mode (HOSTILE_CHURN for a soak). */
export const CHURN = churnCount(5000);
/** A test's time limit: its batches, plus 10 ms per churn cycle beyond the default (soaks). */
export const SUITE_TIMEOUT = 150_000 + Math.max(0, CHURN - 5000) * 10;

/** Clients of the concurrent-handshake batch. */
export const CONCURRENT = 2000;

/**
 * Rounds of the concurrent batch before the baseline (see {@link startEnv}): measured on
 * tcpd, from a cold start 2,000 concurrent clients raise the collected RSS by 30-40 MiB
 * (heapUsed stays flat: V8's young generation grows and the allocator keeps its pages),
 * a second round by up to ~12 MiB more, later rounds by nothing.
 */
export const WARM_ROUNDS = 2;

/**
 * Churn cycles before a churn batch's baseline: from a cold start churn (50 in flight)
 * raises the collected RSS by 30-45 MiB (same cause; heapUsed flat), and measured on
 * tlsd it is flat from about 4,000 cycles on.
 */
export const WARM_CHURN = 4000;

export interface GatewayEnv extends ServedEnv {
  /** TLS material, for tlsd. */
  material?: Material;
}

/**
 * pongd, then `gateway` (tcpd or tlsd with a test certificate) with `args`, and the
 * baseline. It is taken after a verified echo and a warm-up (`warm`): {@link WARM_ROUNDS}
 * rounds of the concurrent batch, {@link WARM_CHURN} churn cycles, or both, so that it
 * includes the memory high-water of that load; a leak still shows as growth over it.
 */
export async function startEnv(
  t: ExecutionContext,
  gateway: 'tcpd' | 'tlsd',
  args: readonly string[],
  service: string | null,
  warm: 'concurrent' | 'churn' | 'both' | 'none' = 'concurrent',
): Promise<GatewayEnv> {
  const dir = await tempDir(t, 'hostile-');
  const rundir = path.join(dir, 'run');
  const pongd = (await startPongd(t, rundir)).daemon;
  const material = gateway === 'tlsd' ? makeMaterial(dir) : undefined;
  const daemon = spawnCli(
    t,
    gateway,
    ['--listen', '127.0.0.1:0', '--no-outbound', '--handshake-timeout', String(HANDSHAKE_TIMEOUT), ...(material?.args ?? []), ...args],
    { nodeArgs: HOSTILE_NODE_ARGS, env: { RUNDIR: rundir } },
  );
  const line = await daemon.listening((l) => typeof l['port'] === 'number', START_TIMEOUT);
  const transport: Transport = { port: line['port'] as number, ...(material ? { tls: { ca: material.ca.cert, servername: 'localhost' } } : {}) };
  await verifiedEcho(t, daemon, transport, service);
  for (let round = 0; (warm === 'concurrent' || warm === 'both') && round < WARM_ROUNDS; round++) {
    await concurrentBatch(t, transport, service, CONCURRENT);
    await verifiedEcho(t, daemon, transport, service);
  }
  // 'both', for a suite with concurrent and churn batches: churn's high-water goes into the
  // baseline too (with the native data plane, the concurrent rounds left V8's heap 6.5 MB
  // below what churn then took: tcpd +14.1 MiB over a concurrent-only baseline).
  if (warm === 'churn' || warm === 'both') {
    await churn(transport, service, WARM_CHURN, 50, ['after-echo']);
    await verifiedEcho(t, daemon, transport, service);
  }
  const env: GatewayEnv = { rundir, pongd, daemon, transport, service, baseline: await baselineOf(daemon), mark: 0, started: 0, ...(material ? { material } : {}) };
  markBatch(env);
  return env;
}

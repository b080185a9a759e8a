/**
 * "Back to baseline" for the hostile-client suites: a daemon's open descriptors and its
 * memory after a forced GC, before and after a batch of abuse. Daemons are spawned with
 * `nodeArgs: ['--expose-gc']` (HOSTILE_NODE_ARGS); SIGUSR2 then makes them collect and log
 * a `memory` line (gateways/cli/common.ts).
 */
import { readdirSync } from 'node:fs';
import type { ExecutionContext } from 'ava';
import type { Daemon } from './daemon.js';
import { until } from './wait.js';

/** Node arguments for a daemon whose memory a test compares. */
export const HOSTILE_NODE_ARGS = ['--expose-gc'] as const;

/** RSS growth tolerated after a batch, once collected (the bound). */
export const RSS_SLACK = 10 * 1024 * 1024;

/** Open descriptors of a process (Linux /proc). */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Forces a GC in the daemon and resolves its RSS (bytes) as it logged it. */
export async function collectedRss(daemon: Daemon, timeout = 10_000): Promise<number> {
  const before = daemon.log.lines.length;
  daemon.kill('SIGUSR2');
  const line = await daemon.log.waitFor(
    (l) => l.msg === 'memory' && daemon.log.lines.indexOf(l) >= before,
    timeout,
    `${daemon.name} 'memory' line`,
  );
  if (line['gc'] !== true) throw new Error(`${daemon.name} was not started with --expose-gc`);
  return line['rss'] as number;
}

/** A daemon's descriptors and collected RSS at one moment. */
export interface Baseline {
  fds: number;
  rss: number;
}

export async function baselineOf(daemon: Daemon): Promise<Baseline> {
  return { fds: openFds(daemon.pid), rss: await collectedRss(daemon) };
}

/**
 * Asserts the daemon is back to `baseline`: the descriptor count exactly as before
 * (waiting up to `timeout` ms for closes in flight) and RSS within {@link RSS_SLACK}.
 */
export async function assertBackToBaseline(t: ExecutionContext, daemon: Daemon, baseline: Baseline, timeout = 15_000): Promise<void> {
  await until(() => openFds(daemon.pid) === baseline.fds, 'descriptors back to the baseline', timeout).catch(() => undefined);
  t.is(openFds(daemon.pid), baseline.fds, `${daemon.name}: open descriptors back to the baseline`);
  const rss = await collectedRss(daemon);
  t.true(rss - baseline.rss <= RSS_SLACK, `${daemon.name}: RSS ${rss} within ${RSS_SLACK} of the baseline ${baseline.rss}`);
}

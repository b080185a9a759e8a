/**
 * "Back to baseline" for the hostile-client suites: a daemon's open descriptors and its
 * memory after a forced GC, before and after a batch of abuse. Daemons are spawned with
 * `nodeArgs: ['--expose-gc']` (HOSTILE_NODE_ARGS); SIGUSR2 then makes them collect and log
 * a `memory` line (gateways/cli/common.ts). The RSS compared is read from /proc once it
 * settled after that GC ({@link settledRss}), less V8's free heap ({@link retainedRss}):
 * either alone swung by more than the slack on tcpd.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { ExecutionContext } from 'ava';
import type { Daemon } from './daemon.js';
import { pause } from './raw-client.js';
import { until } from './wait.js';

/** Node arguments for a daemon whose memory a test compares. */
export const HOSTILE_NODE_ARGS = ['--expose-gc'] as const;

/** RSS growth tolerated after a batch, once collected (the bound). */
export const RSS_SLACK = 10 * 1024 * 1024;

/** Open descriptors of a process (Linux /proc). */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** A daemon's memory after a forced GC (bytes). */
export interface CollectedMemory {
  /** RSS once settled: the lowest of the logged value and {@link settledRss}'s reads. */
  rss: number;
  /** RSS as the daemon logged it, right after the GC. */
  logged: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
}

/** Forces a GC in the daemon and resolves its RSS (bytes) once settled. */
export async function collectedRss(daemon: Daemon, timeout = 10_000): Promise<number> {
  return (await collectedMemory(daemon, timeout)).rss;
}

/** Forces a GC in the daemon and resolves its memory (its `memory` line, RSS settled). */
export async function collectedMemory(daemon: Daemon, timeout = 10_000): Promise<CollectedMemory> {
  const before = daemon.log.lines.length;
  daemon.kill('SIGUSR2');
  const line = await daemon.log.waitFor(
    (l) => l.msg === 'memory' && daemon.log.lines.indexOf(l) >= before,
    timeout,
    `${daemon.name} 'memory' line`,
  );
  if (line['gc'] !== true) throw new Error(`${daemon.name} was not started with --expose-gc`);
  const n = (key: string) => (typeof line[key] === 'number' ? (line[key] as number) : NaN);
  const logged = n('rss');
  return { rss: Math.min(logged, await settledRss(daemon.pid)), logged, heapUsed: n('heapUsed'), heapTotal: n('heapTotal'), external: n('external') };
}

/** A process's VmRSS (bytes, Linux /proc). */
export function vmRss(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for process ${pid}`);
  return Number(kb) * 1024;
}

/**
 * The RSS a forced GC leaves, once what it freed is given back. V8 unmaps the pages it
 * freed on background threads after gc() returns, so the `memory` line's rss can still
 * count them: measured on tcpd after 2,000 concurrent handshakes, VmRSS fell by up to
 * 5.8 MiB within 200 ms of the line (none with --single-threaded-gc), more on a loaded
 * machine. Reads VmRSS every 50 ms until three reads in a row agree within 256 KiB
 * (bounded: 40 reads), and resolves the lowest read.
 */
export async function settledRss(pid: number): Promise<number> {
  let lowest = vmRss(pid);
  let previous = lowest;
  for (let read = 1, same = 1; read < 40 && same < 3; read++) {
    await pause(50);
    const rss = vmRss(pid);
    same = Math.abs(rss - previous) <= 256 * 1024 ? same + 1 : 1;
    previous = rss;
    lowest = Math.min(lowest, rss);
  }
  return lowest;
}

/** A daemon's descriptors and collected RSS at one moment. */
export interface Baseline {
  fds: number;
  /** Settled (see {@link settledRss}). */
  rss: number;
  /** As the daemon logged it (for the test's log). */
  logged?: number;
  /** V8's heap committed but free after the GC (see {@link retainedRss}). */
  heapFree?: number;
}

export async function baselineOf(daemon: Daemon): Promise<Baseline> {
  const fds = openFds(daemon.pid);
  const memory = await collectedMemory(daemon);
  return { fds, rss: memory.rss, logged: memory.logged, heapFree: heapFree(memory) };
}

function heapFree(memory: CollectedMemory): number {
  const free = memory.heapTotal - memory.heapUsed;
  return Number.isFinite(free) && free > 0 ? free : 0;
}

/**
 * What the daemon holds: settled RSS without V8's committed but free heap. After a forced
 * GC, heapUsed (the live objects) is back to its level, but V8 keeps the heap it grew to
 * for the last burst, and how far it grew depends on how the batch overlapped on a loaded
 * machine: measured on tcpd, heapTotal 42-52.5 MB after the same batches with heapUsed at
 * 7.4-8.1 MB, which alone took a 50,000-cycle churn 11.4 MiB over a settled baseline. A
 * leak of JS objects still counts (heapUsed), as do buffers and native allocations (RSS
 * outside V8's heap).
 */
export function retainedRss(rss: number, free: number): number {
  return rss - free;
}

/**
 * Asserts the daemon is back to `baseline`: the descriptor count exactly as before
 * (waiting up to `timeout` ms for closes in flight) and the memory it holds
 * ({@link retainedRss}) within {@link RSS_SLACK}.
 */
export async function assertBackToBaseline(t: ExecutionContext, daemon: Daemon, baseline: Baseline, timeout = 15_000): Promise<void> {
  await until(() => openFds(daemon.pid) === baseline.fds, 'descriptors back to the baseline', timeout).catch(() => undefined);
  t.is(openFds(daemon.pid), baseline.fds, `${daemon.name}: open descriptors back to the baseline`);
  const memory = await collectedMemory(daemon);
  const rss = memory.rss;
  const held = retainedRss(rss, heapFree(memory));
  const heldBefore = retainedRss(baseline.rss, baseline.heapFree ?? 0);
  const signed = (n: number) => `${n >= 0 ? '+' : ''}${mib(n)}`;
  // In the test's log: how near the bound a run came, and which part moved.
  t.log(
    `${daemon.name}: held ${mib(held)} MiB, baseline ${mib(heldBefore)} MiB (${signed(held - heldBefore)}); ` +
      `RSS ${mib(rss)} MiB (logged ${mib(memory.logged)}), baseline ${mib(baseline.rss)} MiB (logged ${mib(baseline.logged ?? NaN)}) (${signed(rss - baseline.rss)}); ` +
      `V8 heap ${mib(memory.heapTotal)} MiB (used ${mib(memory.heapUsed)}), external ${mib(memory.external)} MiB`,
  );
  t.true(
    held - heldBefore <= RSS_SLACK,
    `${daemon.name}: RSS held (without V8's free heap) ${held} within ${RSS_SLACK} of the baseline ${heldBefore} (RSS ${rss}, baseline ${baseline.rss})`,
  );
}

function mib(bytes: number): string {
  return (bytes / 1048576).toFixed(1);
}

/**
 * Processes for the wsd tests: the compiled wsd and pongd spawned with a private run
 * directory, their JSON log lines, their memory (VmRSS), and a small limit on how many
 * tests run daemons at once (each test spawns its own; the machine may have two CPUs).
 * Every child is SIGKILLed at teardown if still running.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { ExecutionContext } from 'ava';
import { killAtTeardown, LoggedProcess, spawnChild, type Exit } from './daemon.js';
import type { LogLine } from './log-sink.js';
import { tempDir as sharedTempDir } from './rundir.js';

/** Upper bound for a daemon to start and log `listening` (node startup on a loaded machine). */
export const START_TIMEOUT = 20_000;
/** Upper bound for anything a test waits for once its daemons run. */
export const WAIT = 10_000;

/** The repository root (package.json, dist/, web/). */
export { REPO_ROOT as ROOT } from './paths.js';

/** One JSON log line (`raw` holds a line that was not JSON). */
export type Line = LogLine;

/** A spawned node script whose stdout is JSON log lines (waits named as the wsd tests name them). */
export class Proc extends LoggedProcess {
  get lines(): Line[] {
    return this.log.lines;
  }

  override kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    super.kill(signal);
  }

  /** Lines matching `predicate` so far. */
  filter(predicate: (line: Line) => boolean): Line[] {
    return this.log.filter(predicate);
  }

  /** The first line matching `predicate`, now or later; rejects after `timeout` ms or at exit. */
  waitFor(predicate: (line: Line) => boolean, what: string, timeout = WAIT): Promise<Line> {
    return this.log.waitFor(predicate, timeout, `${this.name}: ${what}`);
  }

  /** Resolves the exit; rejects if still running after `timeout` ms. */
  override waitExit(timeout = WAIT): Promise<Exit> {
    return super.waitExit(timeout);
  }

  /** Everything logged, for failure messages. */
  dump(): string {
    return `--- ${this.name} stdout\n${this.log.dump()}\n--- ${this.name} stderr\n${this.stderr}`;
  }
}

/** Spawns `node dist/gateways/cli/<cli>.js ...args` with `env` added; SIGKILLed at teardown. */
export function spawnCli(
  t: ExecutionContext,
  cli: 'wsd' | 'pongd',
  args: readonly string[],
  env: Record<string, string> = {},
): Proc {
  return killAtTeardown(t, new Proc(cli, spawnChild(cli, args, { env })), WAIT);
}

/** A private directory (short path: Unix socket paths fit in 108 bytes), removed at teardown. */
export function tempDir(t: ExecutionContext): Promise<string> {
  return sharedTempDir(t, 'wsdt-');
}

/** Starts pongd serving `service` in `rundir` (debug level: connections are logged). */
export async function startPongd(t: ExecutionContext, rundir: string, service = 'pong'): Promise<Proc> {
  const proc = spawnCli(t, 'pongd', ['--service', service, '--log-level', 'debug'], { RUNDIR: rundir });
  await proc.waitFor((l) => l.msg === 'listening', `pongd ${service} 'listening'`, START_TIMEOUT);
  return proc;
}

/** A running wsd and the port it logged. */
export interface Wsd {
  proc: Proc;
  port: number;
}

/**
 * Starts wsd on an ephemeral loopback port with `args` (after `--listen 127.0.0.1:0
 * --no-outbound`) and RUNDIR `rundir`; resolves once it logged `listening`.
 */
export async function startWsd(t: ExecutionContext, rundir: string, args: readonly string[]): Promise<Wsd> {
  const proc = spawnCli(t, 'wsd', ['--listen', '127.0.0.1:0', '--no-outbound', ...args], { RUNDIR: rundir });
  const line = await proc.waitFor(
    (l) => l.msg === 'listening' && typeof l['port'] === 'number',
    "wsd 'listening'",
    START_TIMEOUT,
  );
  return { proc, port: line['port'] as number };
}

/** Resident memory of a process, bytes (VmRSS from /proc/PID/status). */
export function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match?.[1]) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) * 1024;
}

/**
 * Limits how many tests run daemons at once: `await slot(t)` waits for a free slot,
 * released when the test's teardowns ran (registered first, so it runs last).
 */
const MAX_SLOTS = Math.max(2, Math.min(4, os.availableParallelism()));
let used = 0;
const queue: Array<() => void> = [];

export async function slot(t: ExecutionContext): Promise<void> {
  if (used >= MAX_SLOTS) await new Promise<void>((resolve) => queue.push(resolve));
  else used++;
  t.teardown(() => {
    const next = queue.shift();
    if (next) next();
    else used--;
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Processes for the wsd tests: the compiled wsd and pongd spawned with a private run
 * directory, their JSON log lines, their memory (VmRSS), and a small limit on how many
 * tests run daemons at once (each test spawns its own; the machine may have two CPUs).
 * Every child is SIGKILLed at teardown if still running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';

/** Upper bound for a daemon to start and log `listening` (node startup on a loaded machine). */
export const START_TIMEOUT = 20_000;
/** Upper bound for anything a test waits for once its daemons run. */
export const WAIT = 10_000;

function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'gateways'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error('cannot find the repository root from test/helpers');
}

/** The repository root (package.json, dist/, web/). */
export const ROOT = findRoot();

/** One JSON log line (`raw` holds a line that was not JSON). */
export interface Line {
  msg?: string;
  raw?: string;
  [key: string]: unknown;
}

/** A spawned node script whose stdout is JSON log lines. */
export class Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly lines: Line[] = [];
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private partial = '';
  private readonly waiters = new Set<() => void>();
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(name: string, child: ChildProcess) {
    this.name = name;
    this.child = child;
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => this.feed(text));
    child.stderr!.on('data', (text: string) => {
      this.stderr += text;
    });
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.feed('\n');
        this.exit = { code, signal };
        this.wake();
        resolve(this.exit);
      });
      child.once('error', (err) => {
        this.stderr += `spawn error: ${err.message}`;
        this.exit = { code: null, signal: null };
        this.wake();
        resolve(this.exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.exit === null;
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.running) this.child.kill(signal);
  }

  /** Lines matching `predicate` so far. */
  filter(predicate: (line: Line) => boolean): Line[] {
    return this.lines.filter(predicate);
  }

  /** The first line matching `predicate`, now or later; rejects after `timeout` ms or at exit. */
  waitFor(predicate: (line: Line) => boolean, what: string, timeout = WAIT): Promise<Line> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.lines.find(predicate);
        if (found) {
          done();
          resolve(found);
        } else if (this.exit) {
          done();
          reject(new Error(`${this.name} exited (${JSON.stringify(this.exit)}) before logging ${what}\n${this.dump()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name} did not log ${what} within ${timeout} ms\n${this.dump()}`));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Resolves the exit; rejects if still running after `timeout` ms. */
  async waitExit(timeout = WAIT): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} still running after ${timeout} ms\n${this.dump()}`)), timeout);
    });
    try {
      return await Promise.race([this.exited, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Everything logged, for failure messages. */
  dump(): string {
    const lines = this.lines.map((l) => JSON.stringify(l)).join('\n');
    return `--- ${this.name} stdout\n${lines}\n--- ${this.name} stderr\n${this.stderr}`;
  }

  private feed(text: string): void {
    this.partial += text;
    let newline = this.partial.indexOf('\n');
    while (newline !== -1) {
      const line = this.partial.slice(0, newline);
      this.partial = this.partial.slice(newline + 1);
      if (line.trim() !== '') this.lines.push(parse(line));
      newline = this.partial.indexOf('\n');
    }
    this.wake();
  }

  private wake(): void {
    for (const check of [...this.waiters]) check();
  }
}

function parse(line: string): Line {
  try {
    const value: unknown = JSON.parse(line);
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as Line;
  } catch {
    // kept raw
  }
  return { raw: line };
}

/** Variables never inherited from the developer's shell. */
const ISOLATED_ENV = ['RUNDIR', 'ADDRESS', 'IPC_SERVICE_NAME', 'IPC_NETWORK', 'LOG_LEVEL'];

/** Spawns `node dist/gateways/cli/<cli>.js ...args` with `env` added; SIGKILLed at teardown. */
export function spawnCli(
  t: ExecutionContext,
  cli: 'wsd' | 'pongd',
  args: readonly string[],
  env: Record<string, string> = {},
): Proc {
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const key of ISOLATED_ENV) delete childEnv[key];
  Object.assign(childEnv, env);
  const script = path.join(ROOT, 'dist', 'gateways', 'cli', `${cli}.js`);
  const child = spawn(process.execPath, [script, ...args], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = new Proc(cli, child);
  t.teardown(async () => {
    if (!proc.running) return;
    proc.kill('SIGKILL');
    await proc.waitExit().catch(() => undefined);
  });
  return proc;
}

/** A private directory (short path: Unix socket paths fit in 108 bytes), removed at teardown. */
export async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wsdt-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
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

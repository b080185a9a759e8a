/**
 * tlsd's tests' own process helpers (kept apart from daemon.ts, which another suite
 * owns): spawn a compiled CLI from dist/, parse its JSON log lines as they arrive, wait
 * for lines and for the exit with upper bounds, and SIGKILL whatever still runs at
 * teardown.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';

/** Upper bound for a daemon to start (node startup on a loaded machine included). */
export const START = 20_000;
/** Upper bound of any other wait. */
export const WAIT = 10_000;

function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'gateways'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error('cannot find the repository root from test/helpers');
}

const ROOT = repoRoot();

/** `dist/gateways/cli/<name>.js`, built by `npm run build`. */
export function cli(name: 'tlsd' | 'pongd'): string {
  return path.join(ROOT, 'dist', 'gateways', 'cli', `${name}.js`);
}

/** One JSON log line (`raw` for a line that is not JSON). */
export interface Line {
  level?: number;
  msg?: string;
  raw?: string;
  [key: string]: unknown;
}

/** A child process whose stdout is JSON log lines. */
export class Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly lines: Line[] = [];
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private partial = '';
  private readonly waiters = new Set<() => void>();

  constructor(name: string, child: ChildProcess) {
    this.name = name;
    this.child = child;
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => {
      this.partial += text;
      for (let nl = this.partial.indexOf('\n'); nl !== -1; nl = this.partial.indexOf('\n')) {
        const line = this.partial.slice(0, nl);
        this.partial = this.partial.slice(nl + 1);
        if (line.trim() !== '') this.lines.push(parse(line));
      }
      this.wake();
    });
    child.stderr!.on('data', (text: string) => {
      this.stderr += text;
    });
    child.once('error', (err) => {
      this.stderr += `spawn error: ${err.message}`;
      this.exit ??= { code: null, signal: null };
      this.wake();
    });
    // 'close', not 'exit': stdout is fully read by then.
    child.once('close', (code, signal) => {
      if (this.partial.trim() !== '') this.lines.push(parse(this.partial));
      this.exit = { code, signal };
      this.wake();
    });
  }

  get running(): boolean {
    return this.exit === null;
  }

  kill(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal);
  }

  /** Lines matching `predicate` so far. */
  filter(predicate: (line: Line) => boolean): Line[] {
    return this.lines.filter(predicate);
  }

  /** The first line matching `predicate` (already logged or to come); bounded by `timeout`. */
  async waitFor(predicate: (line: Line) => boolean, what: string, timeout = WAIT): Promise<Line> {
    const found = await this.waitForCount(predicate, 1, what, timeout);
    return found[0]!;
  }

  /** Resolves once `count` lines match; rejects after `timeout` or when the process exited first. */
  waitForCount(predicate: (line: Line) => boolean, count: number, what: string, timeout = WAIT): Promise<Line[]> {
    return this.until(
      () => {
        const found = this.lines.filter(predicate);
        return found.length >= count ? found : undefined;
      },
      `${count} x ${what}`,
      timeout,
    );
  }

  /** Resolves the exit; rejects if still running after `timeout`. */
  waitExit(timeout = WAIT): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.until(() => this.exit ?? undefined, 'exit', timeout, false);
  }

  /** What was logged, for failure messages. */
  dump(): string {
    return `${this.lines.map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${this.stderr.trim()}`;
  }

  private until<T>(probe: () => T | undefined, what: string, timeout: number, failOnExit = true): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const value = probe();
        if (value !== undefined) {
          done();
          resolve(value);
        } else if (failOnExit && this.exit !== null) {
          done();
          reject(new Error(`${this.name} exited (${JSON.stringify(this.exit)}) before ${what}; logged:\n${this.dump()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no ${what} within ${timeout} ms; logged:\n${this.dump()}`));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
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
    // kept raw below
  }
  return { raw: line };
}

/** Variables never inherited from the developer's shell. */
const ISOLATED = ['RUNDIR', 'ADDRESS', 'IPC_SERVICE_NAME', 'IPC_NETWORK', 'LOG_LEVEL'];

/** Spawns `node <script> ...args` with `RUNDIR=rundir`; SIGKILLed at teardown if still running. */
export function spawnNode(t: ExecutionContext, name: 'tlsd' | 'pongd', args: readonly string[], rundir: string): Proc {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const key of ISOLATED) delete env[key];
  env['RUNDIR'] = rundir;
  const proc = new Proc(name, spawn(process.execPath, [cli(name), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  t.teardown(async () => {
    if (!proc.running) return;
    proc.kill('SIGKILL');
    await proc.waitExit(WAIT).catch(() => undefined);
  });
  return proc;
}

/** Our pongd serving `pong` in `rundir`, once it logged `listening`. */
export async function startPongd(t: ExecutionContext, rundir: string): Promise<Proc> {
  const proc = spawnNode(t, 'pongd', ['--service', 'pong', '--log-level', 'debug'], rundir);
  await proc.waitFor((l) => l.msg === 'listening', 'pongd listening', START);
  return proc;
}

/** A running tlsd and the port of its TLS listener. */
export interface Tlsd {
  proc: Proc;
  port: number;
}

/** Spawns tlsd with `args` (`--listen 127.0.0.1:0` added) and waits for its TLS `listening` line. */
export async function startTlsd(t: ExecutionContext, rundir: string, args: readonly string[]): Promise<Tlsd> {
  const proc = spawnNode(t, 'tlsd', ['--listen', '127.0.0.1:0', ...args], rundir);
  const line = await proc.waitFor((l) => l.msg === 'listening' && l['transport'] === 'tls', 'tlsd listening', START);
  return { proc, port: line['port'] as number };
}

/**
 * At most `max` tasks at once: ava starts every test of a file together, and each test
 * here spawns two node processes.
 */
export function limiter(max: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  const queue: Array<() => void> = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (running >= max) await new Promise<void>((resolve) => queue.push(resolve));
    else running++;
    try {
      return await task();
    } finally {
      const next = queue.shift();
      if (next) next();
      else running--;
    }
  };
}

/**
 * Child processes of the benchmark: daemons (echod, anchors, gateways) started in their
 * own process group with stdout and stderr going to a log file, and bounded one-shot
 * commands (ipcbench, make). Everything started here is stopped by {@link Procs.stopAll},
 * and killed synchronously on process exit as a last resort, so no child outlives a run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** A long-running child whose output goes to `logFile`. */
export interface Daemon {
  name: string;
  pid: number;
  logFile: string;
  child: ChildProcess;
  /** Set once the process exited: how. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
}

/** What a bounded command left behind. */
export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when our own time limit killed it. */
  timedOut: boolean;
}

export interface DaemonOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /**
   * Reads the log so far and returns a value once the daemon is ready (for example its
   * port), or undefined to keep waiting.
   */
  ready: (log: string) => number | true | undefined | Promise<number | true | undefined>;
  /** How long to wait for `ready`, ms (default 10000). */
  readyTimeoutMs?: number;
}

export class Procs {
  private readonly live = new Set<ChildProcess>();
  private readonly logDir: string;
  /** Set by {@link close}: nothing new may start. */
  private closed = false;

  constructor(logDir: string) {
    this.logDir = logDir;
    fs.mkdirSync(logDir, { recursive: true });
    // Last resort (uncaught error, process.exit elsewhere): no child may outlive us.
    process.on('exit', () => this.killAllNow());
  }

  /**
   * Starts a daemon in its own process group (so its whole tree can be signalled) and
   * resolves once `ready` accepts its log; rejects (and kills it) when it exits first or
   * the time runs out.
   */
  async startDaemon(
    name: string,
    command: string,
    args: readonly string[],
    options: DaemonOptions,
  ): Promise<{ daemon: Daemon; value: number | true }> {
    this.checkOpen();
    // A restarted daemon (the idle workload restarts its target) gets a log of its own:
    // `ready` reads the whole log, and the old one's `listening` line has the old port.
    let logFile = path.join(this.logDir, `${name}.log`);
    for (let n = 2; fs.existsSync(logFile); n++) logFile = path.join(this.logDir, `${name}.${n}.log`);
    const fd = fs.openSync(logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(command, args, {
        cwd: options.cwd,
        env: { ...process.env, ...options.env },
        stdio: ['ignore', fd, fd],
        detached: true,
      });
    } finally {
      fs.closeSync(fd);
    }
    const daemon: Daemon = { name, pid: child.pid ?? -1, logFile, child, exit: null };
    let spawnError: Error | null = null;
    child.on('error', (err) => {
      spawnError = err;
    });
    this.track(child, (code, signal) => {
      daemon.exit = { code, signal };
    });
    const limit = performance.now() + (options.readyTimeoutMs ?? 10_000);
    for (;;) {
      if (spawnError) throw new Error(`${name}: cannot start ${command}: ${(spawnError as Error).message}`);
      const log = readText(logFile);
      const value = await options.ready(log);
      if (value !== undefined && daemon.exit === null) return { daemon, value };
      if (daemon.exit !== null) {
        throw new Error(`${name} exited (${describeExit(daemon.exit)}) before it was ready; log ${logFile}:\n${tail(log)}`);
      }
      if (performance.now() > limit) {
        await this.stop(child);
        throw new Error(`${name} not ready within ${options.readyTimeoutMs ?? 10_000} ms; log ${logFile}:\n${tail(log)}`);
      }
      await sleep(25);
    }
  }

  /** Runs a command to completion, killing it (SIGKILL) after `timeoutMs`. */
  run(command: string, args: readonly string[], timeoutMs: number, options: { cwd?: string } = {}): Promise<CommandResult> {
    this.checkOpen();
    return new Promise((resolve) => {
      const child = spawn(command, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
      child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      const timer = setTimeout(() => {
        timedOut = true;
        signalTree(child, 'SIGKILL');
      }, timeoutMs);
      child.on('error', (err) => {
        stderr += `\ncannot start ${command}: ${err.message}`;
      });
      this.track(child, (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr, timedOut });
      });
    });
  }

  /**
   * Starts a bounded client driven over stdin/stdout lines (the chain load client):
   * `onLine` gets each stdout line; `done` resolves when it ended, after at most
   * `timeoutMs` (then SIGKILL). Stopped with everything else on close/interrupt.
   */
  spawnClient(
    command: string,
    args: readonly string[],
    options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs: number; onLine: (line: string) => void },
  ): { child: ChildProcess; send: (line: string) => void; done: Promise<CommandResult> } {
    this.checkOpen();
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    let partial = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      stdout += s.length + stdout.length <= 4 << 20 ? s : '';
      partial += s;
      let nl: number;
      while ((nl = partial.indexOf('\n')) !== -1) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        options.onLine(line);
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.stdin!.on('error', () => {
      // the client exited first: its status tells
    });
    const timer = setTimeout(() => {
      timedOut = true;
      signalTree(child, 'SIGKILL');
    }, options.timeoutMs);
    const done = new Promise<CommandResult>((resolve) => {
      child.on('error', (err) => {
        stderr += `\ncannot start ${command}: ${err.message}`;
      });
      this.track(child, (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr, timedOut });
      });
    });
    const send = (line: string) => {
      if (child.stdin!.writable) child.stdin!.write(`${line}\n`);
    };
    return { child, send, done };
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the child is gone. */
  async stop(child: ChildProcess, graceMs = 3000): Promise<void> {
    if (!this.live.has(child)) return;
    const gone = new Promise<void>((resolve) => child.once('close', () => resolve()));
    signalTree(child, 'SIGTERM');
    const timer = setTimeout(() => signalTree(child, 'SIGKILL'), graceMs);
    await gone;
    clearTimeout(timer);
    // The group may still hold grandchildren.
    signalTree(child, 'SIGKILL');
  }

  /** Stops every child still running (daemons in reverse start order). */
  async stopAll(): Promise<void> {
    await Promise.all([...this.live].reverse().map((c) => this.stop(c)));
  }

  /** Stops everything and refuses to start anything more (interrupt, end of run). */
  async close(): Promise<void> {
    this.closed = true;
    await this.stopAll();
  }

  /** Number of children still running. */
  get running(): number {
    return this.live.size;
  }

  private checkOpen(): void {
    if (this.closed) throw new Error('interrupted: not starting anything more');
  }

  private killAllNow(): void {
    for (const child of this.live) signalTree(child, 'SIGKILL');
  }

  private track(child: ChildProcess, onExit: (code: number | null, signal: NodeJS.Signals | null) => void): void {
    if (child.pid === undefined) {
      // spawn failed: 'error' fires, then 'close'.
      child.once('close', (code, signal) => onExit(code, signal));
      return;
    }
    this.live.add(child);
    child.once('close', (code, signal) => {
      this.live.delete(child);
      onExit(code, signal);
    });
  }
}

/** Signals the child's process group (it leads one: detached), or the child alone. */
function signalTree(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** A free TCP port on 127.0.0.1 (bound and released: a tiny race, fine on loopback). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** True when something accepts TCP connections on 127.0.0.1:`port` (the probe closes at once). */
export function acceptsTcp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** The port from a JSON log line with `"msg":"listening"` and a numeric `port` (pino daemons). */
export function jsonListeningPort(log: string, transport?: string): number | undefined {
  for (const line of log.split('\n')) {
    if (!line.includes('"listening"')) continue;
    try {
      const entry = JSON.parse(line) as { msg?: unknown; port?: unknown; transport?: unknown };
      if (entry.msg !== 'listening' || typeof entry.port !== 'number') continue;
      if (transport !== undefined && entry.transport !== transport) continue;
      return entry.port;
    } catch {
      // not a JSON line
    }
  }
  return undefined;
}

export function describeExit(exit: { code: number | null; signal: NodeJS.Signals | null }): string {
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

export function tail(text: string, lines = 15): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

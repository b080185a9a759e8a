/**
 * Spawning the compiled CLIs (dist/) as child processes: their JSON log lines on stdout,
 * their stderr, their exit. Every child is SIGKILLed at teardown if still running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { ExecutionContext } from 'ava';
import { cliPath, type CliName } from './paths.js';
import { LogSink, type LogLine } from './log-sink.js';

/** How a child ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Upper bound for a daemon to start (node startup under a loaded test run included). */
export const START_TIMEOUT = 15_000;

/** Variables the tests set explicitly; never inherited from the developer's shell. */
const ISOLATED_ENV = ['RUNDIR', 'ADDRESS', 'IPC_SERVICE_NAME', 'IPC_NETWORK', 'LOG_LEVEL'];

export interface SpawnOptions {
  /** Added to the environment (undefined removes a variable). */
  env?: Record<string, string | undefined>;
  /** Run through `sh -c 'umask U; exec node ...'` to start under that umask. */
  umask?: string;
  /** Arguments for node itself, before the script (e.g. `--expose-gc`). */
  nodeArgs?: readonly string[];
}

/** A spawned node process whose stdout is JSON log lines. */
export class LoggedProcess {
  readonly name: string;
  readonly child: ChildProcess;
  /** Its stdout, parsed as JSON log lines. */
  readonly log = new LogSink();
  stdout = '';
  stderr = '';
  /** Set once the process exited. */
  exit: Exit | null = null;
  protected readonly exited: Promise<Exit>;

  constructor(name: string, child: ChildProcess) {
    this.name = name;
    this.child = child;
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => {
      this.stdout += text;
      this.log.write(text);
    });
    child.stderr!.on('data', (text: string) => {
      this.stderr += text;
    });
    this.exited = new Promise((resolve) => {
      // 'close' (not 'exit'): stdout and stderr are fully read by then.
      child.once('close', (code, signal) => {
        this.exit = { code, signal };
        this.log.finish(`${this.name} exited (code ${code}, signal ${signal}); stderr: ${this.stderr.trim()}`);
        resolve(this.exit);
      });
      child.once('error', (err) => {
        this.exit = { code: null, signal: null };
        this.stderr += `spawn error: ${err.message}`;
        this.log.finish(`${this.name} could not be spawned: ${err.message}`);
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

  /** Sends a signal (no-op once exited). */
  kill(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal);
  }

  /** Resolves the exit; rejects if the process is still running after `timeout` ms. */
  waitExit(timeout: number): Promise<Exit> {
    if (this.exit) return Promise.resolve(this.exit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`${this.name} still running after ${timeout} ms; logged:\n${this.log.dump()}`));
      }, timeout);
      void this.exited.then((exit) => {
        clearTimeout(timer);
        resolve(exit);
      });
    });
  }

}

/** A spawned CLI. */
export class Daemon extends LoggedProcess {
  /** The first `"msg":"listening"` line matching `predicate` (default: any). */
  listening(predicate: (line: LogLine) => boolean = () => true, timeout = START_TIMEOUT): Promise<LogLine> {
    return this.log.waitFor((l) => l.msg === 'listening' && predicate(l), timeout, `${this.name} 'listening' line`);
  }
}

/** The environment of a child: ours without the isolated variables, plus `extra` (undefined removes). */
export function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const key of ISOLATED_ENV) delete env[key];
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

/** Spawns `node dist/gateways/cli/<name>.js ...args` with stdout and stderr piped. */
export function spawnChild(name: CliName, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
  const env = childEnv(options.env);
  const script = [...(options.nodeArgs ?? []), cliPath(name)];
  return options.umask === undefined
    ? spawn(process.execPath, [...script, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn('/bin/sh', ['-c', `umask ${options.umask} && exec "$0" "$@"`, process.execPath, ...script, ...args], {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
}

/** SIGKILLs `proc` at the end of the test if it still runs. */
export function killAtTeardown<P extends LoggedProcess>(t: ExecutionContext, proc: P, timeout = 10_000): P {
  t.teardown(async () => {
    if (!proc.running) return;
    proc.kill('SIGKILL');
    await proc.waitExit(timeout).catch(() => undefined);
  });
  return proc;
}

/** Spawns `node dist/gateways/cli/<name>.js ...args`; killed at teardown. */
export function spawnCli(t: ExecutionContext, name: CliName, args: readonly string[], options: SpawnOptions = {}): Daemon {
  return killAtTeardown(t, new Daemon(name, spawnChild(name, args, options)));
}

/** Runs a CLI to completion; rejects if it runs longer than `timeout` ms. */
export async function runCli(
  t: ExecutionContext,
  name: CliName,
  args: readonly string[],
  options: SpawnOptions = {},
  timeout = START_TIMEOUT,
): Promise<Exit & { stdout: string; stderr: string; daemon: Daemon }> {
  const daemon = spawnCli(t, name, args, options);
  const exit = await daemon.waitExit(timeout);
  return { ...exit, stdout: daemon.stdout, stderr: daemon.stderr, daemon };
}

/** A running pongd and the socket path it logged. */
export interface Pongd {
  daemon: Daemon;
  path: string;
}

/**
 * Starts our pongd serving `service` in `rundir` (log level debug, so connections and
 * disconnections are logged) and waits for its `listening` line.
 */
export async function startPongd(
  t: ExecutionContext,
  rundir: string,
  service = 'pong',
  options: SpawnOptions = {},
): Promise<Pongd> {
  const daemon = spawnCli(t, 'pongd', ['--service', service, '--log-level', 'debug'], {
    ...options,
    env: { RUNDIR: rundir, ...options.env },
  });
  const line = await daemon.listening();
  return { daemon, path: String(line['path']) };
}

/** A running tcpd and the port of its first TCP listener. */
export interface Tcpd {
  daemon: Daemon;
  port: number;
}

/**
 * Starts our tcpd with `args` (default: client-named services, any valid name, on an
 * ephemeral loopback port) and waits for its TCP `listening` line.
 */
export async function startTcpd(
  t: ExecutionContext,
  rundir: string,
  args: readonly string[] = ['--listen', '127.0.0.1:0', '--allow', '*'],
  options: SpawnOptions = {},
): Promise<Tcpd> {
  const daemon = spawnCli(t, 'tcpd', args, { ...options, env: { RUNDIR: rundir, ...options.env } });
  const line = await daemon.listening((l) => typeof l['port'] === 'number');
  return { daemon, port: line['port'] as number };
}

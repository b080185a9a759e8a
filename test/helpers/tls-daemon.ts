/**
 * tlsd's tests' process helpers, on top of daemon.ts (LoggedProcess, spawnChild):
 * spawn a compiled CLI from dist/, parse its JSON log lines as they arrive, wait
 * for lines and for the exit with upper bounds, and SIGKILL whatever still runs at
 * teardown.
 */
import type { ExecutionContext } from 'ava';
import { killAtTeardown, LoggedProcess, spawnChild, type Exit } from './daemon.js';
import type { LogLine } from './log-sink.js';

/** Upper bound for a daemon to start (node startup on a loaded machine included). */
export const START = 20_000;
/** Upper bound of any other wait. */
export const WAIT = 10_000;

/** One JSON log line (`raw` for a line that is not JSON). */
export type Line = LogLine;

/** A child process whose stdout is JSON log lines (waits named as tlsd's tests name them). */
export class Proc extends LoggedProcess {
  get lines(): Line[] {
    return this.log.lines;
  }

  /** Lines matching `predicate` so far. */
  filter(predicate: (line: Line) => boolean): Line[] {
    return this.log.filter(predicate);
  }

  /** The first line matching `predicate` (already logged or to come); bounded by `timeout`. */
  waitFor(predicate: (line: Line) => boolean, what: string, timeout = WAIT): Promise<Line> {
    return this.log.waitFor(predicate, timeout, `${this.name}: ${what}`);
  }

  /** Resolves once `count` lines match; rejects after `timeout` or when the process exited first. */
  waitForCount(predicate: (line: Line) => boolean, count: number, what: string, timeout = WAIT): Promise<Line[]> {
    return this.log.waitForCount(predicate, count, timeout, `${this.name}: ${count} x ${what}`);
  }

  /** Resolves the exit; rejects if still running after `timeout`. */
  override waitExit(timeout = WAIT): Promise<Exit> {
    return super.waitExit(timeout);
  }

  /** What was logged, for failure messages. */
  dump(): string {
    return `${this.log.dump()}\nstderr: ${this.stderr.trim()}`;
  }
}

/** Spawns `node <script> ...args` with `RUNDIR=rundir`; SIGKILLed at teardown if still running. */
export function spawnNode(t: ExecutionContext, name: 'tlsd' | 'pongd', args: readonly string[], rundir: string): Proc {
  return killAtTeardown(t, new Proc(name, spawnChild(name, args, { env: { RUNDIR: rundir } })), WAIT);
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

export { limiter } from './limit.js';

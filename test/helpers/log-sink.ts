/**
 * JSON log lines (pino, one object per line) as they arrive, with waiting: from a
 * spawned daemon's stdout, or from an in-process logger.
 */
import { pino } from 'pino';
import type { Logger } from '../../src/log.js';
import { Waiters } from './waiters.js';

/** One parsed log line; `raw` holds a line that was not JSON. */
export interface LogLine {
  level?: number;
  msg?: string;
  raw?: string;
  [key: string]: unknown;
}

export type LogPredicate = (line: LogLine) => boolean;

/** Collects log lines and resolves waits as matching lines arrive. */
export class LogSink {
  readonly lines: LogLine[] = [];
  private readonly waiters = new Waiters();
  private partial = '';
  /** Set when no more lines can come (the process exited); waits then fail at once. */
  private finished: string | null = null;

  /** Feeds raw text (possibly partial lines). */
  write(text: string): void {
    this.partial += text;
    let newline = this.partial.indexOf('\n');
    while (newline !== -1) {
      const line = this.partial.slice(0, newline);
      this.partial = this.partial.slice(newline + 1);
      if (line.trim() !== '') this.push(parseLine(line));
      newline = this.partial.indexOf('\n');
    }
  }

  push(line: LogLine): void {
    this.lines.push(line);
    this.wake();
  }

  /** No more lines will come; `why` goes into the message of pending waits. */
  finish(why: string): void {
    if (this.partial.trim() !== '') this.push(parseLine(this.partial));
    this.partial = '';
    this.finished = why;
    this.wake();
  }

  /** Lines matching `predicate` so far. */
  filter(predicate: LogPredicate): LogLine[] {
    return this.lines.filter(predicate);
  }

  /**
   * Resolves the first line (seen before or after the call) matching `predicate`;
   * rejects after `timeout` ms or when the sink finished, listing what was logged.
   */
  async waitFor(predicate: LogPredicate, timeout: number, what = 'a matching log line'): Promise<LogLine> {
    const lines = await this.waitForCount(predicate, 1, timeout, what);
    return lines[0]!;
  }

  /** Resolves once `count` matching lines were logged (returns them all). */
  waitForCount(predicate: LogPredicate, count: number, timeout: number, what = 'matching log lines'): Promise<LogLine[]> {
    return this.waiters.wait<LogLine[]>(
      () => {
        const found = this.lines.filter(predicate);
        if (found.length >= count) return { value: found };
        if (this.finished !== null) return { error: new Error(`waiting for ${what}: ${this.finished}; logged:\n${this.dump()}`) };
        return undefined;
      },
      timeout,
      () => new Error(`no ${what} within ${timeout} ms; logged:\n${this.dump()}`),
    );
  }

  /** The lines so far without stack traces, for failure messages. */
  dump(): string {
    return this.lines
      .map((l) => JSON.stringify(l, (key, value: unknown) => (key === 'stack' ? undefined : value)))
      .join('\n');
  }

  private wake(): void {
    this.waiters.wake();
  }
}

function parseLine(line: string): LogLine {
  try {
    const parsed: unknown = JSON.parse(line);
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as LogLine;
  } catch {
    // not JSON: kept raw below
  }
  return { raw: line };
}

/** A pino logger (level debug) whose lines land in a {@link LogSink}, for in-process tests. */
export function captureLogger(): { logger: Logger; sink: LogSink } {
  const sink = new LogSink();
  const logger = pino({ level: 'debug', base: null }, { write: (text: string) => sink.write(text) });
  return { logger, sink };
}

/** The `code` of a log line: top level (refusals, teardown) or under `err` (services). */
export function codeOf(line: LogLine): unknown {
  if (line['code'] !== undefined) return line['code'];
  const err = line['err'];
  return err !== null && typeof err === 'object' ? (err as Record<string, unknown>)['code'] : undefined;
}

/** Matches a line by message and, when given, by its peer (`host:port` of the client). */
export function byMsg(msg: string, peer?: string): LogPredicate {
  return (line) => line.msg === msg && (peer === undefined || line['peer'] === peer);
}

/**
 * The pino logger factory. Only entry points (CLIs, scripts) create root loggers;
 * library code takes an optional `logger` and makes children of it.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export interface LoggerOptions {
  /** pino level name (default `info`, or `LOG_LEVEL` from the environment). */
  level?: LevelWithSilent | string;
  /** Program name put in every line. */
  name?: string;
  /** Write to this file descriptor (default 1, stdout). */
  fd?: number;
}

/** Creates a root logger writing JSON lines (one object per line) synchronously. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env['LOG_LEVEL'] ?? 'info';
  // Synchronous destination: a daemon's last lines (teardown, exit) must not be lost
  // when it exits right after writing them.
  const destination = pino.destination({ fd: options.fd ?? 1, sync: true });
  return pino({ level, name: options.name, base: { pid: process.pid } }, destination);
}

/** A logger that discards everything: the default for library objects given none. */
export const silentLogger: Logger = pino({ level: 'silent' });

/**
 * What the daemons' command lines share: number parsing, the root logger, and clean
 * shutdown on SIGINT, SIGTERM and SIGHUP.
 */
import { InvalidArgumentError } from 'commander';
import { createLogger, type Logger } from '../../src/log.js';
import { keepYoungGenerationSmall } from './young-generation.js';

/** commander parser for a non-negative integer option. */
export function integer(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('expected a non-negative integer');
  return Number(value);
}

/** commander collector for a repeatable option. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** commander parser for a comma-separated list. */
export function list(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(',').map((s) => s.trim()).filter((s) => s !== '')];
}

/**
 * What every daemon does first (tcpd, tlsd, wsd, gatewayd, ipcd, pongd): V8's young
 * generation kept small (young-generation.ts says why), and its root logger.
 */
export function daemonLogger(name: string, level: string | undefined): Logger {
  keepYoungGenerationSmall();
  return createLogger({ name, level: level ?? process.env['LOG_LEVEL'] ?? 'info' });
}

/**
 * Runs `stop` on the first SIGINT, SIGTERM or SIGHUP (unless `signals` says otherwise),
 * then exits 0; a second signal exits at once. Call it before the daemon starts serving:
 * until a handler is installed, a signal kills the process with no cleanup (a supervisor
 * may signal as soon as it reads the `listening` line).
 */
export function stopOnSignals(
  logger: Logger,
  stop: () => Promise<void>,
  signals: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'],
): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'stopping');
    stop().then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  for (const signal of signals) process.on(signal, onSignal);
  reportMemoryOnSignal(logger);
}

/**
 * With `node --expose-gc` (the hostile-client tests run daemons so), SIGUSR2 forces a
 * full GC and logs `memory` with rss/heapUsed, so a test can compare a daemon's memory
 * with its baseline after a batch of abuse. Without --expose-gc, SIGUSR2 only logs.
 */
export function reportMemoryOnSignal(logger: Logger): void {
  process.on('SIGUSR2', () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (gc) gc();
    // heapTotal and external too: which part of rss a growth is (V8's heap, buffers, the rest).
    const { rss, heapUsed, heapTotal, external } = process.memoryUsage();
    logger.info({ rss, heapUsed, heapTotal, external, gc: gc !== undefined }, 'memory');
  });
}

/** Logs a fatal startup error (coded errors keep their code) and exits 1. */
export function fail(logger: Logger, err: unknown, msg: string): never {
  logger.fatal({ err }, msg);
  process.stderr.write(`${msg}: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

export { packageRoot } from '../package-root.js';

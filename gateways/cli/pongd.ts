#!/usr/bin/env node
/**
 * pongd: the libipc echo service, written on the Context event loop.
 *   pongd [--service pong]
 */
import { Command } from 'commander';
import { Context, EventType } from '../../src/context.js';
import { resolveRundir } from '../../src/rundir.js';
import { daemonLogger, fail, stopOnSignals } from './common.js';

const program = new Command('pongd')
  .description('libipc echo service: every message is sent back unchanged')
  .option('--service <name>', 'service name', process.env['IPC_SERVICE_NAME'] ?? 'pong')
  .option('--rundir <dir>', 'run directory (default $RUNDIR or /tmp/.libipc-run/)')
  .option('--log-level <level>', 'pino level (default info)')
  .parse();
const opts = program.opts<{ service: string; rundir?: string; logLevel?: string }>();

const logger = daemonLogger('pongd', opts.logLevel);
const context = new Context({ rundir: opts.rundir ?? resolveRundir(), logger });
stopOnSignals(logger, () => context.closeAll());
try {
  const served = await context.serve(opts.service);
  logger.info({ service: opts.service, path: served.path }, 'listening');
} catch (err) {
  fail(logger, err, `pongd: cannot serve '${opts.service}'`);
}

for await (const event of context) {
  switch (event.type) {
    case EventType.CONNECTION:
      logger.debug({ conn: event.connection!.id }, 'connection');
      break;
    case EventType.MESSAGE_RX:
      context.schedule(event.connection!, event.payload!);
      break;
    case EventType.DISCONNECTION:
      logger.debug({ conn: event.connection!.id }, 'disconnection');
      break;
    case EventType.ERROR:
      // Context already logged why; only that connection is closed.
      break;
    default:
      break;
  }
}

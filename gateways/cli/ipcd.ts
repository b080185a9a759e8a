#!/usr/bin/env node
/**
 * ipcd: libipc's lookup service. Clients with IPC_NETWORK set ask it for a service; it
 * answers with a connected descriptor (local service, or a remote one through the local
 * gateway named by the route's scheme).
 *   ipcd [--lookup-timeout 5000]
 */
import { Command } from 'commander';
import { Ipcd } from '../ipcd.js';
import { resolveRundir } from '../../src/rundir.js';
import { daemonLogger, fail, integer, stopOnSignals } from './common.js';

const program = new Command('ipcd')
  .description('libipc lookup service: routes clients to local or remote services (IPC_NETWORK)')
  .option('--name <name>', 'service name', 'ipc')
  .option('--rundir <dir>', 'run directory (default $RUNDIR or /tmp/.libipc-run/)')
  .option('--lookup-timeout <ms>', 'time a lookup may take, remote handshake included', integer, 5000)
  .option('--max-lookups <n>', 'lookups in progress at once', integer, 1024)
  .option('--log-level <level>', 'pino level (default info)')
  .parse();
const opts = program.opts<{ name: string; rundir?: string; lookupTimeout: number; maxLookups: number; logLevel?: string }>();
const logger = daemonLogger('ipcd', opts.logLevel);

const ipcd = new Ipcd({
  rundir: opts.rundir ?? resolveRundir(),
  name: opts.name,
  lookupTimeout: opts.lookupTimeout,
  maxLookups: opts.maxLookups,
  logger,
});
stopOnSignals(logger, () => ipcd.close());
try {
  await ipcd.start();
} catch (err) {
  fail(logger, err, 'ipcd: cannot start');
}

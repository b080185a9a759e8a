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
import { DaemonAdmin, addAdminOption } from './admin.js';

const program = addAdminOption(new Command('ipcd'))
  .description('libipc lookup service: routes clients to local or remote services (IPC_NETWORK)')
  .option('--name <name>', 'service name', 'ipc')
  .option('--rundir <dir>', 'run directory (default $RUNDIR or /tmp/.libipc-run/)')
  .option('--lookup-timeout <ms>', 'time a lookup may take, remote handshake included', integer, 5000)
  .option('--max-lookups <n>', 'lookups in progress at once', integer, 1024)
  .option('--log-level <level>', 'pino level (default info)')
  .parse();
const opts = program.opts<{ name: string; rundir?: string; lookupTimeout: number; maxLookups: number; logLevel?: string; admin?: string }>();
const logger = daemonLogger('ipcd', opts.logLevel);

let ipcd: Ipcd | undefined;
let admin: DaemonAdmin | undefined;
stopOnSignals(logger, async () => {
  admin?.drain();
  await ipcd?.close();
  await admin?.close();
});
try {
  const rundir = opts.rundir ?? resolveRundir();
  admin = new DaemonAdmin('ipcd', opts.admin, logger, { rundir, gateways: () => [] });
  ipcd = new Ipcd({
    rundir,
    name: opts.name,
    lookupTimeout: opts.lookupTimeout,
    maxLookups: opts.maxLookups,
    logger,
    metrics: admin.metrics,
  });
  await ipcd.start();
  await admin.start();
} catch (err) {
  fail(logger, err, 'ipcd: cannot start');
}

#!/usr/bin/env node
/**
 * tcpd: TCP clients to local libipc services, and (outbound) local clients to remote
 * gateways through the Unix service `tcp`.
 *   tcpd --listen 8998 --service pong          every client reaches $RUNDIR/pong
 *   tcpd --listen 8998 --allow pong,auth       the client names the service (raw name, raw ok)
 */
import { Command } from 'commander';
import { tcpGateway } from '../tcp.js';
import type { Gateway } from '../gateway.js';
import { addGatewayOptions, gatewayOptionsFrom, type GatewayCliOptions } from './gateway-options.js';
import { daemonLogger, fail, stopOnSignals } from './common.js';

const program = addGatewayOptions(new Command('tcpd').description('libipc TCP gateway: TCP clients to local libipc services'), 'tcp').parse();
const opts = program.opts<GatewayCliOptions>();
const logger = daemonLogger('tcpd', opts.logLevel);

let gateway: Gateway | undefined;
stopOnSignals(logger, async () => gateway?.close());
try {
  gateway = tcpGateway(gatewayOptionsFrom('tcp', opts, logger));
  await gateway.listen();
} catch (err) {
  fail(logger, err, 'tcpd: cannot start');
}

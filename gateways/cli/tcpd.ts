#!/usr/bin/env node
/**
 * tcpd: TCP clients to local libipc services, and (outbound) local clients to remote
 * gateways through the Unix service `tcp`.
 *   tcpd --listen 8998 --service pong          every client reaches $RUNDIR/pong
 *   tcpd --listen 8998 --allow pong,auth       the client names the service (raw name, raw ok)
 */
import { Command } from 'commander';
import { TcpGateway } from '../tcp.js';
import { resolveRundir } from '../../src/rundir.js';
import { addGatewayOptions, endpointsFrom, gatewayOptionsFrom, type GatewayCliOptions } from './gateway-options.js';
import { daemonLogger, fail, stopOnSignals } from './common.js';

const OUTBOUND = ['tcp'];
const program = addGatewayOptions(
  new Command('tcpd').description('libipc TCP gateway: TCP clients to local libipc services'),
  OUTBOUND,
).parse();
const opts = program.opts<GatewayCliOptions>();
const logger = daemonLogger('tcpd', opts.logLevel);

let gateway: TcpGateway | undefined;
stopOnSignals(logger, async () => gateway?.close());
try {
  gateway = new TcpGateway({ ...gatewayOptionsFrom(opts, resolveRundir()), ...endpointsFrom(opts, OUTBOUND), logger });
  await gateway.listen();
} catch (err) {
  fail(logger, err, 'tcpd: cannot start');
}

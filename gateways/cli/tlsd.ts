#!/usr/bin/env node
/**
 * tlsd: TLS clients to local libipc services (TLS termination), and (outbound) local
 * clients to remote TLS gateways through the Unix service `tls`.
 *   tlsd --listen 8999 --cert certs/server.pem --key certs/server-key.pem --service pong
 *   tlsd ... --allow pong,auth                    the client names the service inside TLS
 *   tlsd ... --ca certs/ca.pem --require-client-cert [--allow-cn NAMES] [--allow-san NAMES]
 * SIGHUP (or --watch-certs) reloads certificate, key and CA; SIGINT/SIGTERM drain and exit.
 */
import { Command } from 'commander';
import { tlsGateway, type TlsGateway } from '../tls.js';
import { addGatewayOptions, gatewayOptionsFrom, type GatewayCliOptions } from './gateway-options.js';
import { daemonLogger, fail, stopOnSignals } from './common.js';

const program = addGatewayOptions(new Command('tlsd').description('libipc TLS gateway: TLS clients to local libipc services'), 'tls').parse();
const opts = program.opts<GatewayCliOptions>();
const logger = daemonLogger('tlsd', opts.logLevel);

let gateway: TlsGateway | undefined;
stopOnSignals(logger, async () => gateway?.close(), ['SIGINT', 'SIGTERM']);
process.on('SIGHUP', () => gateway?.material.reload());
try {
  gateway = tlsGateway(gatewayOptionsFrom('tls', opts, logger));
  await gateway.listen();
} catch (err) {
  fail(logger, err, 'tlsd: cannot start');
}

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
import { TlsGateway } from '../tls.js';
import { resolveRundir } from '../../src/rundir.js';
import { addGatewayOptions, endpointsFrom, gatewayOptionsFrom, type GatewayCliOptions } from './gateway-options.js';
import { addTlsOptions, tlsSettingsFrom, type TlsCliOptions } from './tls-options.js';
import { daemonLogger, fail, stopOnSignals } from './common.js';

const OUTBOUND = ['tls'];
const program = addTlsOptions(
  addGatewayOptions(new Command('tlsd').description('libipc TLS gateway: TLS clients to local libipc services'), OUTBOUND),
  true,
).parse();
const opts = program.opts<GatewayCliOptions & TlsCliOptions>();
const logger = daemonLogger('tlsd', opts.logLevel);

let gateway: TlsGateway | undefined;
stopOnSignals(logger, async () => gateway?.close(), ['SIGINT', 'SIGTERM']);
process.on('SIGHUP', () => gateway?.material.reload());
try {
  const tls = tlsSettingsFrom(opts);
  if (!tls) throw new TypeError('give --cert and --key');
  gateway = new TlsGateway({
    ...gatewayOptionsFrom(opts, resolveRundir()),
    ...endpointsFrom(opts, OUTBOUND),
    tls,
    watchCerts: opts.watchCerts === true,
    logger,
  });
  await gateway.listen();
} catch (err) {
  fail(logger, err, 'tlsd: cannot start');
}

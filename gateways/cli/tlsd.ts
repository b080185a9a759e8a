#!/usr/bin/env node
/**
 * tlsd: TLS clients to local libipc services (TLS termination).
 *   tlsd --listen 8999 --cert certs/server.pem --key certs/server-key.pem --service pong
 *   tlsd ... --allow pong,auth                    the client names the service inside TLS
 *   tlsd ... --ca certs/ca.pem --require-client-cert [--allow-cn NAMES] [--allow-san NAMES]
 * SIGHUP (or --watch-certs) reloads certificate, key and CA; SIGINT/SIGTERM drain and exit.
 */
import { Command } from 'commander';
import { TlsGateway } from '../tls.js';
import { parseListenAddress } from '../listen.js';
import { resolveRundir } from '../../src/rundir.js';
import { addGatewayOptions, gatewayOptionsFrom, type GatewayCliOptions } from './gateway-options.js';
import { addTlsOptions, tlsSettingsFrom, type TlsCliOptions } from './tls-options.js';
import { collect, daemonLogger, fail, stopOnSignals } from './common.js';

const program = addTlsOptions(
  addGatewayOptions(
    new Command('tlsd')
      .description('libipc TLS gateway: TLS clients to local libipc services')
      .option('--listen <address...>', 'PORT, HOST:PORT or [V6]:PORT; repeatable (default $ADDRESS)', collect),
  ),
  true,
).parse();
const opts = program.opts<GatewayCliOptions & TlsCliOptions & { listen?: string[] }>();
const logger = daemonLogger('tlsd', opts.logLevel);

let gateway: TlsGateway;
try {
  const listenTexts = opts.listen ?? (process.env['ADDRESS'] ? [process.env['ADDRESS']] : []);
  if (listenTexts.length === 0) throw new TypeError('give --listen (or set ADDRESS)');
  const tls = tlsSettingsFrom(opts);
  if (!tls) throw new TypeError('give --cert and --key');
  gateway = new TlsGateway({
    ...gatewayOptionsFrom(opts, resolveRundir()),
    listen: listenTexts.map(parseListenAddress),
    tls,
    watchCerts: opts.watchCerts === true,
    logger,
  });
  await gateway.listen();
} catch (err) {
  fail(logger, err, 'tlsd: cannot start');
}
process.on('SIGHUP', () => gateway.material.reload());
stopOnSignals(logger, () => gateway.close(), ['SIGINT', 'SIGTERM']);

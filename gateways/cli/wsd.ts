#!/usr/bin/env node
/**
 * wsd: WebSocket clients (browsers) to local libipc services, one WebSocket message per
 * libipc message, and a small page to try it.
 *   wsd --listen 8080 --service pong             every upgrade reaches pong
 *   wsd --listen 8080 --allow pong,auth          ws://host:8080/pong names the service
 *   wsd ... --cert certs/server.pem --key certs/server-key.pem    (wss; SIGHUP reloads)
 */
import { Command } from 'commander';
import { WsGateway } from '../ws.js';
import { resolveRundir } from '../../src/rundir.js';
import { addGatewayOptions, endpointsFrom, gatewayOptionsFrom, type GatewayCliOptions } from './gateway-options.js';
import { addTlsOptions, tlsSettingsFrom, type TlsCliOptions } from './tls-options.js';
import { daemonLogger, fail, integer, list, packageRoot, stopOnSignals } from './common.js';

const OUTBOUND = ['ws', 'wss'];
const program = addTlsOptions(
  addGatewayOptions(
    new Command('wsd')
      .description('libipc WebSocket gateway: WebSocket clients to local libipc services')
      .option('--text', 'send replies as text messages when they are valid UTF-8 (default binary)')
      .option('--origin <origins>', 'comma-separated Origin values allowed (default any)', list)
      .option('--ping-interval <ms>', 'ping every ms, drop peers that miss a pong (0: off; default 30000)', integer)
      .option('--static <dir>', 'directory served over HTTP (default: the bundled page)')
      .option('--no-static', 'serve no page: plain HTTP requests get 426'),
    OUTBOUND,
  ),
  false,
).parse();
const opts = program.opts<
  GatewayCliOptions & TlsCliOptions & { text?: boolean; origin?: string[]; pingInterval?: number; static: string | boolean }
>();
const logger = daemonLogger('wsd', opts.logLevel);

let gateway: WsGateway | undefined;
stopOnSignals(logger, async () => gateway?.close(), ['SIGINT', 'SIGTERM']);
process.on('SIGHUP', () => {
  if (gateway?.material) gateway.material.reload();
  else logger.info('SIGHUP: no TLS material to reload');
});
try {
  const tls = tlsSettingsFrom(opts);
  gateway = new WsGateway({
    ...gatewayOptionsFrom(opts, resolveRundir()),
    ...endpointsFrom(opts, OUTBOUND),
    ...(tls ? { tls, watchCerts: opts.watchCerts === true } : {}),
    text: opts.text === true,
    ...(opts.origin ? { origins: opts.origin } : {}),
    ...(opts.pingInterval !== undefined ? { pingInterval: opts.pingInterval } : {}),
    staticDir: opts.static === false ? null : typeof opts.static === 'string' ? opts.static : `${packageRoot()}/web`,
    logger,
  });
  await gateway.listen();
} catch (err) {
  fail(logger, err, 'wsd: cannot start');
}

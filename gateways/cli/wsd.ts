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
import { parseListenAddress } from '../listen.js';
import { resolveRundir } from '../../src/rundir.js';
import { addGatewayOptions, gatewayOptionsFrom, type GatewayCliOptions } from './gateway-options.js';
import { addTlsOptions, tlsSettingsFrom, type TlsCliOptions } from './tls-options.js';
import { collect, daemonLogger, fail, integer, list, packageRoot, stopOnSignals } from './common.js';

const program = addTlsOptions(
  addGatewayOptions(
    new Command('wsd')
      .description('libipc WebSocket gateway: WebSocket clients to local libipc services')
      .option('--listen <address...>', 'PORT, HOST:PORT or [V6]:PORT; repeatable (default $ADDRESS)', collect)
      .option('--text', 'send replies as text messages when they are valid UTF-8 (default binary)')
      .option('--origin <origins>', 'comma-separated Origin values allowed (default any)', list)
      .option('--ping-interval <ms>', 'ping every ms, drop peers that miss a pong (0: off; default 30000)', integer)
      .option('--static <dir>', 'directory served over HTTP (default: the bundled page)')
      .option('--no-static', 'serve no page: plain HTTP requests get 426'),
  ),
  false,
).parse();
const opts = program.opts<
  GatewayCliOptions & TlsCliOptions & { listen?: string[]; text?: boolean; origin?: string[]; pingInterval?: number; static: string | boolean }
>();
const logger = daemonLogger('wsd', opts.logLevel);

let gateway: WsGateway;
try {
  const listenTexts = opts.listen ?? (process.env['ADDRESS'] ? [process.env['ADDRESS']] : []);
  if (listenTexts.length === 0) throw new TypeError('give --listen (or set ADDRESS)');
  const tls = tlsSettingsFrom(opts);
  gateway = new WsGateway({
    ...gatewayOptionsFrom(opts, resolveRundir()),
    listen: listenTexts.map(parseListenAddress),
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
process.on('SIGHUP', () => {
  if (gateway.material) gateway.material.reload();
  else logger.info('SIGHUP: no TLS material to reload');
});
stopOnSignals(logger, () => gateway.close(), ['SIGINT', 'SIGTERM']);

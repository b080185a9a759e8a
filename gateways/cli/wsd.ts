#!/usr/bin/env node
/**
 * wsd: WebSocket clients (browsers) to local libipc services, one WebSocket message per
 * libipc message, and a small page to try it.
 *   wsd --listen 8080 --service pong             every upgrade reaches pong
 *   wsd --listen 8080 --allow pong,auth          ws://host:8080/pong names the service
 *   wsd ... --cert certs/server.pem --key certs/server-key.pem    (wss; SIGHUP reloads)
 */
import { Command } from 'commander';
import { wsGateway, type WsGateway } from '../ws.js';
import { addGatewayOptions, gatewayOptionsFrom, type GatewayCliOptions } from './gateway-options.js';
import { daemonLogger, fail, stopOnSignals } from './common.js';

const program = addGatewayOptions(
  new Command('wsd').description('libipc WebSocket gateway: WebSocket clients to local libipc services'),
  'ws',
).parse();
const opts = program.opts<GatewayCliOptions>();
const logger = daemonLogger('wsd', opts.logLevel);

let gateway: WsGateway | undefined;
stopOnSignals(logger, async () => gateway?.close(), ['SIGINT', 'SIGTERM']);
process.on('SIGHUP', () => {
  if (gateway?.material) gateway.material.reload();
  else logger.info('SIGHUP: no TLS material to reload');
});
try {
  gateway = wsGateway(gatewayOptionsFrom('ws', opts, logger));
  await gateway.listen();
} catch (err) {
  fail(logger, err, 'wsd: cannot start');
}

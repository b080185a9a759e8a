#!/usr/bin/env node
/**
 * wsd: WebSocket clients (browsers) to local libipc services, one WebSocket message per
 * libipc message, and a small page to try it.
 *   wsd --listen 8080 --service pong             every upgrade reaches pong
 *   wsd --listen 8080 --allow pong,auth          ws://host:8080/pong names the service
 *   wsd ... --cert certs/server.pem --key certs/server-key.pem    (wss; SIGHUP reloads)
 */
import { wsGateway } from '../ws.js';
import { runGatewayDaemon } from './run-gateway.js';

await runGatewayDaemon('wsd', 'ws', 'libipc WebSocket gateway: WebSocket clients to local libipc services', wsGateway, (gateway, logger) => {
  if (gateway.material) gateway.material.reload();
  else logger.info('SIGHUP: no TLS material to reload');
});

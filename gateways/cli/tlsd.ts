#!/usr/bin/env node
/**
 * tlsd: TLS clients to local libipc services (TLS termination), and (outbound) local
 * clients to remote TLS gateways through the Unix service `tls`.
 *   tlsd --listen 8999 --cert certs/server.pem --key certs/server-key.pem --service pong
 *   tlsd ... --allow pong,auth                    the client names the service inside TLS
 *   tlsd ... --ca certs/ca.pem --require-client-cert [--allow-cn NAMES] [--allow-san NAMES]
 * SIGHUP (or --watch-certs) reloads certificate, key and CA; SIGINT/SIGTERM drain and exit.
 */
import { tlsGateway } from '../tls.js';
import { runGatewayDaemon } from './run-gateway.js';

await runGatewayDaemon('tlsd', 'tls', 'libipc TLS gateway: TLS clients to local libipc services', tlsGateway, (gateway) => gateway.material.reload());

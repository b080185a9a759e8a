#!/usr/bin/env node
/**
 * tcpd: TCP clients to local libipc services, and (outbound) local clients to remote
 * gateways through the Unix service `tcp`.
 *   tcpd --listen 8998 --service pong          every client reaches $RUNDIR/pong
 *   tcpd --listen 8998 --allow pong,auth       the client names the service (raw name, raw ok)
 */
import { tcpGateway } from '../tcp.js';
import { runGatewayDaemon } from './run-gateway.js';

await runGatewayDaemon('tcpd', 'tcp', 'libipc TCP gateway: TCP clients to local libipc services', tcpGateway);

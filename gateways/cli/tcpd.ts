#!/usr/bin/env node
/**
 * tcpd: TCP clients to local libipc services.
 *   tcpd --listen 8998 --service pong          every client reaches $RUNDIR/pong
 *   tcpd --listen 8998 --allow pong,auth       the client names the service (raw name, raw ok)
 */
import { Command } from 'commander';
import { TcpGateway } from '../tcp.js';
import { parseListenAddress } from '../listen.js';
import { resolveRundir } from '../../src/rundir.js';
import { addGatewayOptions, gatewayOptionsFrom, type GatewayCliOptions } from './gateway-options.js';
import { collect, daemonLogger, fail, stopOnSignals } from './common.js';

const program = addGatewayOptions(
  new Command('tcpd')
    .description('libipc TCP gateway: TCP clients to local libipc services')
    .option('--listen <address...>', 'PORT, HOST:PORT or [V6]:PORT; repeatable (default $ADDRESS)', collect),
).parse();
const opts = program.opts<GatewayCliOptions & { listen?: string[] }>();
const logger = daemonLogger('tcpd', opts.logLevel);

let gateway: TcpGateway;
try {
  const listenTexts = opts.listen ?? (process.env['ADDRESS'] ? [process.env['ADDRESS']] : []);
  if (listenTexts.length === 0) throw new TypeError('give --listen (or set ADDRESS)');
  gateway = new TcpGateway({
    ...gatewayOptionsFrom(opts, resolveRundir()),
    listen: listenTexts.map(parseListenAddress),
    logger,
  });
  await gateway.listen();
} catch (err) {
  fail(logger, err, 'tcpd: cannot start');
}
stopOnSignals(logger, () => gateway.close());

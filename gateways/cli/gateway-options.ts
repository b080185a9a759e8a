/**
 * The command-line options every gateway daemon shares, mapped one to one to
 * {@link GatewayOptions} (camelCase option = kebab-case flag).
 */
import type { Command } from 'commander';
import type { GatewayOptions } from '../gateway.js';
import { collect, integer, list } from './common.js';
import { parseListenAddress, type ListenAddress } from '../listen.js';
import type { OutboundOptions } from '../outbound.js';

export interface GatewayCliOptions {
  service?: string;
  allow?: string[];
  rundir?: string;
  maxPayload?: number;
  handshakeTimeout?: number;
  maxConnections?: number;
  drainTimeout?: number;
  halfCloseTimeout?: number;
  idleTimeout?: number;
  directRead?: boolean;
  logLevel?: string;
  listen?: string[];
  name?: string[];
  outbound: boolean;
  outboundOnly?: boolean;
  outboundCa?: string;
}

/**
 * Adds the shared options. `outboundNames` are the default Unix service names of the
 * outbound side (tcpd: tcp; tlsd: tls; wsd: ws,wss), overridable with --name or
 * IPC_SERVICE_NAME as in the original.
 */
export function addGatewayOptions(command: Command, outboundNames: readonly string[]): Command {
  const defaultNames = process.env['IPC_SERVICE_NAME'] ? [process.env['IPC_SERVICE_NAME']] : [...outboundNames];
  return command
    .option('--listen <address...>', 'PORT, HOST:PORT or [V6]:PORT; repeatable (default $ADDRESS)', collect)
    .option('--name <names>', `outbound Unix service name(s) (default $IPC_SERVICE_NAME or ${outboundNames.join(',')})`, list)
    .option('--no-outbound', 'do not serve the outbound Unix service')
    .option('--outbound-only', 'serve only the outbound Unix service (no --listen)')
    .option('--outbound-ca <file>', 'CA bundle to verify remote TLS gateways (default: system CAs)')
    .addHelpText('after', `\nOutbound names by default: ${defaultNames.join(', ')}`)
    .option('--service <name>', 'fixed target: every client reaches this service')
    .option('--allow <names>', "client-named targets: comma-separated names, or '*' for any valid name", list)
    .option('--rundir <dir>', 'run directory (default $RUNDIR or /tmp/.libipc-run/)')
    .option('--max-payload <bytes>', 'largest libipc payload passed (default 99992)', integer)
    .option('--handshake-timeout <ms>', 'time a client has to finish its handshake (default 5000)', integer)
    .option('--max-connections <n>', 'concurrent client connections (default 10000)', integer)
    .option('--drain-timeout <ms>', 'on SIGTERM, time open connections get to finish (default 10000)', integer)
    .option('--half-close-timeout <ms>', 'time the other direction gets after a half-close (default 5000)', integer)
    .option('--idle-timeout <ms>', 'close a connection after this long without traffic (default 0: never)', integer)
    .option('--direct-read', 'read service sockets into a buffer per connection (net onread): less CPU per message, 128 KiB more memory per connection')
    .option('--log-level <level>', 'pino level: trace, debug, info, warn, error, silent (default info)');
}

/**
 * Listen addresses, and the outbound service, from the options.
 * @throws TypeError for a missing or contradictory choice.
 */
export function endpointsFrom(
  opts: GatewayCliOptions,
  outboundNames: readonly string[],
): { listen: ListenAddress[]; outbound?: OutboundOptions } {
  const listenTexts = opts.listen ?? (process.env['ADDRESS'] ? [process.env['ADDRESS']] : []);
  if (opts.outboundOnly) {
    if (opts.listen?.length) throw new TypeError('--outbound-only and --listen exclude each other');
    if (!opts.outbound) throw new TypeError('--outbound-only and --no-outbound exclude each other');
  } else {
    if (listenTexts.length === 0) throw new TypeError('give --listen (or set ADDRESS), or --outbound-only');
    if (opts.service === undefined && !opts.allow?.length) throw new TypeError('give --service NAME or --allow NAMES');
  }
  const names = opts.name ?? (process.env['IPC_SERVICE_NAME'] ? [process.env['IPC_SERVICE_NAME']] : [...outboundNames]);
  return {
    listen: opts.outboundOnly ? [] : listenTexts.map(parseListenAddress),
    ...(opts.outbound
      ? { outbound: { names, schemes: outboundNames, ...(opts.outboundCa ? { ca: opts.outboundCa } : {}) } }
      : {}),
  };
}

export function gatewayOptionsFrom(opts: GatewayCliOptions, rundir: string): GatewayOptions {
  const allow = opts.allow?.length === 1 && opts.allow[0] === '*' ? '*' : opts.allow;
  return {
    ...(opts.service !== undefined ? { service: opts.service } : {}),
    ...(allow !== undefined ? { allow } : {}),
    rundir: opts.rundir ?? rundir,
    ...(opts.maxPayload !== undefined ? { maxPayload: opts.maxPayload } : {}),
    ...(opts.handshakeTimeout !== undefined ? { handshakeTimeout: opts.handshakeTimeout } : {}),
    ...(opts.maxConnections !== undefined ? { maxConnections: opts.maxConnections } : {}),
    ...(opts.drainTimeout !== undefined ? { drainTimeout: opts.drainTimeout } : {}),
    ...(opts.halfCloseTimeout !== undefined ? { halfCloseTimeout: opts.halfCloseTimeout } : {}),
    ...(opts.idleTimeout !== undefined ? { idleTimeout: opts.idleTimeout } : {}),
    directRead: opts.directRead === true,
  };
}

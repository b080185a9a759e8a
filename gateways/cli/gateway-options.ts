/**
 * The command-line options every gateway daemon shares, mapped one to one to
 * {@link GatewayOptions} (camelCase option = kebab-case flag).
 */
import type { Command } from 'commander';
import type { GatewayOptions } from '../gateway.js';
import { integer, list } from './common.js';

export interface GatewayCliOptions {
  service?: string;
  allow?: string[];
  rundir?: string;
  maxPayload?: number;
  handshakeTimeout?: number;
  maxConnections?: number;
  drainTimeout?: number;
  halfCloseTimeout?: number;
  logLevel?: string;
}

export function addGatewayOptions(command: Command): Command {
  return command
    .option('--service <name>', 'fixed target: every client reaches this service')
    .option('--allow <names>', "client-named targets: comma-separated names, or '*' for any valid name", list)
    .option('--rundir <dir>', 'run directory (default $RUNDIR or /tmp/.libipc-run/)')
    .option('--max-payload <bytes>', 'largest libipc payload passed (default 99992)', integer)
    .option('--handshake-timeout <ms>', 'time a client has to finish its handshake (default 5000)', integer)
    .option('--max-connections <n>', 'concurrent client connections (default 10000)', integer)
    .option('--drain-timeout <ms>', 'on SIGTERM, time open connections get to finish (default 10000)', integer)
    .option('--half-close-timeout <ms>', 'time the other direction gets after a half-close (default 5000)', integer)
    .option('--log-level <level>', 'pino level: trace, debug, info, warn, error, silent (default info)');
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
  };
}

/**
 * The command-line options of the gateway daemons, built from the one table of options
 * (gateways/options.ts): flag = kebab-case of the library name, same meaning, same
 * default. What only a command line has: `--log-level`, `--no-outbound` (outbound is on
 * by default for the daemons), the `$ADDRESS` and `$IPC_SERVICE_NAME` defaults of the
 * original, and the bundled page as wsd's default `--static`.
 */
import type { Command } from 'commander';
import { collect, integer, list, packageRoot } from './common.js';
import { OPTION_SPECS, flagOf, normalizeGatewayOptions, type GatewayInput, type GatewayKind, type GatewayOptions } from '../options.js';
import type { Logger } from '../../src/log.js';
import type { GatewayMetrics } from '../metrics.js';
import { addAdminOption } from './admin.js';

/** What commander parsed: option values by library name, plus `logLevel` and `admin`. */
export type GatewayCliOptions = Record<string, unknown> & { logLevel?: string; admin?: string };

/** Adds every option of a `kind` gateway to `command`. */
export function addGatewayOptions(command: Command, kind: GatewayKind): Command {
  for (const spec of OPTION_SPECS) {
    if (!spec.kinds.includes(kind)) continue;
    const flag = `--${flagOf(spec.key)}`;
    const help = spec.defaultText ? `${spec.help} (default ${spec.defaultText})` : spec.help;
    switch (spec.type) {
      case 'boolean':
        // The daemons serve their outbound side unless told not to.
        if (spec.key === 'outbound') command.option(`--no-${flagOf(spec.key)}`, 'do not serve the outbound Unix service(s)');
        else command.option(flag, help);
        break;
      case 'integer':
        command.option(`${flag} ${spec.arg}`, help, integer);
        break;
      case 'list':
      case 'allow':
        command.option(`${flag} ${spec.arg}`, help, list);
        break;
      case 'listen':
        command.option(`${flag} ${spec.arg}`, help, collect);
        break;
      case 'directory-or-false':
        command.option(`${flag} ${spec.arg}`, help).option(`--no-${flagOf(spec.key)}`, 'serve no page: plain HTTP requests get 426');
        break;
      default:
        command.option(`${flag} ${spec.arg}`, help);
    }
  }
  return addAdminOption(command).option('--log-level <level>', 'pino level: trace, debug, info, warn, error, silent (default info)');
}

/**
 * The normalised options of a daemon from its parsed flags and environment.
 * @throws OptionsError naming the flag; TypeError for a missing listen address.
 */
export function gatewayOptionsFrom(
  kind: GatewayKind,
  opts: GatewayCliOptions,
  logger: Logger,
  env: NodeJS.ProcessEnv = process.env,
  metrics?: GatewayMetrics,
): GatewayOptions {
  const input: Record<string, unknown> = {};
  for (const spec of OPTION_SPECS) {
    if (spec.kinds.includes(kind) && opts[spec.key] !== undefined) input[spec.key] = opts[spec.key];
  }
  if (input['listen'] === undefined && env['ADDRESS'] && opts['outboundOnly'] !== true) input['listen'] = [env['ADDRESS']];
  if (input['name'] === undefined && env['IPC_SERVICE_NAME']) input['name'] = [env['IPC_SERVICE_NAME']];
  if (input['listen'] === undefined && opts['outboundOnly'] !== true) {
    throw new TypeError('give --listen (or set ADDRESS), or --outbound-only');
  }
  if (kind === 'ws' && (input['static'] === true || input['static'] === undefined)) input['static'] = `${packageRoot()}/web`;
  return normalizeGatewayOptions(kind, { ...(input as GatewayInput), logger, ...(metrics ? { metrics } : {}) }, (key) => `--${flagOf(key)}`);
}

/**
 * gatewayd's configuration file (YAML): every gateway of a process, with the daemons'
 * flags as keys (kebab-case, same meaning, same default), checked whole before anything
 * starts by the one options normaliser (gateways/options.ts). Errors name the file, the
 * key's path and what was expected:
 *   gatewayd.yaml: gateways[1].max-payload: expected an integer from 0 to 4294967295, got -1
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { parseDocument } from 'yaml';
import { resolveRundir, serviceNameProblem } from '../src/rundir.js';
import type { Logger } from '../src/log.js';
import { parseListenAddress } from './listen.js';
import { packageRoot } from './package-root.js';
import { OPTION_SPECS, OptionsError, flagOf, normalizeGatewayOptions, type GatewayKind, type GatewayOptions } from './options.js';

/** An ipcd of the process (`ipcd: true`, or a map of its flags). */
export interface IpcdConfig {
  name: string;
  lookupTimeout: number;
  maxLookups: number;
}

export interface GatewaydConfig {
  file: string;
  rundir: string;
  workers: number;
  drainTimeout: number;
  logLevel: string | undefined;
  /** The admin listener's address (`--admin`), if any. */
  admin: string | undefined;
  ipcd: IpcdConfig | null;
  /** Outbound services by scheme (`tcp`, `tls`, `ws`, `wss`), each a gateway with only that side. */
  outbound: GatewayOptions[];
  gateways: GatewayOptions[];
}

/** A refused configuration: the message starts with the file and the key's path. */
export class ConfigError extends Error {
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = 'ConfigError';
  }
}

const TOP_KEYS = new Set(['rundir', 'workers', 'drain-timeout', 'log-level', 'admin', 'ipcd', 'outbound', 'gateways']);
/** Keys of the process, not of one gateway. */
const PER_PROCESS = new Set(['rundir', 'drain-timeout', 'workers', 'log-level', 'admin']);
/** The outbound side is declared once per process, under `outbound:`. */
const OUTBOUND_KEYS = new Set(['outbound', 'outbound-only', 'name', 'outbound-ca', 'send-proxy-v2']);
const KIND_OF_SCHEME: Record<string, GatewayKind> = { tcp: 'tcp', tls: 'tls', ws: 'ws', wss: 'ws' };
const KEY_OF_FLAG = new Map(OPTION_SPECS.map((s) => [flagOf(s.key), s.key]));

function isMap(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Most worker processes a file may ask for (`auto` is one per core). */
export const MAX_WORKERS = 256;

/** Reads `file`. @throws ConfigError when it cannot be read. */
export function readConfigText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, `cannot read the configuration (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** Reads and checks `file`. @throws ConfigError (missing file, YAML syntax with line and column, any refused key). */
export function loadConfig(file: string, logger?: Logger): GatewaydConfig {
  return parseConfig(file, readConfigText(file), logger);
}

/**
 * Checks `text`, the content of `file` (a cluster worker gets the text its primary
 * checked, so every worker runs the same file even if it changes on disk meanwhile).
 * @throws ConfigError as {@link loadConfig}.
 */
export function parseConfig(file: string, text: string, logger?: Logger, keep?: Record<string, unknown>): GatewaydConfig {
  const parsed = parseYaml(file, text);
  // `keep`: the keys only a restart changes, as the process started with them.
  const root = keep !== undefined && isMap(parsed) ? { ...parsed, ...keep } : parsed;
  try {
    return checkConfig(file, root, logger);
  } catch (err) {
    if (err instanceof OptionsError) throw new ConfigError(file, err.message);
    throw err;
  }
}

function parseYaml(file: string, text: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const where = first.linePos?.[0] ? `line ${first.linePos[0].line}, column ${first.linePos[0].col}: ` : '';
    throw new ConfigError(file, `YAML syntax error: ${where}${first.message.split('\n')[0]}`);
  }
  return doc.toJS();
}

/**
 * The keys a reload cannot change (rundir, drain-timeout, workers, ipcd, outbound), as
 * `config` (checked from `text`) has them, for {@link parseConfig}'s `keep`: a cluster
 * worker started or reloaded later runs with what its primary started with.
 */
export function restartOnlyKeys(config: GatewaydConfig, text: string): Record<string, unknown> {
  const root = parseYaml(config.file, text) as Record<string, unknown>;
  return { rundir: config.rundir, 'drain-timeout': config.drainTimeout, workers: config.workers, ipcd: root['ipcd'] ?? false, outbound: root['outbound'] ?? {} };
}

function checkConfig(file: string, root: unknown, logger: Logger | undefined): GatewaydConfig {
  if (!isMap(root)) throw new OptionsError('(top)', 'a map with a gateways list', root);
  for (const key of Object.keys(root)) {
    if (!TOP_KEYS.has(key)) throw new OptionsError(key, `one of ${[...TOP_KEYS].join(', ')}`, `unknown key ${key}`);
  }
  const rundir = root['rundir'] === undefined ? resolveRundir() : stringAt(root['rundir'], 'rundir');
  const workers = root['workers'] === 'auto' ? Math.min(os.availableParallelism(), MAX_WORKERS) : integerAt(root['workers'] ?? 1, 'workers', 1, MAX_WORKERS, '"auto" or ');
  const drainTimeout = integerAt(root['drain-timeout'] ?? 10_000, 'drain-timeout', 0, 24 * 3600 * 1000);
  const logLevel = root['log-level'] === undefined ? undefined : stringAt(root['log-level'], 'log-level');
  const admin = root['admin'] === undefined ? undefined : listenAt(root['admin'], 'admin');
  const common = { rundir, drainTimeout, ...(logger ? { logger } : {}) };

  const gatewaysValue = root['gateways'] ?? [];
  if (!Array.isArray(gatewaysValue)) throw new OptionsError('gateways', 'a list of gateways', gatewaysValue);
  const gateways = gatewaysValue.map((entry, i) => {
    const at = `gateways[${i}]`;
    if (!isMap(entry)) throw new OptionsError(at, 'a map with type and the flags of that gateway', entry);
    const type = entry['type'];
    if (type !== 'tcp' && type !== 'tls' && type !== 'ws') throw new OptionsError(`${at}.type`, 'tcp, tls or ws', type);
    const input: Record<string, unknown> = {};
    for (const [flag, value] of Object.entries(entry)) {
      if (flag === 'type') continue;
      if (PER_PROCESS.has(flag)) throw new OptionsError(`${at}.${flag}`, 'a key of the whole file, not of one gateway', flag);
      if (OUTBOUND_KEYS.has(flag)) throw new OptionsError(`${at}.${flag}`, 'the outbound side under the top-level outbound: key', flag);
      const key = KEY_OF_FLAG.get(flag);
      if (key === undefined) throw new OptionsError(`${at}.${flag}`, `a flag of ${type}d (kebab-case)`, `unknown key ${flag}`);
      input[key] = PATH_KEYS.has(key) ? besideFile(file, value) : value;
    }
    // As wsd: the bundled page unless `static` names a directory or is false.
    if (type === 'ws' && (input['static'] === undefined || input['static'] === true)) input['static'] = path.join(packageRoot(), 'web');
    const options = normalizeGatewayOptions(type, { ...input, ...common, outbound: false }, (key) => `${at}.${flagOf(key)}`);
    if (options.listen.length === 0) throw new OptionsError(`${at}.listen`, 'at least one address');
    return options;
  });

  // One address, one gateway: a second bind would fail at start, or worse, at a reload.
  const seen = new Map<string, string>();
  gateways.forEach((g, i) => {
    for (const a of g.listen) {
      const key = a.path !== undefined ? `unix:${a.path}` : `${a.host ?? '*'}:${a.port}`;
      if (a.port === 0 && a.path === undefined) continue;
      const other = seen.get(key);
      if (other !== undefined) throw new OptionsError(`gateways[${i}].listen`, `an address no other gateway listens on (${other} does)`, key);
      seen.set(key, `gateways[${i}]`);
    }
  });

  const outboundValue = root['outbound'] ?? {};
  if (!isMap(outboundValue)) throw new OptionsError('outbound', 'a map of schemes (tcp, tls, ws, wss) to their flags', outboundValue);
  const outbound = Object.entries(outboundValue).map(([scheme, flags]) => {
    const at = `outbound.${scheme}`;
    const kind = KIND_OF_SCHEME[scheme];
    if (kind === undefined) throw new OptionsError(at, 'one of tcp, tls, ws, wss', scheme);
    const map = flags ?? {};
    if (!isMap(map)) throw new OptionsError(at, 'a map of flags (outbound-ca, name, send-proxy-v2)', flags);
    const input: Record<string, unknown> = { outboundOnly: true, outbound: true, name: [scheme] };
    const keyOf: Record<string, string> = { 'outbound-ca': 'outboundCa', name: 'name', 'send-proxy-v2': 'sendProxyV2' };
    for (const [flag, value] of Object.entries(map)) {
      const key = keyOf[flag];
      if (key === undefined) throw new OptionsError(`${at}.${flag}`, 'outbound-ca, name or send-proxy-v2', `unknown key ${flag}`);
      input[key] = flag === 'name' ? [value] : PATH_KEYS.has(key) ? besideFile(file, value) : value;
    }
    // The outbound side of a gateway kind, with no listener (and no TLS material of its own).
    const options = normalizeGatewayOptions(kind === 'tls' ? 'tcp' : kind, { ...input, ...common }, (key) => `${at}.${flagOf(key)}`);
    return { ...options, kind, outboundSchemes: [scheme] } as GatewayOptions;
  });

  const ipcdValue = root['ipcd'] ?? false;
  let ipcd: IpcdConfig | null = null;
  if (ipcdValue === true) ipcd = { name: 'ipc', lookupTimeout: 5000, maxLookups: 1024 };
  else if (isMap(ipcdValue)) {
    for (const key of Object.keys(ipcdValue)) {
      if (!['name', 'lookup-timeout', 'max-lookups'].includes(key)) throw new OptionsError(`ipcd.${key}`, 'name, lookup-timeout or max-lookups', `unknown key ${key}`);
    }
    const ipcdName = ipcdValue['name'] === undefined ? 'ipc' : stringAt(ipcdValue['name'], 'ipcd.name');
    const problem = serviceNameProblem(ipcdName);
    if (problem) throw new OptionsError('ipcd.name', 'a valid service name', `${ipcdName} (${problem})`);
    ipcd = {
      name: ipcdName,
      lookupTimeout: integerAt(ipcdValue['lookup-timeout'] ?? 5000, 'ipcd.lookup-timeout', 1, 24 * 3600 * 1000),
      maxLookups: integerAt(ipcdValue['max-lookups'] ?? 1024, 'ipcd.max-lookups', 1, 10_000_000),
    };
  } else if (ipcdValue !== false) throw new OptionsError('ipcd', 'true, false, or a map of its flags', ipcdValue);

  return { file, rundir, workers, drainTimeout, logLevel, admin, ipcd, outbound, gateways };
}

/** One listen address (HOST:PORT, [V6]:PORT, unix:/path, or a bare port). */
function listenAt(value: unknown, at: string): string {
  const text = typeof value === 'number' ? String(value) : value;
  if (typeof text !== 'string') throw new OptionsError(at, 'an address: HOST:PORT, [V6]:PORT or unix:/path', value);
  try {
    parseListenAddress(text);
  } catch (err) {
    throw new OptionsError(at, 'an address: HOST:PORT, [V6]:PORT or unix:/path', (err as Error).message);
  }
  return text;
}

/**
 * Options naming files or directories: a relative path in the file is relative to the
 * file's own directory, so a configuration means the same from any working directory
 * (systemd starts services in /).
 */
const PATH_KEYS = new Set(['cert', 'key', 'ca', 'outboundCa', 'static']);

function besideFile(file: string, value: unknown): unknown {
  return typeof value === 'string' && value !== '' && !path.isAbsolute(value) ? path.resolve(path.dirname(file), value) : value;
}

function stringAt(value: unknown, at: string): string {
  if (typeof value !== 'string' || value === '') throw new OptionsError(at, 'a non-empty string', value);
  return value;
}

function integerAt(value: unknown, at: string, min: number, max: number, or = ''): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new OptionsError(at, `${or}an integer from ${min} to ${max}`, value);
  }
  return value;
}

/** The keys the file takes, for the JSON Schema generator (scripts/gen-schema.ts) and its test. */
export const CONFIG_KEYS: {
  readonly top: ReadonlySet<string>;
  readonly perProcess: ReadonlySet<string>;
  readonly outboundOnly: ReadonlySet<string>;
  readonly outboundSchemes: readonly string[];
} = { top: TOP_KEYS, perProcess: PER_PROCESS, outboundOnly: OUTBOUND_KEYS, outboundSchemes: Object.keys(KIND_OF_SCHEME) };

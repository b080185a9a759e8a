/**
 * The one options normaliser of the gateways (DESIGN.md: options are normalised once).
 * Every option is described once in {@link OPTION_SPECS}: its camelCase name (library
 * API), its flag (CLI, and the config-file key: the flag without dashes), its type,
 * range and default. The CLIs build their flags from this table, and the library API,
 * the CLIs and a config file all go through {@link normalizeGatewayOptions}, which
 * returns a frozen object or throws an {@link OptionsError} naming the option.
 */
import type tls from 'node:tls';
import type http from 'node:http';
import { DEFAULT_MAX_PAYLOAD } from '../src/frame.js';
import { MAX_SERVICE_NAME_LENGTH, resolveRundir, serviceNameProblem } from '../src/rundir.js';
import { silentLogger, type Logger } from '../src/log.js';
import { parseListenAddress, type ListenAddress } from './listen.js';
import type { TlsServerSettings } from './tls-material.js';
import type { GatewayMetrics } from './metrics.js';
import { DEFAULT_TRUSTED_PROXIES, FORWARDED_HEADERS, TrustedProxies, type ForwardedHeader } from './client-address.js';

/** The gateway kinds; each option says which kinds take it. */
export type GatewayKind = 'tcp' | 'tls' | 'ws';

type SpecType =
  | { type: 'integer'; min: number; max: number }
  | { type: 'boolean' }
  | { type: 'string' }
  | { type: 'enum'; values: readonly string[] }
  /** A list of strings: an array, or comma-separated text. */
  | { type: 'list' }
  /** Listen addresses: PORT, HOST:PORT, [V6]:PORT, as text or numbers. */
  | { type: 'listen' }
  /** Names, or '*'. */
  | { type: 'allow' }
  /** A directory, or false for none. */
  | { type: 'directory-or-false' };

export type OptionSpec = SpecType & {
  /** Library name (camelCase); the flag and config key are its kebab-case. */
  key: string;
  /** What the flag takes, for --help (`<ms>`); absent for booleans. */
  arg?: string;
  help: string;
  kinds: readonly GatewayKind[];
  /** Shown in --help; the normaliser applies the real default. */
  defaultText?: string;
};

const ALL: readonly GatewayKind[] = ['tcp', 'tls', 'ws'];
const TLS: readonly GatewayKind[] = ['tls', 'ws'];
const MS_MAX = 24 * 3600 * 1000;
export const TLS_VERSIONS = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'] as const;

/** Every option of every gateway, once. */
export const OPTION_SPECS: readonly OptionSpec[] = [
  { key: 'listen', type: 'listen', arg: '<address...>', kinds: ALL, help: 'PORT, HOST:PORT, [V6]:PORT or unix:/path; repeatable (default $ADDRESS)' },
  { key: 'service', type: 'string', arg: '<name>', kinds: ALL, help: 'fixed target: every client reaches this service' },
  { key: 'allow', type: 'allow', arg: '<names>', kinds: ALL, help: "client-named targets: comma-separated names, or '*' for any valid name" },
  { key: 'rundir', type: 'string', arg: '<dir>', kinds: ALL, help: 'run directory', defaultText: '$RUNDIR or /tmp/.libipc-run/' },
  { key: 'maxPayload', type: 'integer', min: 0, max: 0xffff_ffff, arg: '<bytes>', kinds: ALL, help: 'largest libipc payload passed', defaultText: String(DEFAULT_MAX_PAYLOAD) },
  { key: 'handshakeTimeout', type: 'integer', min: 1, max: MS_MAX, arg: '<ms>', kinds: ALL, help: 'time a client has from accept to the end of its handshakes (TLS, name, HTTP upgrade)', defaultText: '5000' },
  { key: 'maxConnections', type: 'integer', min: 1, max: 10_000_000, arg: '<n>', kinds: ALL, help: 'concurrent client connections, handshakes included', defaultText: '10000' },
  { key: 'maxNameLength', type: 'integer', min: 1, max: MAX_SERVICE_NAME_LENGTH, arg: '<bytes>', kinds: ALL, help: 'longest service name a client may send', defaultText: String(MAX_SERVICE_NAME_LENGTH) },
  { key: 'drainTimeout', type: 'integer', min: 0, max: MS_MAX, arg: '<ms>', kinds: ALL, help: 'on SIGTERM, time open connections get to finish', defaultText: '10000' },
  { key: 'halfCloseTimeout', type: 'integer', min: 0, max: MS_MAX, arg: '<ms>', kinds: ALL, help: 'time the other direction gets after a half-close', defaultText: '5000' },
  { key: 'idleTimeout', type: 'integer', min: 0, max: MS_MAX, arg: '<ms>', kinds: ALL, help: 'close a connection after this long without traffic (0: never)', defaultText: '0' },
  { key: 'directRead', type: 'boolean', kinds: ALL, help: 'read service sockets into a buffer per connection (net onread): less CPU per message, 128 KiB more memory per connection' },
  { key: 'dataPlane', type: 'enum', values: ['js', 'native'], arg: '<js|native>', kinds: ['tcp'], help: 'what moves the bytes of switched connections: the native epoll thread of the addon (falls back to js with a warning when the addon is absent), or the JS switch', defaultText: 'native, or $LIBIPC_DATA_PLANE' },
  { key: 'backlog', type: 'integer', min: 1, max: 65535, arg: '<n>', kinds: ALL, help: 'listen() backlog', defaultText: '511' },
  { key: 'name', type: 'list', arg: '<names>', kinds: ALL, help: 'outbound Unix service name(s)', defaultText: '$IPC_SERVICE_NAME or the gateway kind' },
  { key: 'outbound', type: 'boolean', kinds: ALL, help: 'serve the outbound Unix service(s) ipcd uses to reach remote gateways' },
  { key: 'outboundOnly', type: 'boolean', kinds: ALL, help: 'serve only the outbound Unix service (no --listen)' },
  { key: 'outboundCa', type: 'string', arg: '<file>', kinds: ALL, help: 'CA bundle to verify remote TLS gateways (default: system CAs)' },
  { key: 'acceptProxy', type: 'boolean', kinds: ALL, help: 'read a PROXY protocol header (v1 or v2) from peers in --trusted-proxies before anything else; their connections must send one' },
  { key: 'forwardedHeader', type: 'enum', values: FORWARDED_HEADERS, arg: '<header>', kinds: ['ws'], help: 'with --trusted-proxies: the header those HTTP proxies write the client address in (x-forwarded-for or forwarded); the other is ignored, since a client can forge it', defaultText: 'x-forwarded-for' },
  { key: 'trustedProxies', type: 'list', arg: '<cidrs>', kinds: ALL, help: 'comma-separated addresses or CIDR ranges of the proxies trusted with --accept-proxy (wsd: giving it also trusts their Forwarded / X-Forwarded-For)', defaultText: '127.0.0.0/8,::1' },
  { key: 'sendProxyV2', type: 'boolean', kinds: ALL, help: 'outbound: send a PROXY protocol v2 header to remote gateways (as HAProxy\'s send-proxy-v2)' },
  { key: 'maxConnectionsPerIp', type: 'integer', min: 0, max: 10_000_000, arg: '<n>', kinds: ALL, help: 'concurrent connections per client address (the PROXY or forwarded one when given; 0: no limit)', defaultText: '0' },
  { key: 'connectRatePerIp', type: 'integer', min: 0, max: 1_000_000, arg: '<n>', kinds: ALL, help: 'new connections per second per client address, burst as many (0: no limit)', defaultText: '0' },
  { key: 'cert', type: 'string', arg: '<file>', kinds: TLS, help: 'PEM certificate chain (wsd: turns on wss)' },
  { key: 'key', type: 'string', arg: '<file>', kinds: TLS, help: 'PEM private key' },
  { key: 'ca', type: 'string', arg: '<file>', kinds: TLS, help: 'PEM CA bundle client certificates must chain to' },
  { key: 'requireClientCert', type: 'boolean', kinds: TLS, help: 'refuse clients without a certificate signed by --ca' },
  { key: 'allowCn', type: 'list', arg: '<names>', kinds: TLS, help: 'comma-separated client certificate CNs allowed' },
  { key: 'allowSan', type: 'list', arg: '<names>', kinds: TLS, help: 'comma-separated client certificate SANs allowed (DNS:x, IP:x or bare)' },
  { key: 'minVersion', type: 'enum', values: TLS_VERSIONS, arg: '<version>', kinds: TLS, help: 'lowest TLS version', defaultText: 'TLSv1.2' },
  { key: 'watchCerts', type: 'boolean', kinds: TLS, help: 'reload certificate, key and CA when the files change (SIGHUP always reloads)' },
  { key: 'text', type: 'boolean', kinds: ['ws'], help: 'send replies as text messages when they are valid UTF-8 (default binary)' },
  { key: 'origin', type: 'list', arg: '<origins>', kinds: ['ws'], help: 'comma-separated Origin values allowed (default any)' },
  { key: 'pingInterval', type: 'integer', min: 0, max: MS_MAX, arg: '<ms>', kinds: ['ws'], help: 'ping every ms, drop peers that miss a pong (0: off)', defaultText: '30000' },
  { key: 'static', type: 'directory-or-false', arg: '<dir>', kinds: ['ws'], help: 'directory served over HTTP (false / --no-static: none, plain HTTP requests get 426)', defaultText: 'the bundled page' },
];

/** What a caller may pass: every option by its library name (plus what only a library has). */
export interface GatewayInput {
  listen?: ReadonlyArray<string | number | ListenAddress> | string | number;
  service?: string;
  allow?: readonly string[] | string;
  rundir?: string;
  maxPayload?: number;
  handshakeTimeout?: number;
  maxConnections?: number;
  maxNameLength?: number;
  drainTimeout?: number;
  halfCloseTimeout?: number;
  idleTimeout?: number;
  directRead?: boolean;
  dataPlane?: 'js' | 'native';
  backlog?: number;
  name?: readonly string[] | string;
  outbound?: boolean;
  outboundOnly?: boolean;
  outboundCa?: string;
  acceptProxy?: boolean;
  forwardedHeader?: ForwardedHeader;
  trustedProxies?: readonly string[] | string;
  sendProxyV2?: boolean;
  maxConnectionsPerIp?: number;
  connectRatePerIp?: number;
  cert?: string;
  key?: string;
  ca?: string;
  requireClientCert?: boolean;
  allowCn?: readonly string[] | string;
  allowSan?: readonly string[] | string;
  minVersion?: tls.SecureVersion;
  watchCerts?: boolean;
  text?: boolean;
  origin?: readonly string[] | string;
  pingInterval?: number;
  static?: string | false | null;
  /** Library only: where log lines go (default: nowhere). */
  logger?: Logger;
  /** Library only (ws): attach to this HTTP(S) server's upgrades instead of listening. */
  server?: http.Server;
  /** Library only: where connections are counted (default: a registry of the gateway's own). */
  metrics?: GatewayMetrics;
}

/** Options after normalisation: complete, checked, frozen. */
export interface GatewayOptions {
  readonly kind: GatewayKind;
  readonly listen: readonly ListenAddress[];
  readonly service: string | undefined;
  readonly allow: ReadonlySet<string> | '*';
  readonly rundir: string;
  readonly maxPayload: number;
  readonly handshakeTimeout: number;
  readonly maxConnections: number;
  readonly maxNameLength: number;
  readonly drainTimeout: number;
  readonly halfCloseTimeout: number;
  readonly idleTimeout: number;
  readonly directRead: boolean;
  /** What moves switched bytes (tcp): `native` asks for the addon's data plane (src/dataplane.ts). */
  readonly dataPlane: 'js' | 'native';
  readonly backlog: number;
  /** Outbound Unix services served (empty: none). */
  readonly outboundNames: readonly string[];
  /** The outbound names were asked for (--name, --outbound-only): one in use is an error, not a warning. */
  readonly outboundRequired: boolean;
  readonly outboundSchemes: readonly string[];
  readonly outboundCa: string | undefined;
  /** Read a PROXY header from trusted peers first. */
  readonly acceptProxy: boolean;
  /** Peers trusted with PROXY headers (and, with {@link trustForwarded}, forwarding headers). */
  readonly trustedProxies: TrustedProxies;
  /** --trusted-proxies was given: wsd reads Forwarded / X-Forwarded-For from trusted peers. */
  readonly trustForwarded: boolean;
  /** The one forwarding header read from trusted proxies (wsd). */
  readonly forwardedHeader: ForwardedHeader;
  readonly sendProxyV2: boolean;
  readonly maxConnectionsPerIp: number;
  readonly connectRatePerIp: number;
  readonly tls: TlsServerSettings | undefined;
  readonly watchCerts: boolean;
  readonly text: boolean;
  readonly origins: readonly string[];
  readonly pingInterval: number;
  readonly staticDir: string | null;
  readonly server: http.Server | undefined;
  readonly logger: Logger;
  readonly metrics: GatewayMetrics | undefined;
}

/** A refused option: `path` is the option's name (or its config-file path). */
export class OptionsError extends TypeError {
  readonly path: string;
  readonly expected: string;

  constructor(path: string, expected: string, got?: unknown) {
    super(`${path}: expected ${expected}${got === undefined ? '' : `, got ${describe(got)}`}`);
    this.name = 'OptionsError';
    this.path = path;
    this.expected = expected;
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(describe).join(', ')}]`;
  return String(value);
}

/** The flag of an option (`maxPayload` -> `max-payload`). */
export function flagOf(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The outbound service names and schemes of each kind (tcpd: tcp; wsd: ws and wss). */
export const OUTBOUND_SCHEMES: Record<GatewayKind, readonly string[]> = { tcp: ['tcp'], tls: ['tls'], ws: ['ws', 'wss'] };

const SPEC_BY_KEY = new Map(OPTION_SPECS.map((s) => [s.key, s]));
const LIBRARY_ONLY = new Set(['logger', 'server', 'metrics']);

/** Checks one value against its spec; returns it in its normal form. */
function checkValue(spec: OptionSpec, value: unknown, path: string): unknown {
  switch (spec.type) {
    case 'integer':
      if (typeof value !== 'number' || !Number.isInteger(value) || value < spec.min || value > spec.max) {
        throw new OptionsError(path, `an integer from ${spec.min} to ${spec.max}`, value);
      }
      return value;
    case 'boolean':
      if (typeof value !== 'boolean') throw new OptionsError(path, 'true or false', value);
      return value;
    case 'string':
      if (typeof value !== 'string' || value === '') throw new OptionsError(path, 'a non-empty string', value);
      return value;
    case 'enum':
      if (typeof value !== 'string' || !spec.values.includes(value)) throw new OptionsError(path, `one of ${spec.values.join(', ')}`, value);
      return value;
    case 'list':
    case 'allow':
      return toList(value, path);
    case 'listen':
      return toListenAddresses(value, path);
    case 'directory-or-false':
      if (value === false || value === null) return null;
      if (typeof value !== 'string' || value === '') throw new OptionsError(path, 'a directory or false', value);
      return value;
  }
}

function toList(value: unknown, path: string): string[] {
  const items = typeof value === 'string' ? value.split(',') : value;
  if (!Array.isArray(items) || items.some((v) => typeof v !== 'string')) throw new OptionsError(path, 'a list of strings', value);
  return (items as string[]).map((s) => s.trim()).filter((s) => s !== '');
}

function toListenAddresses(value: unknown, path: string): ListenAddress[] {
  const items = Array.isArray(value) ? value : [value];
  return items.map((item, i) => {
    const where = Array.isArray(value) ? `${path}[${i}]` : path;
    if (typeof item === 'number') {
      if (!Number.isInteger(item) || item < 0 || item > 65535) throw new OptionsError(where, 'a port from 0 to 65535', item);
      return { host: undefined, port: item };
    }
    if (typeof item === 'string') {
      try {
        return parseListenAddress(item);
      } catch (err) {
        throw new OptionsError(where, 'PORT, HOST:PORT, [V6]:PORT or unix:/path', item);
      }
    }
    if (item !== null && typeof item === 'object' && typeof (item as ListenAddress).port === 'number') {
      const { host, port, path: socketPath } = item as ListenAddress;
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new OptionsError(`${where}.port`, 'a port from 0 to 65535', port);
      return socketPath === undefined ? { host, port } : { host: undefined, port: 0, path: socketPath };
    }
    throw new OptionsError(where, 'PORT, HOST:PORT or [V6]:PORT', item);
  });
}

/** Listen addresses written the same way (same host and port) appear once. */
function addressKey(a: ListenAddress): string {
  return a.path !== undefined ? `unix:${a.path}` : `${a.host ?? '*'}|${a.port}`;
}

/**
 * Checks and completes the options of a `kind` gateway. Unknown options, wrong types,
 * out-of-range numbers, duplicate listen addresses, both `service` and `allow`, or
 * neither (for a gateway with listeners) are refused.
 * @param at how errors name an option (the CLI says `--max-payload`, a config file
 *   `gateways[2].max-payload`; default: the library name).
 * @throws OptionsError
 */
export function normalizeGatewayOptions(kind: GatewayKind, input: GatewayInput, at: (key: string) => string = (key) => key): GatewayOptions {
  const values: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(input)) {
    if (value === undefined) continue;
    if (LIBRARY_ONLY.has(key)) continue;
    const spec = SPEC_BY_KEY.get(key);
    if (spec === undefined || !spec.kinds.includes(kind)) throw new OptionsError(at(key), `an option of a ${kind} gateway`, `unknown option ${key}`);
    values[key] = checkValue(spec, value, at(key));
  }
  if (input.server !== undefined && kind !== 'ws') throw new OptionsError(at('server'), 'an option of a ws gateway', 'server');
  // The application's HTTP server reads its connections itself: a PROXY header would reach its parser.
  if (input.server !== undefined && values['acceptProxy'] === true) {
    throw new OptionsError(at('acceptProxy'), 'no accept-proxy with server (the application\'s server reads the connection first)', true);
  }

  const listen = (values['listen'] as ListenAddress[] | undefined) ?? [];
  const seen = new Set<string>();
  for (const address of listen) {
    const key = addressKey(address);
    if (seen.has(key)) throw new OptionsError(at('listen'), 'each address once', `${key.replace('|', ':')} twice`);
    seen.add(key);
  }
  const outboundOnly = values['outboundOnly'] === true;
  const outbound = (values['outbound'] as boolean | undefined) ?? outboundOnly;
  if (outboundOnly) {
    if (listen.length > 0) throw new OptionsError(at('outboundOnly'), 'no listen address with outbound-only', listen.length);
    if (!outbound) throw new OptionsError(at('outbound'), 'true with outbound-only', false);
  }

  const service = values['service'] as string | undefined;
  const allowList = values['allow'] as string[] | undefined;
  if (service !== undefined && allowList !== undefined && allowList.length > 0) {
    throw new OptionsError(at('allow'), 'one of service (fixed target) or allow (client-named targets), not both', allowList);
  }
  const serves = listen.length > 0 || input.server !== undefined;
  if (serves && service === undefined && !allowList?.length) {
    throw new OptionsError(at('service'), 'service NAME or allow NAMES (or "*")');
  }
  if (service !== undefined) {
    const problem = serviceNameProblem(service);
    if (problem) throw new OptionsError(at('service'), 'a valid service name', `${service} (${problem})`);
  }
  const allow: ReadonlySet<string> | '*' = allowList?.length === 1 && allowList[0] === '*' ? '*' : new Set(allowList ?? []);
  if (allow !== '*') {
    for (const name of allow) {
      const problem = serviceNameProblem(name);
      if (problem) throw new OptionsError(at('allow'), "valid service names or '*'", `${name} (${problem})`);
    }
  }

  const tlsSettings = tlsFrom(kind, values, at);
  const trustedList = values['trustedProxies'] as string[] | undefined;
  let trustedProxies: TrustedProxies;
  try {
    trustedProxies = new TrustedProxies(trustedList ?? DEFAULT_TRUSTED_PROXIES);
  } catch (err) {
    throw new OptionsError(at('trustedProxies'), 'addresses or CIDR ranges (10.0.0.0/8, ::1)', trustedList);
  }
  const name = values['name'] as string[] | undefined;
  const integer = (key: string, fallback: number) => (values[key] as number | undefined) ?? fallback;
  const options: GatewayOptions = {
    kind,
    listen,
    service,
    allow,
    rundir: (values['rundir'] as string | undefined) ?? resolveRundir(),
    maxPayload: integer('maxPayload', DEFAULT_MAX_PAYLOAD),
    handshakeTimeout: integer('handshakeTimeout', 5000),
    maxConnections: integer('maxConnections', 10_000),
    maxNameLength: integer('maxNameLength', MAX_SERVICE_NAME_LENGTH),
    drainTimeout: integer('drainTimeout', 10_000),
    halfCloseTimeout: integer('halfCloseTimeout', 5000),
    idleTimeout: integer('idleTimeout', 0),
    directRead: values['directRead'] === true,
    dataPlane: dataPlaneOf(kind, values['dataPlane'] as 'js' | 'native' | undefined),
    backlog: integer('backlog', 511),
    outboundNames: outbound ? (name?.length ? name : [...OUTBOUND_SCHEMES[kind]]) : [],
    outboundRequired: outboundOnly || !!name?.length,
    outboundSchemes: OUTBOUND_SCHEMES[kind],
    outboundCa: values['outboundCa'] as string | undefined,
    acceptProxy: values['acceptProxy'] === true,
    trustedProxies,
    trustForwarded: trustedList !== undefined,
    forwardedHeader: (values['forwardedHeader'] as ForwardedHeader | undefined) ?? 'x-forwarded-for',
    sendProxyV2: values['sendProxyV2'] === true,
    maxConnectionsPerIp: integer('maxConnectionsPerIp', 0),
    connectRatePerIp: integer('connectRatePerIp', 0),
    tls: tlsSettings,
    watchCerts: values['watchCerts'] === true,
    text: values['text'] === true,
    origins: Object.freeze((values['origin'] as string[] | undefined) ?? []),
    pingInterval: integer('pingInterval', 30_000),
    staticDir: values['static'] === undefined ? null : (values['static'] as string | null),
    server: input.server,
    logger: input.logger ?? silentLogger,
    metrics: input.metrics,
  };
  Object.freeze(options.listen);
  Object.freeze(options.outboundNames);
  return Object.freeze(options);
}

/**
 * The data plane asked for: the option, else LIBIPC_DATA_PLANE (js or native), else native for
 * tcp gateways (the byte-transparent switch; TLS and WebSocket translate in JS). The variable
 * lets a whole test run use the JS switch without changing a test.
 */
function dataPlaneOf(kind: GatewayKind, value: 'js' | 'native' | undefined): 'js' | 'native' {
  if (value !== undefined) return value;
  if (kind !== 'tcp') return 'js';
  return process.env['LIBIPC_DATA_PLANE'] === 'js' ? 'js' : 'native';
}

function tlsFrom(kind: GatewayKind, values: Record<string, unknown>, at: (key: string) => string): TlsServerSettings | undefined {
  const cert = values['cert'] as string | undefined;
  const key = values['key'] as string | undefined;
  const clientChecks = ['ca', 'requireClientCert', 'allowCn', 'allowSan', 'minVersion', 'watchCerts'].filter((k) => values[k] !== undefined);
  if (cert === undefined && key === undefined) {
    if (kind === 'tls') throw new OptionsError(at('cert'), 'cert and key files');
    if (clientChecks.length > 0) throw new OptionsError(at(clientChecks[0]!), 'cert and key with it (they turn on wss)');
    return undefined;
  }
  if (cert === undefined) throw new OptionsError(at('cert'), 'a certificate file with key');
  if (key === undefined) throw new OptionsError(at('key'), 'a key file with cert');
  const restricts = (values['allowCn'] as string[] | undefined)?.length || (values['allowSan'] as string[] | undefined)?.length;
  if ((values['requireClientCert'] === true || restricts) && values['ca'] === undefined) {
    throw new OptionsError(at('ca'), 'a CA file for client certificate checks (require-client-cert, allow-cn, allow-san)');
  }
  return Object.freeze({
    cert,
    key,
    ...(values['ca'] !== undefined ? { ca: values['ca'] as string } : {}),
    ...(values['requireClientCert'] === true ? { requireClientCert: true } : {}),
    ...(values['allowCn'] !== undefined ? { allowCn: values['allowCn'] as string[] } : {}),
    ...(values['allowSan'] !== undefined ? { allowSan: values['allowSan'] as string[] } : {}),
    ...(values['minVersion'] !== undefined ? { minVersion: values['minVersion'] as tls.SecureVersion } : {}),
  });
}

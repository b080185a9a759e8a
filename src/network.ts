/**
 * IPC_NETWORK routes and gateway URIs (PROTOCOL.md §4).
 *
 * IPC_NETWORK holds entries separated by `;`, each `<service> <target> [ignored...]`;
 * the last entry naming the service wins. The original does not trim entries (so `a; b`
 * never matches `b`); we trim whitespace around entries and tokens.
 * A target is `unix://NAME` (a local service) or `<scheme>://host:port/path`, handed to
 * the local gateway serving `<scheme>` (tcp, tls, ws, wss).
 */
import { ErrorCode, IpcError, ipcError } from './errors.js';
import { serviceNameProblem } from './rundir.js';

export interface NetworkEntry {
  service: string;
  target: string;
}

/** Parses IPC_NETWORK into its entries, in order (entries without a target are skipped). */
export function parseNetwork(network: string): NetworkEntry[] {
  const entries: NetworkEntry[] = [];
  for (const raw of network.split(';')) {
    const tokens = raw.trim().split(/\s+/);
    const [service, target] = tokens;
    if (service && target) entries.push({ service, target });
  }
  return entries;
}

/** The target of the last entry naming `service`, or null. */
export function routeFor(service: string, network: string): string | null {
  let found: string | null = null;
  for (const entry of parseNetwork(network)) if (entry.service === service) found = entry.target;
  return found;
}

/** A lookup request as ipcd receives it: `<service>;<IPC_NETWORK>`. */
export interface LookupRequest {
  service: string;
  network: string;
}

/** @throws IpcError `IPC_ERR_INVALID_URI` when there is no `;` (nothing to route with). */
export function parseLookup(payload: string): LookupRequest {
  const semicolon = payload.indexOf(';');
  if (semicolon === -1) throw ipcError(ErrorCode.INVALID_URI, `lookup without ';': ${JSON.stringify(payload.slice(0, 80))}`);
  return { service: payload.slice(0, semicolon), network: payload.slice(semicolon + 1) };
}

/** The lookup payload a client sends to ipcd. */
export function formatLookup(service: string, network: string): string {
  return `${service};${network}`;
}

export type Target =
  | { scheme: 'unix'; name: string; uri: string }
  | { scheme: string; host: string; port: number; path: string; uri: string };

/**
 * Parses a target. `unix://NAME` needs a valid service name; `<scheme>://host:port/path`
 * needs a scheme that is a valid service name (it names the local gateway), a host, a
 * numeric port and a non-empty path (the remote service; the remote gateway validates it).
 * @throws IpcError `IPC_ERR_INVALID_URI` saying what is wrong.
 */
export function parseTarget(uri: string): Target {
  const bad = (why: string) => ipcError(ErrorCode.INVALID_URI, `invalid target ${JSON.stringify(uri)}: ${why}`);
  const sep = uri.indexOf('://');
  if (sep <= 0) throw bad("no '<scheme>://'");
  const scheme = uri.slice(0, sep);
  const rest = uri.slice(sep + 3);
  if (serviceNameProblem(scheme) !== null) throw bad('bad scheme');
  if (scheme === 'unix') {
    const problem = serviceNameProblem(rest);
    if (problem) throw bad(`bad service name (${problem})`);
    return { scheme, name: rest, uri };
  }
  const slash = rest.indexOf('/');
  if (slash === -1) throw bad('no /path naming the remote service');
  const authority = rest.slice(0, slash);
  const path = rest.slice(slash + 1);
  if (path === '') throw bad('empty path');
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(authority);
  if (!m) throw bad('expected host:port');
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw bad('port out of range');
  return { scheme, host: (m[1] ?? m[2])!, port, path, uri };
}

/** True for errors this module raises. */
export function isUriError(err: unknown): err is IpcError {
  return err instanceof IpcError && err.code === ErrorCode.INVALID_URI;
}

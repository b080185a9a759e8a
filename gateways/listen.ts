/**
 * Listen addresses as written on a command line: `PORT`, `HOST:PORT`, `[V6]:PORT`, or
 * `unix:/path` (a Unix socket, mode 0660, for nginx or a local proxy in front).
 * A bare port listens on every interface, as `socat TCP-LISTEN:PORT` or HAProxy's
 * `bind :PORT` do; give a host to restrict it.
 */
export interface ListenAddress {
  /** undefined: every interface (IPv6 and IPv4). */
  host: string | undefined;
  port: number;
  /** A Unix socket path instead of host and port. */
  path?: string;
}

/** `unix:` followed by an absolute path. */
const UNIX_PREFIX = 'unix:';

/** Parses one listen address. @throws TypeError with the offending text. */
export function parseListenAddress(text: string): ListenAddress {
  const trimmed = text.trim();
  if (trimmed.startsWith(UNIX_PREFIX)) {
    const socketPath = trimmed.slice(UNIX_PREFIX.length);
    if (!socketPath.startsWith('/') || socketPath.includes('\0') || Buffer.byteLength(socketPath) > 107) {
      throw new TypeError(`invalid listen address '${text}': use unix:/absolute/path (at most 107 bytes)`);
    }
    return { host: undefined, port: 0, path: socketPath };
  }
  let host: string | undefined;
  let portText: string;
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(trimmed);
  if (bracketed) {
    host = bracketed[1];
    portText = bracketed[2]!;
  } else if (/^\d+$/.test(trimmed)) {
    portText = trimmed;
  } else {
    const colon = trimmed.lastIndexOf(':');
    if (colon <= 0 || trimmed.indexOf(':') !== colon) {
      throw new TypeError(`invalid listen address '${text}': use PORT, HOST:PORT or [IPV6]:PORT`);
    }
    host = trimmed.slice(0, colon);
    portText = trimmed.slice(colon + 1);
  }
  if (!/^\d+$/.test(portText)) throw new TypeError(`invalid port in listen address '${text}'`);
  const port = Number(portText);
  if (port > 65535) throw new TypeError(`port out of range in listen address '${text}'`);
  return { host, port };
}

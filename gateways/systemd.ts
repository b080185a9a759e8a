/**
 * Listening sockets passed by systemd (sd_listen_fds(3), socket activation): when
 * LISTEN_PID is our pid, descriptors 3 .. 3+LISTEN_FDS-1 are listening sockets, named by
 * LISTEN_FDNAMES (the socket unit's FileDescriptorName=, colon-separated). Each becomes a
 * net.Server and is matched to a configured listen address:
 *   - by name: the listen key (gateways/gateway.ts listenKey) with its colons written as
 *     `_`, since systemd forbids `:` in names: `127.0.0.1_8998`, `*_8998`, `unix_/run/x.sock`;
 *   - else by the address the socket is bound to (`127.0.0.1:8998`; `[::]:8998` or
 *     `0.0.0.0:8998` for a bare port; the path of a Unix socket).
 * The matched servers go to Gateway.listen(pool), as a reload's kept sockets do; a
 * passed socket no configured address wants is refused (the caller exits), since serving
 * a port the operator opened for something else, or silently not serving it, are both wrong.
 */
import net from 'node:net';
import { readFileSync, readlinkSync } from 'node:fs';
import { listenKey } from './gateway.js';
import type { ListenAddress } from './listen.js';

const SD_LISTEN_FDS_START = 3;

/** A listening socket passed by systemd, already a listening net.Server. */
export interface PassedSocket {
  fd: number;
  /** Its FileDescriptorName (systemd's default is the socket unit's name). */
  name: string;
  /** What it is bound to, for logs and matching: `127.0.0.1:8998`, `unix:/path`. */
  bound: string;
  server: net.Server;
}

/** Passed sockets that match no configured address, or a malformed LISTEN_* environment. */
export class ListenFdsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ListenFdsError';
  }
}

/**
 * Takes the sockets systemd passed to this process, if any (`onError` gets their
 * listener errors), and removes LISTEN_PID,
 * LISTEN_FDS and LISTEN_FDNAMES from the environment (processes we start must not take
 * them as theirs). Connections that arrive before a gateway takes a socket wait in
 * {@link PassedSockets.flush}. @throws ListenFdsError when a descriptor is not a
 * listening stream socket.
 */
export function takeListenFds(onError: (err: Error, socket: PassedSocket) => void, env: NodeJS.ProcessEnv = process.env, pid = process.pid): PassedSockets {
  const listenPid = env['LISTEN_PID'];
  const count = env['LISTEN_FDS'];
  const names = env['LISTEN_FDNAMES'];
  delete env['LISTEN_PID'];
  delete env['LISTEN_FDS'];
  delete env['LISTEN_FDNAMES'];
  if (listenPid === undefined || count === undefined || Number(listenPid) !== pid) return new PassedSockets([]);
  if (!/^\d+$/.test(count) || Number(count) > 1024) throw new ListenFdsError(`LISTEN_FDS: expected a count of descriptors, got ${JSON.stringify(count)}`);
  const nameList = names === undefined ? [] : names.split(':');
  const sockets: PassedSocket[] = [];
  for (let i = 0; i < Number(count); i++) {
    const fd = SD_LISTEN_FDS_START + i;
    const bound = boundAddressOf(fd);
    const server = net.createServer({ allowHalfOpen: true, noDelay: true });
    const socket: PassedSocket = { fd, name: nameList[i] ?? 'unknown', bound, server };
    // As for the sockets we bind (listeners.ts): an accept error (EMFILE) is logged, not fatal.
    server.on('error', (err) => onError(err, socket));
    server.listen({ fd });
    sockets.push(socket);
  }
  return new PassedSockets(sockets);
}

/** The passed sockets, holding the connections they accept until a gateway takes them. */
export class PassedSockets {
  readonly sockets: readonly PassedSocket[];
  private readonly waiting = new Map<net.Server, net.Socket[]>();

  constructor(sockets: PassedSocket[]) {
    this.sockets = sockets;
    for (const { server } of sockets) {
      const queue: net.Socket[] = [];
      this.waiting.set(server, queue);
      // A Gateway taking the server replaces this listener (removeAllListeners); until
      // then a client (the one that made systemd start us) waits here, not lost.
      server.on('connection', (socket: net.Socket) => {
        socket.on('error', () => undefined);
        queue.push(socket);
      });
    }
  }

  /**
   * Matches every passed socket to one of `addresses` (all the listen addresses of the
   * configuration). @returns the pool for Gateway.listen, by listen key.
   * @throws ListenFdsError naming every socket that matches nothing.
   */
  match(addresses: readonly ListenAddress[]): Map<string, net.Server> {
    const byName = new Map<string, string>();
    const byBound = new Map<string, string>();
    for (const address of addresses) {
      const key = listenKey(address);
      byName.set(key.replaceAll(':', '_'), key);
      for (const bound of boundFormsOf(address)) byBound.set(bound, key);
    }
    const pool = new Map<string, net.Server>();
    const unmatched: string[] = [];
    for (const socket of this.sockets) {
      const key = byName.get(socket.name) ?? byBound.get(socket.bound);
      if (key === undefined || pool.has(key)) {
        unmatched.push(`fd ${socket.fd} (name ${socket.name}, bound to ${socket.bound})${key !== undefined ? `: ${key} already has a socket` : ''}`);
        continue;
      }
      pool.set(key, socket.server);
    }
    if (unmatched.length > 0) {
      throw new ListenFdsError(
        `systemd passed listening sockets that match no listen address of the configuration: ${unmatched.join('; ')}. ` +
          `Name them (FileDescriptorName=) after a listen address with ':' written as '_' (e.g. 127.0.0.1_8998, unix_/run/gatewayd/tcp.sock), ` +
          `or bind them to the address the configuration lists (configured: ${[...new Set(byName.values())].join(', ') || 'none'})`,
      );
    }
    return pool;
  }

  /** Hands the connections accepted before the gateways took over to them. */
  flush(): void {
    for (const [server, queue] of this.waiting) {
      for (const socket of queue.splice(0)) {
        if (socket.destroyed) continue;
        // The gateway's accept replaced our queueing listener; a server no gateway took
        // (startup failed) has none left to serve the client.
        if (server.listenerCount('connection') > 0) server.emit('connection', socket);
        else socket.destroy();
      }
    }
  }

  /** Closes every passed socket (startup failed). */
  close(): void {
    for (const { server } of this.sockets) server.close();
    for (const queue of this.waiting.values()) for (const socket of queue.splice(0)) socket.destroy();
  }
}

/** How the socket of a configured address reports itself, in {@link boundAddressOf}'s form. */
function boundFormsOf(address: ListenAddress): string[] {
  if (address.path !== undefined) return [`unix:${address.path}`];
  if (address.port === 0) return [];
  if (address.host === undefined) return [`[::]:${address.port}`, `0.0.0.0:${address.port}`];
  return [net.isIPv6(address.host) ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`];
}

/**
 * The address a passed descriptor is bound to, from /proc (Node cannot getsockname a
 * Unix socket it did not bind): `127.0.0.1:8998`, `[::1]:8998`, `unix:/path`.
 * @throws ListenFdsError when `fd` is not a listening TCP or Unix stream socket.
 */
function boundAddressOf(fd: number): string {
  let link: string;
  try {
    link = readlinkSync(`/proc/self/fd/${fd}`);
  } catch (err) {
    throw new ListenFdsError(`LISTEN_FDS: descriptor ${fd} is not open (${(err as NodeJS.ErrnoException).code})`);
  }
  const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
  if (inode === undefined) throw new ListenFdsError(`LISTEN_FDS: descriptor ${fd} is not a socket (${link})`);
  for (const [file, v6] of [['/proc/net/tcp', false], ['/proc/net/tcp6', true]] as const) {
    for (const row of procRows(file)) {
      if (row[9] !== inode) continue;
      if (row[3] !== '0A') throw new ListenFdsError(`LISTEN_FDS: descriptor ${fd} is a TCP socket that is not listening`);
      return tcpAddress(row[1]!, v6);
    }
  }
  for (const row of procRows('/proc/net/unix')) {
    if (row[6] !== inode) continue;
    // Type 0001: SOCK_STREAM; state 01 with the __SO_ACCEPTCON flag (00010000): listening.
    if (row[4] !== '0001' || (parseInt(row[3]!, 16) & 0x10000) === 0) throw new ListenFdsError(`LISTEN_FDS: descriptor ${fd} is a Unix socket that is not a listening stream socket`);
    return `unix:${row[7] ?? '(unnamed)'}`;
  }
  throw new ListenFdsError(`LISTEN_FDS: descriptor ${fd} is not a TCP or Unix stream socket (UDP, netlink...)`);
}

function procRows(file: string): string[][] {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(1).map((r) => r.trim().split(/\s+/));
  } catch {
    return []; // no IPv6 in this kernel, for instance
  }
}

/** `0100007F:1F90` (little-endian words) -> `127.0.0.1:8080`; IPv6 -> `[::1]:8080`. */
function tcpAddress(field: string, v6: boolean): string {
  const [hex, portHex] = field.split(':') as [string, string];
  const port = parseInt(portHex, 16);
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8);
    for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(word.slice(b, b + 2), 16));
  }
  if (!v6) return `${bytes.join('.')}:${port}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  // Shortest form as Node prints it (net.SocketAddress normalises).
  const text = new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
  return `[${text}]:${port}`;
}

/**
 * Binding a gateway's server sockets: one per listen address, each logged as
 * `listening` with its bound address (tests and operators read the port from it).
 */
import cluster from 'node:cluster';
import net from 'node:net';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { formatAddress } from './gateway.js';
import type { ListenAddress } from './listen.js';
import type { Logger } from '../src/log.js';

/** Binds `server` to `address`; rejects with the bind error (EADDRINUSE...). */
export async function bind(server: net.Server, address: ListenAddress, backlog: number): Promise<net.AddressInfo | string> {
  // In a cluster worker the primary binds (and cleared stale files before forking): a
  // probe here would find the socket its sibling already serves through the primary.
  if (address.path !== undefined && !cluster.isWorker) await clearStaleSocket(address.path);
  const bound = await new Promise<net.AddressInfo | string>((resolve, reject) => {
    server.once('error', reject);
    const where = address.path !== undefined ? { path: address.path } : { host: address.host, port: address.port };
    server.listen({ ...where, backlog }, () => {
      server.off('error', reject);
      resolve(server.address() as net.AddressInfo | string);
    });
  });
  // Owner and group may connect, whatever the umask (as libipc's own sockets).
  if (address.path !== undefined) await chmod(address.path, 0o660);
  return bound;
}

/**
 * A socket file left at `socketPath` by a process that died is removed; one that a live
 * process serves, or a file that is not a socket, is refused (never replaced).
 */
export async function clearStaleSocket(socketPath: string): Promise<void> {
  const stat = await lstat(socketPath).catch(() => null);
  if (stat === null) return;
  if (!stat.isSocket()) throw new Error(`cannot listen on unix:${socketPath}: a file that is not a socket is in the way`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path: socketPath });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new Error(`cannot listen on unix:${socketPath}: another process serves it`);
  await unlink(socketPath);
}

/**
 * Creates and binds one server per address with `create`, logging each. On a failure,
 * the servers already bound are closed and the error is thrown.
 */
export async function bindAll<S extends net.Server>(
  addresses: readonly ListenAddress[],
  create: () => S,
  options: { backlog: number; logger: Logger; transport: string },
): Promise<S[]> {
  const servers: S[] = [];
  try {
    for (const address of addresses) {
      const server = create();
      const bound = await bind(server, address, options.backlog);
      server.on('error', (err) => options.logger.error({ err }, 'listener error'));
      servers.push(server);
      options.logger.info(
        typeof bound === 'string'
          ? { address: `unix:${bound}`, path: bound, transport: options.transport }
          : { address: formatAddress(bound), port: bound.port, transport: options.transport },
        'listening',
      );
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
  return servers;
}

/** Closes servers, resolving when they stopped accepting and their sockets are gone. */
export function closeAll(servers: readonly net.Server[]): Promise<void> {
  return Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined);
}

/** `host:port` of a socket's remote end, for logs. */
export function remoteOf(socket: net.Socket): string | undefined {
  if (socket.remoteAddress === undefined) return undefined;
  return formatAddress({ address: socket.remoteAddress, port: socket.remotePort ?? 0, family: socket.remoteFamily ?? 'IPv4' });
}

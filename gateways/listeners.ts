/**
 * Binding a gateway's server sockets: one per listen address, each logged as
 * `listening` with its bound address (tests and operators read the port from it).
 */
import type net from 'node:net';
import { formatAddress } from './gateway.js';
import type { ListenAddress } from './listen.js';
import type { Logger } from '../src/log.js';

/** Binds `server` to `address`; rejects with the bind error (EADDRINUSE...). */
export function bind(server: net.Server, address: ListenAddress, backlog: number): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: address.host, port: address.port, backlog }, () => {
      server.off('error', reject);
      resolve(server.address() as net.AddressInfo);
    });
  });
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
        { address: formatAddress(bound), port: bound.port, transport: options.transport },
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

/**
 * tcpd's inbound side: TCP clients bridged to local services, frames passed unchanged.
 */
import net from 'node:net';
import { GatewayCore, formatAddress, type GatewayOptions } from './gateway.js';
import { serveByteClient } from './byte-client.js';
import type { ListenAddress } from './listen.js';

export interface TcpGatewayOptions extends GatewayOptions {
  /** Where to listen (port 0 picks a free port). */
  listen: readonly ListenAddress[];
  /** listen() backlog (default 511). */
  backlog?: number;
}

/** A TCP gateway; `listen()` binds every address, `close()` drains, `destroy()` cuts. */
export class TcpGateway {
  readonly core: GatewayCore;
  private readonly listenAddresses: readonly ListenAddress[];
  private readonly backlog: number;
  private readonly servers: net.Server[] = [];

  constructor(options: TcpGatewayOptions) {
    this.core = new GatewayCore(options);
    this.listenAddresses = options.listen;
    this.backlog = options.backlog ?? 511;
  }

  /** Bound addresses, once listening. */
  get addresses(): net.AddressInfo[] {
    return this.servers.map((s) => s.address()).filter((a): a is net.AddressInfo => typeof a === 'object' && a !== null);
  }

  /** Binds every listen address; logs `listening` for each. */
  async listen(): Promise<net.AddressInfo[]> {
    const core = this.core;
    const onConnection = function tcpOnConnection(socket: net.Socket) {
      // Registered before anything else can fail: an unhandled socket error kills the daemon.
      socket.on('error', noop);
      const deadline = performance.now() + core.options.handshakeTimeout;
      const info = core.admit(formatAddress({ address: socket.remoteAddress ?? '?', port: socket.remotePort ?? 0, family: socket.remoteFamily ?? 'IPv4' }));
      if (info === null) {
        socket.destroy();
        return;
      }
      serveByteClient(core, socket, info, deadline);
    };
    for (const address of this.listenAddresses) {
      const server = net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: address.host, port: address.port, backlog: this.backlog }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      server.on('error', (err) => core.logger.error({ err }, 'listener error'));
      this.servers.push(server);
      core.logger.info({ address: formatAddress(server.address()), port: (server.address() as net.AddressInfo).port, transport: 'tcp' }, 'listening');
    }
    return this.addresses;
  }

  /** Stops accepting, lets open connections finish within drainTimeout. */
  async close(): Promise<void> {
    await Promise.all([
      ...this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
      this.core.close(),
    ]);
  }

  /** Closes every listener and connection now. */
  destroy(): void {
    for (const s of this.servers) s.close();
    this.core.destroy();
  }
}

function noop(): void {}

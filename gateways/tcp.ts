/**
 * tcpd's inbound side: TCP clients bridged to local services, frames passed unchanged.
 */
import net from 'node:net';
import { GatewayCore, type ConnectionInfo, type GatewayOptions } from './gateway.js';
import { serveByteClient } from './byte-client.js';
import { bindAll, closeAll, remoteOf } from './listeners.js';
import type { ListenAddress } from './listen.js';
import { OutboundService, type OutboundOptions } from './outbound.js';

export interface TcpGatewayOptions extends GatewayOptions {
  /** Where to listen (port 0 picks a free port); empty for an outbound-only gateway. */
  listen: readonly ListenAddress[];
  /** Also serve the outbound Unix service(s) ipcd uses to reach remote gateways. */
  outbound?: OutboundOptions;
  /** listen() backlog (default 511). */
  backlog?: number;
}

/** A TCP gateway; `listen()` binds every address, `close()` drains, `destroy()` cuts. */
export class TcpGateway {
  readonly core: GatewayCore;
  protected readonly options: TcpGatewayOptions;
  private servers: net.Server[] = [];
  /** The outbound Unix service, when asked for. */
  readonly outbound: OutboundService | null;

  constructor(options: TcpGatewayOptions) {
    this.core = new GatewayCore(options);
    this.options = options;
    this.outbound = options.outbound ? new OutboundService(this.core, options.outbound) : null;
  }

  /** Bound addresses, once listening. */
  get addresses(): net.AddressInfo[] {
    return this.servers.map((s) => s.address() as net.AddressInfo);
  }

  /** Transport name in logs. */
  protected get transport(): string {
    return 'tcp';
  }

  /**
   * Serves an admitted client; `deadline` (performance.now() ms) bounds every handshake.
   * tlsd overrides this to run the TLS handshake first.
   */
  protected serve(socket: net.Socket, info: ConnectionInfo, deadline: number): void {
    serveByteClient(this.core, socket, info, deadline);
  }

  /** Binds every listen address; logs `listening` for each. */
  async listen(): Promise<net.AddressInfo[]> {
    const core = this.core;
    const onConnection = (socket: net.Socket) => {
      // Registered before anything else can fail: an unhandled socket error kills the daemon.
      socket.on('error', noop);
      const deadline = performance.now() + core.options.handshakeTimeout;
      const info = core.admit(remoteOf(socket));
      if (info === null) {
        socket.destroy();
        return;
      }
      this.serve(socket, info, deadline);
    };
    // The outbound service first: a gateway that cannot serve it (name in use) fails
    // before logging `listening` for its ports.
    await this.outbound?.start();
    try {
      this.servers = await bindAll(
        this.options.listen,
        () => net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection),
        { backlog: this.options.backlog ?? 511, logger: core.logger, transport: this.transport },
      );
    } catch (err) {
      await this.outbound?.close();
      throw err;
    }
    return this.addresses;
  }

  /** Stops accepting, lets open connections finish within drainTimeout. */
  async close(): Promise<void> {
    await Promise.all([closeAll(this.servers), this.outbound?.close(), this.core.close()]);
  }

  /** Closes every listener and connection now. */
  destroy(): void {
    for (const s of this.servers) s.close();
    void this.outbound?.close();
    this.core.destroy();
  }
}

export function noop(): void {}

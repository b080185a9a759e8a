/**
 * tlsd: TLS termination in front of local services. The TCP gateway with a TLS
 * handshake first: target selection, limits, switch and teardown are tcpd's (the
 * libipc name handshake, when used, runs inside TLS). The handshake timeout covers the
 * TLS handshake plus the name handshake.
 */
import tls from 'node:tls';
import type net from 'node:net';
import { TcpGateway, noop, type TcpGatewayOptions } from './tcp.js';
import { serveByteClient } from './byte-client.js';
import type { ConnectionInfo, GatewayCore } from './gateway.js';
import { ErrorCode, ipcError } from '../src/errors.js';
import { TlsMaterial, clientIdentity, identityProblem, type TlsServerSettings } from './tls-material.js';

export interface TlsGatewayOptions extends TcpGatewayOptions {
  tls: TlsServerSettings;
  /** Reload the TLS files when they change (as SIGHUP does). */
  watchCerts?: boolean;
}

export class TlsGateway extends TcpGateway {
  readonly material: TlsMaterial;

  constructor(options: TlsGatewayOptions) {
    super(options);
    this.material = new TlsMaterial(options.tls, this.core.logger);
    if (options.watchCerts) this.material.watch();
  }

  protected override get transport(): string {
    return 'tls';
  }

  protected override serve(raw: net.Socket, info: ConnectionInfo, deadline: number): void {
    terminateTls(this.core, this.material, raw, info, deadline, (socket, secured) => {
      serveByteClient(this.core, socket, secured, deadline);
    });
  }

  override async close(): Promise<void> {
    this.material.close();
    await super.close();
  }

  override destroy(): void {
    this.material.close();
    super.destroy();
  }
}

/**
 * Runs the server side of a TLS handshake on an admitted client, bounded by `deadline`
 * (performance.now() ms), then checks the client identity against the allow-lists and
 * calls `next` with the TLS socket and the connection info extended with `tls` facts.
 * Any failure closes the client without a byte and logs why. Shared by tlsd and wsd (wss).
 */
export function terminateTls(
  core: GatewayCore,
  material: TlsMaterial,
  raw: net.Socket,
  info: ConnectionInfo,
  deadline: number,
  next: (socket: tls.TLSSocket, info: ConnectionInfo) => void,
): void {
  const settings = material.settings;
  const requestCert = settings.requireClientCert === true || !!settings.allowCn?.length || !!settings.allowSan?.length;
  const socket = new tls.TLSSocket(raw, {
    isServer: true,
    // Read at each handshake: a reload takes effect for new clients only.
    secureContext: material.context,
    requestCert,
    rejectUnauthorized: settings.requireClientCert === true,
  });
  socket.on('error', noop);
  let settled = false;
  const untrack = core.track({
    close(reason: string, err?: Error) {
      refuse(err ?? ipcError(ErrorCode.SHUTDOWN, reason));
    },
  });
  const timer = setTimeout(() => {
    refuse(ipcError(ErrorCode.HANDSHAKE_TIMEOUT, `TLS handshake not finished within ${core.options.handshakeTimeout} ms`));
  }, Math.max(0, deadline - performance.now()));

  function settle(): boolean {
    if (settled) return false;
    settled = true;
    clearTimeout(timer);
    untrack();
    socket.off('error', onTlsError);
    socket.off('close', onTlsClose);
    return true;
  }
  function refuse(err: Error, extra: Record<string, unknown> = {}): void {
    if (!settle()) return;
    socket.destroy();
    raw.destroy();
    core.refuse(info, err, extra);
  }
  function onTlsError(err: Error): void {
    refuse(ipcError(ErrorCode.HANDSHAKE_REFUSED, `TLS handshake failed: ${err.message.trim()}`, err));
  }
  function onTlsClose(): void {
    refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client closed during the TLS handshake'));
  }
  socket.on('error', onTlsError);
  socket.on('close', onTlsClose);
  socket.once('secure', () => {
    const identity = clientIdentity(socket);
    const tlsInfo = {
      protocol: socket.getProtocol(),
      cipher: socket.getCipher()?.name,
      resumed: socket.isSessionReused(),
      ...(identity ? { client: identity } : {}),
    };
    const problem = identityProblem(identity, settings);
    if (problem !== null) {
      refuse(ipcError(ErrorCode.HANDSHAKE_REFUSED, problem), { tls: tlsInfo });
      return;
    }
    if (!settle()) return;
    next(socket, { ...info, tls: tlsInfo });
  });
}

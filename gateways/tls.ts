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
import { Handshake } from './handshake.js';
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
    this.material = new TlsMaterial(options.tls, this.core.logger, this.core.options.handshakeTimeout + 1000);
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

/** A client in its TLS handshake, found again from the TLS socket Node creates for it. */
interface PendingTls {
  secured(socket: tls.TLSSocket): void;
  failed(err: Error): void;
}

const pendingByRaw = new WeakMap<net.Socket, PendingTls>();
const hooked = new WeakSet<tls.Server>();

/**
 * The TLS socket's underlying socket. `_parent` is Node's internal link (the only internal
 * this module touches); if it ever disappears, lookups fail and clients are refused:
 * closed, never let through.
 */
function rawOf(socket: tls.TLSSocket): net.Socket | undefined {
  return (socket as unknown as { _parent?: net.Socket })._parent;
}

function hookServer(server: tls.Server): void {
  if (hooked.has(server)) return;
  hooked.add(server);
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    const raw = rawOf(socket);
    const pending = raw && pendingByRaw.get(raw);
    if (pending) pending.secured(socket);
    else socket.destroy();
  });
  server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
    const raw = rawOf(socket);
    const pending = raw && pendingByRaw.get(raw);
    if (pending) pending.failed(err);
    else socket.destroy();
  });
}

/**
 * Runs the server side of a TLS handshake on an admitted client, bounded by `deadline`
 * (performance.now() ms), then checks the client certificate (Node's verdict against
 * --ca) and identity allow-lists, and calls `next` with the TLS socket and the connection
 * info extended with `tls` facts. Any failure closes the client without a byte and logs
 * why. Shared by tlsd and wsd (wss).
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
  let secureSocket: tls.TLSSocket | null = null;
  const handshake = new Handshake(core, info, () => {
    pendingByRaw.delete(raw);
    secureSocket?.destroy();
    raw.destroy();
  }).expireAt(deadline, 'TLS handshake');
  const refuse = (err: Error, extra?: Record<string, unknown>) => handshake.refuse(err, extra);
  function onRawClose(): void {
    refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client closed during the TLS handshake'));
  }
  raw.on('close', onRawClose);
  pendingByRaw.set(raw, {
    failed(err: Error) {
      refuse(ipcError(ErrorCode.HANDSHAKE_REFUSED, `TLS handshake failed: ${err.message.trim()}`, err));
    },
    secured(socket: tls.TLSSocket) {
      secureSocket = socket;
      socket.on('error', noop);
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
      if (!handshake.settle()) return;
      pendingByRaw.delete(raw);
      raw.off('close', onRawClose);
      // A client's FIN is forwarded as a half-close from here on, as for tcpd.
      socket.allowHalfOpen = true;
      next(socket, { ...info, tls: tlsInfo });
    },
  });
  hookServer(material.server);
  // Not half-open during the handshake: a client's FIN then ends the TLS socket Node
  // creates, which reports it ('tlsClientError'), instead of holding the slot until the
  // deadline. Half-close is given back once the client is secured (below).
  raw.allowHalfOpen = false;
  // Documented for tls.Server: inject an accepted socket; Node runs the handshake.
  material.server.emit('connection', raw);
}

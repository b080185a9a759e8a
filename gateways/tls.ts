/**
 * tlsd: TLS termination in front of local services. The TLS step of a pipeline runs the
 * server side of the handshake on an accepted socket, checks the client's identity, and
 * hands the decrypted socket to the next step (the name handshake for tlsd, the HTTP
 * upgrade for wss). The one deadline of the connection covers the TLS handshake and
 * everything after it until the switch.
 */
import tls from 'node:tls';
import type net from 'node:net';
import { Gateway, GatewayCore, noop, type GatewayPart, type ServeStep } from './gateway.js';
import { nameHandshake } from './byte-client.js';
import type { PendingConnection } from './lifecycle.js';
import type { GatewayMetrics } from './metrics.js';
import { ErrorCode, ipcError } from '../src/errors.js';
import { TlsMaterial, clientIdentity, identityProblem } from './tls-material.js';
import { normalizeGatewayOptions, type GatewayInput, type GatewayOptions } from './options.js';

/** A TLS gateway (tlsd): `listen()` binds, `close()` drains; `material.reload()` is SIGHUP's. */
export interface TlsGateway extends Gateway {
  readonly material: TlsMaterial;
}

/** Creates a TLS gateway (tlsd) from flag-named options; nothing starts before listen(). */
export function createTlsGateway(input: GatewayInput): TlsGateway {
  return tlsGateway(normalizeGatewayOptions('tls', input));
}

/** A TLS gateway from normalised options. @throws Error when the TLS files fail a check. */
export function tlsGateway(options: GatewayOptions): TlsGateway {
  const core = new GatewayCore(options);
  // 0: no handshake timer of Node's per socket; the connection's deadline bounds the handshake.
  const material = new TlsMaterial(options.tls!, core.logger, 0);
  const gateway = new Gateway(core, 'tls', tlsStep(material, nameHandshake(core), core.metrics), certificateWatch(material, options.watchCerts));
  return Object.assign(gateway, { material });
}

/** Watching the certificate files, as a part started by listen() and stopped by close(). */
export function certificateWatch(material: TlsMaterial, enabled: boolean): GatewayPart[] {
  return [{ start: () => (enabled ? material.watch() : undefined), stop: () => material.close() }];
}

/**
 * A client in its TLS handshake, found again from the TLS socket Node creates for it. One
 * object per handshake, with methods rather than closures; forgotten once it is secured or
 * refused, so nothing of it stays with a switched connection.
 */
class TlsHandshake {
  readonly material: TlsMaterial;
  readonly raw: net.Socket;
  readonly pending: PendingConnection;
  readonly next: ServeStep;
  readonly metrics: GatewayMetrics | undefined;

  constructor(material: TlsMaterial, raw: net.Socket, pending: PendingConnection, next: ServeStep, metrics: GatewayMetrics | undefined) {
    this.material = material;
    this.raw = raw;
    this.pending = pending;
    this.next = next;
    this.metrics = metrics;
  }

  /** Holdable: a refusal forgets the handshake. */
  destroy(): void {
    pendingByRaw.delete(this.raw);
  }

  failed(err: Error): void {
    this.metrics?.tlsHandshake(this.pending.labels, 'failed');
    this.pending.refuse(ipcError(ErrorCode.HANDSHAKE_REFUSED, `TLS handshake failed: ${err.message.trim()}`, err));
  }

  secured(socket: tls.TLSSocket): void {
    const { raw, pending, material, metrics } = this;
    pendingByRaw.delete(raw);
    socket.on('error', noop);
    pending.hold(socket);
    if (pending.settled) return;
    // Without a certificate request a client sends none: nothing to look up.
    const identity = material.requestsClientCert ? clientIdentity(socket) : undefined;
    const tlsInfo = {
      protocol: socket.getProtocol(),
      cipher: socket.getCipher()?.name,
      resumed: socket.isSessionReused(),
      ...(identity ? { client: identity } : {}),
    };
    const problem = identityProblem(identity, material.settings);
    if (problem !== null) {
      metrics?.tlsHandshake(pending.labels, 'refused');
      pending.refuse(ipcError(ErrorCode.HANDSHAKE_REFUSED, problem), { tls: tlsInfo });
      return;
    }
    metrics?.tlsHandshake(pending.labels, 'ok');
    raw.off('close', rawClosedInHandshake);
    pending.info['tls'] = tlsInfo;
    // A client's FIN is forwarded as a half-close from here on, as for tcpd.
    socket.allowHalfOpen = true;
    this.next(socket, pending);
  }
}

const pendingByRaw = new WeakMap<net.Socket, TlsHandshake>();
const hooked = new WeakSet<tls.Server>();

/** The 'close' listener of a raw socket in its TLS handshake (shared: `this` is the socket). */
function rawClosedInHandshake(this: net.Socket): void {
  pendingByRaw.get(this)?.pending.refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client closed during the TLS handshake'));
}

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
    const handshake = raw && pendingByRaw.get(raw);
    if (handshake) handshake.secured(socket);
    else socket.destroy();
  });
  server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
    const raw = rawOf(socket);
    const handshake = raw && pendingByRaw.get(raw);
    if (handshake) handshake.failed(err);
    else socket.destroy();
  });
}

/**
 * The TLS step: runs the server side of a TLS handshake on an admitted client, then
 * checks the client certificate (Node's verdict against --ca) and identity allow-lists,
 * and calls `next` with the TLS socket (its connection info extended with `tls` facts).
 * Any failure refuses the client (closed without a byte, logged with a code).
 */
export function tlsStep(material: TlsMaterial, next: ServeStep, metrics?: GatewayMetrics): ServeStep {
  hookServer(material.server);
  return (raw, pending) => terminateTls(material, raw, pending, next, metrics);
}

function terminateTls(material: TlsMaterial, raw: net.Socket, pending: PendingConnection, next: ServeStep, metrics?: GatewayMetrics): void {
  pending.stage = 'TLS handshake';
  const handshake = new TlsHandshake(material, raw, pending, next, metrics);
  pending.hold(handshake);
  raw.on('close', rawClosedInHandshake);
  pendingByRaw.set(raw, handshake);
  // Not half-open during the handshake: a client's FIN then ends the TLS socket Node
  // creates, which reports it ('tlsClientError'), instead of holding the slot until the
  // deadline. Half-close is given back once the client is secured (above).
  raw.allowHalfOpen = false;
  // Documented for tls.Server: inject an accepted socket; Node runs the handshake.
  material.server.emit('connection', raw);
}

/**
 * wsd: WebSocket clients (browsers) to local libipc services. One WebSocket message is
 * one libipc message. The URL path names the service (`ws://host:8080/pong`), validated
 * and allow-listed like tcpd's names, or every upgrade reaches a fixed service.
 *
 * The pipeline is `[tls] -> http upgrade`: accepted (and for wss, TLS-terminated) sockets
 * go into an HTTP server that serves the page and upgrades. Every byte before the switch,
 * page requests included, is under the connection's one deadline. A refused upgrade
 * gets an HTTP status, flushed before the close: never a half-open socket. ws answers the
 * handshake; after the 101 the frames are wsd's own (ws-frame-endpoint.ts), the service is
 * read into one buffer shared by all connections (DirectReader.copying).
 *
 * As a library, the gateway can also take upgrades from an application's own HTTP(S)
 * server (`createWsGateway({ server })`, or `gateway.handleUpgrade(req, socket, head)` in
 * the manner of ws's `noServer`): the application serves its pages; the gateway's
 * limits, origin check and upgrade deadline still apply.
 */
import http from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { Gateway, GatewayCore, type GatewayPart, type ServeStep } from './gateway.js';
import { certificateWatch, tlsStep } from './tls.js';
import { TlsMaterial } from './tls-material.js';
import { PendingConnection, sendAndClose, type ConnectionInfo, type ResponseSocket } from './lifecycle.js';
import { WsFrameEndpoint } from './ws-frame-endpoint.js';
import { DirectReader } from '../src/direct-read.js';
import type { ListenerLabels } from './metrics.js';
import { serveStatic } from './static-files.js';
import { remoteOf } from './listeners.js';
import { formatPeer, forwardedClient } from './client-address.js';
import { normalizeGatewayOptions, type GatewayInput, type GatewayOptions } from './options.js';
import { ErrorCode, IpcError, ipcError } from '../src/errors.js';

/** HTTP status lines for refusals. */
const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  426: 'Upgrade Required',
  429: 'Too Many Requests',
  503: 'Service Unavailable',
};

/** A WebSocket gateway (wsd). */
export interface WsGateway extends Gateway {
  /** wss: the TLS material (SIGHUP reloads it); null for plain ws. */
  readonly material: TlsMaterial | null;
  /** Takes one upgrade request from an HTTP server of the caller's (ws's `noServer` way). */
  handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
}

/**
 * Creates a WebSocket gateway (wsd) from flag-named options. With `server`, it serves
 * that server's upgrades (as `new WebSocketServer({ server })`); nothing else starts
 * before listen().
 */
export function createWsGateway(input: GatewayInput): WsGateway {
  return wsGateway(normalizeGatewayOptions('ws', input));
}

/** A WebSocket gateway from normalised options. @throws Error when TLS files fail a check. */
export function wsGateway(options: GatewayOptions): WsGateway {
  const core = new GatewayCore(options);
  const material = options.tls ? new TlsMaterial(options.tls, core.logger, 0) : null;
  const upgrades = new WsUpgrades(core, material ? 'wss' : 'ws');
  const parts: GatewayPart[] = [upgrades, ...(material ? certificateWatch(material, options.watchCerts) : [])];
  const step = material ? tlsStep(material, upgrades.step, core.metrics) : upgrades.step;
  const gateway = new Gateway(core, material ? 'wss' : 'ws', step, parts);
  options.server?.on('upgrade', upgrades.handleUpgrade);
  if (!options.origins.length) {
    core.logger.warn('no --origin: any web page a user visits can open WebSockets to the allowed services through their browser');
  }
  return Object.assign(gateway, { material, handleUpgrade: upgrades.handleUpgrade });
}

/** The HTTP upgrade step: page requests, upgrade checks, the service connection, the switch. */
class WsUpgrades implements GatewayPart {
  private readonly core: GatewayCore;
  private readonly transport: string;
  private readonly http: http.Server;
  private readonly wss: WebSocketServer;
  /** The owner of each socket fed to the HTTP server, until its upgrade. */
  private readonly pending = new WeakMap<Duplex, PendingConnection>();
  /** The close listener of each pending socket, removed once it is switched. */
  private readonly closeListeners = new WeakMap<Duplex, () => void>();
  /** Switched clients, for the ping sweep. */
  private readonly live = new Set<WsFrameEndpoint>();
  private pingTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** Metrics labels of upgrades handed in by an application's own HTTP server. */
  private readonly appLabels: ListenerLabels;

  constructor(core: GatewayCore, transport: string) {
    this.core = core;
    this.transport = transport;
    this.appLabels = { transport, listener: 'app' };
    // ws answers the opening handshake only; the frames are ours (WsFrameEndpoint).
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: core.options.maxPayload,
      clientTracking: false,
      perMessageDeflate: false,
      WebSocket: HandshakeOnly,
    });
    this.http = http.createServer((req, res) => this.onRequest(req, res));
    this.http.on('upgrade', this.handleUpgrade);
    this.http.on('clientError', (err: Error, socket: Duplex) => this.onClientError(err, socket));
  }

  /** Serve step: the socket goes to the HTTP server, under its connection's deadline. */
  readonly step: ServeStep = (socket, pending) => {
    pending.stage = 'WebSocket upgrade';
    this.pending.set(socket, pending);
    pending.onExpire = () => this.endPageConnection(socket, pending);
    // A client that leaves before upgrading ends its pending state; after only page
    // requests, that is an ordinary end of an HTTP connection, not a refusal.
    const onClose = () => {
      if (pending.info['requests']) pending.end();
      else pending.refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client closed before its WebSocket upgrade'));
    };
    socket.once('close', onClose);
    this.closeListeners.set(socket, onClose);
    // A TLS step may have paused the socket.
    socket.resume();
    this.http.emit('connection', socket);
  };

  start(): void {
    this.stopped = false;
  }

  stop(): void {
    this.stopped = true;
    this.clearPings();
  }

  private clearPings(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  /**
   * At the deadline, a connection that fetched pages and has sent nothing since its last
   * response is an idle keep-alive connection: closed as an ordinary end, not refused.
   * One with a request in progress (a slow upgrade after a page) is refused as any other.
   */
  private endPageConnection(socket: net.Socket, pending: PendingConnection): boolean {
    const page = this.pages.get(socket);
    if (page === undefined || page.inFlight > 0 || socket.bytesRead !== page.bytesRead) return false;
    pending.end();
    this.core.logger.info({ ...pending.info, reason: 'no WebSocket upgrade after its page requests' }, 'connection closed');
    return true;
  }

  /** Page requests of each connection: in progress, and bytes read when the last one ended. */
  private readonly pages = new WeakMap<Duplex, { inFlight: number; bytesRead: number }>();

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    // Counted, not exempted: the connection's deadline still covers it (a page request
    // does not buy time for a slow upgrade).
    const pending = this.pending.get(req.socket);
    if (pending) {
      pending.info['requests'] = ((pending.info['requests'] as number | undefined) ?? 0) + 1;
      const socket = req.socket;
      let page = this.pages.get(socket);
      if (page === undefined) this.pages.set(socket, (page = { inFlight: 0, bytesRead: 0 }));
      page.inFlight++;
      res.once('close', () => {
        page.inFlight--;
        page.bytesRead = socket.bytesRead;
      });
    }
    const dir = this.core.options.staticDir;
    if (dir === null) {
      // No page: a plain request is a refused connection like any other (logged, coded).
      const refusal = ipcError(ErrorCode.HANDSHAKE_REFUSED, 'plain HTTP request: WebSocket upgrade required (no page served)');
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close', upgrade: 'websocket' }).end(`${refusal.code}: WebSocket upgrade required\n`);
      // After the response is queued: the refusal's half-close then follows it.
      if (pending && !pending.settled) pending.refuse(refusal, { status: 426, path: req.url }, { socket: req.socket, bytes: '' });
      return;
    }
    serveStatic(dir, req, res);
  }

  private onClientError(err: Error, socket: Duplex): void {
    const pending = this.pending.get(socket);
    const refusal = ipcError(ErrorCode.HANDSHAKE_REFUSED, `bad HTTP request: ${err.message}`);
    const response = httpResponse(400, refusal);
    if (pending && !pending.settled) {
      pending.refuse(refusal, { status: 400 }, { socket: socket as net.Socket, bytes: response });
    } else if (!(socket as net.Socket).writableEnded) {
      sendAndClose(socket as net.Socket, response);
    }
  }

  /** Refuses an upgrade with an HTTP status: the body says the code and the public reason only. */
  private refuseUpgrade(
    socket: Duplex,
    pending: PendingConnection,
    status: number,
    err: IpcError,
    extra: Record<string, unknown> = {},
    headers = '',
    publicReason = err.message,
  ): void {
    pending.refuse(err, { status, ...extra }, { socket: socket as ResponseSocket, bytes: httpResponse(status, err, headers, publicReason) });
  }

  /** An upgrade request: from our HTTP server, or from the application's (library mode). */
  readonly handleUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    let pending = this.pending.get(socket);
    if (pending === undefined) {
      // The application's server: this request starts the connection's life here.
      const net = socket as net.Socket;
      net.on('error', noop);
      const admitted = this.core.admit(remoteOf(net), performance.now(), this.appLabels);
      if (admitted instanceof IpcError) {
        sendAndClose(net, httpResponse(503, admitted));
        return;
      }
      pending = admitted;
      pending.stage = 'WebSocket upgrade';
      pending.hold(net);
      pending.clientAddress = net.remoteAddress;
      this.pending.set(socket, pending);
    }
    if (pending.settled) {
      socket.destroy();
      return;
    }
    this.upgrade(req, socket, head, pending);
  };

  private upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer, pending: PendingConnection): void {
    if (!pending.addressAdmitted) {
      this.takeForwardedAddress(req, pending);
      const refusal = this.core.admitAddress(pending);
      if (refusal !== null) {
        this.refuseUpgrade(socket, pending, 429, refusal);
        return;
      }
    }
    // Checked before the service is connected, so a bad handshake costs no service connection.
    const handshakeProblem = webSocketHandshakeProblem(req);
    if (handshakeProblem !== null) {
      // RFC 6455 §4.2.2: a refused version is answered with the versions we speak.
      const versions = handshakeProblem.includes('Version') ? 'sec-websocket-version: 13, 8\r\n' : '';
      this.refuseUpgrade(socket, pending, 400, ipcError(ErrorCode.HANDSHAKE_REFUSED, handshakeProblem), {}, versions);
      return;
    }
    const origin = req.headers.origin;
    const origins = this.core.options.origins;
    if (origins.length && (origin === undefined || !origins.includes(origin))) {
      this.refuseUpgrade(socket, pending, 403, ipcError(ErrorCode.HANDSHAKE_REFUSED, `origin ${origin ?? '(none)'} not allowed`));
      return;
    }
    const target = this.core.selectTarget(this.core.options.service === undefined ? serviceFromPath(req.url) : undefined);
    if (target instanceof IpcError) {
      const status = target.code === ErrorCode.INVALID_SERVICE_NAME ? 400 : 403;
      this.refuseUpgrade(socket, pending, status, target, { path: req.url });
      return;
    }
    // The service is read into the shared buffer: the client endpoint copies each reply
    // into its WebSocket frame (DirectReader.copying).
    const reader = DirectReader.copying();
    this.core.connectTarget(target, pending, reader).then(
      (upstream) => {
        if (upstream === null) return; // refused meanwhile (client gone, deadline, shutdown)
        if (socket.destroyed || !socket.readable || !socket.writable) {
          pending.refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client left before its upgrade was answered'));
          return;
        }
        // ws validates the handshake (version, Sec-WebSocket-Key) and answers 400 itself;
        // with noServer and no verifyClient, its callback runs synchronously.
        let upgraded = false;
        this.wss.handleUpgrade(req, socket, head, () => {
          upgraded = true;
        });
        if (upgraded) {
          const info = { ...pending.info, service: target, ...(origin ? { origin } : {}) };
          this.bridge(socket as net.Socket, upstream, reader, pending, info, target);
        }
        if (!upgraded) pending.refuse(ipcError(ErrorCode.HANDSHAKE_REFUSED, 'invalid WebSocket handshake'), { status: 400 });
      },
      (err: IpcError) =>
        // The log keeps the detail (socket path, errno); the client learns the code and the name.
        this.refuseUpgrade(socket, pending, 404, err, { service: target }, '', `service '${target}' is not available`),
    );
  }

  /**
   * Behind an HTTP proxy (--trusted-proxies given, the peer in it): the client address is
   * the one its X-Forwarded-For (or, --forwarded-header forwarded, Forwarded) header
   * names; `info.proxiedBy` keeps the peer.
   * From any other peer these headers are ignored (a client may write anything in them).
   */
  private takeForwardedAddress(req: http.IncomingMessage, pending: PendingConnection): void {
    const { trustForwarded, trustedProxies, forwardedHeader } = this.core.options;
    if (!trustForwarded || !trustedProxies.has(pending.clientAddress)) return;
    const client = forwardedClient(req.headers, trustedProxies, forwardedHeader);
    if (client === null) return;
    pending.info['proxiedBy'] ??= pending.info.peer;
    pending.info.peer = formatPeer(client.address, client.port);
    pending.info['forwardedBy'] = client.header;
    pending.clientAddress = client.address;
  }

  private bridge(socket: net.Socket, upstream: net.Socket, reader: DirectReader, pending: PendingConnection, info: ConnectionInfo, service: string): void {
    const { options } = this.core;
    const client = new WsFrameEndpoint(socket, options.maxPayload, options.text, info);
    client.sweep = this.live;
    if (this.core.bridge(pending, service, client, this.core.serviceEndpoint(upstream, reader), info) === null) return;
    // Nothing of the handshake stays with a switched connection (idle memory).
    this.pending.delete(socket);
    const onClose = this.closeListeners.get(socket);
    if (onClose) socket.off('close', onClose);
    this.closeListeners.delete(socket);
    this.pages.delete(socket);
    this.startPings();
  }

  /** One timer for every connection (per-socket timers cost ~10 % CPU: PERFORMANCE.md), started by the first. */
  private startPings(): void {
    const interval = this.core.options.pingInterval;
    if (interval <= 0 || this.pingTimer !== null || this.stopped) return;
    this.pingTimer = setInterval(() => this.sweepPings(), interval);
    this.pingTimer.unref();
  }

  private sweepPings(): void {
    if (this.live.size === 0) {
      // Nobody to ping: the next switched client starts the sweep again.
      this.clearPings();
      return;
    }
    for (const client of this.live) {
      // A client paused by backpressure (its service is slow) cannot be read, pongs
      // included: it is not dead. TCP keeps its own liveness meanwhile.
      if (client.paused) {
        client.answered = true;
        continue;
      }
      if (!client.answered) {
        this.core.logger.info({ ...client.info, reason: 'no pong to the last ping' }, 'dropping dead WebSocket peer');
        this.live.delete(client);
        client.terminate();
        continue;
      }
      client.answered = false;
      client.ping();
    }
  }
}

/**
 * What ws makes of an upgraded socket here: only its handshake (checks, 101, subprotocol).
 * ws's WebSocket would attach a Receiver (a Writable), a Sender and four socket listeners,
 * all dropped at once since the frames are ours: this subclass attaches nothing
 * (`setSocket` is what ws's server calls after writing the 101; its options say which
 * class to make, "the ws WebSocket class or class that extends it").
 */
class HandshakeOnly extends WebSocket {
  setSocket(socket: Duplex, head: Buffer): void {
    const net = socket as net.Socket;
    // As ws does: no idle timeout of its own, no Nagle delay on small frames.
    net.setTimeout?.(0);
    net.setNoDelay?.();
    // Bytes that came with the upgrade request are the first frames: read with the rest.
    if (head.length > 0) socket.unshift(head);
  }
}

/** An HTTP refusal: status line, headers, and a body with the code and the public reason. */
function httpResponse(status: number, err: IpcError, headers = '', publicReason = err.message): string {
  const body = `${err.code}: ${publicReason}\n`;
  return (
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nconnection: close\r\ncontent-type: text/plain\r\n` +
    `${headers}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}

function noop(): void {}

const KEY_PATTERN = /^[+/0-9A-Za-z]{22}==$/;

/** Why an upgrade request is not a valid WebSocket opening handshake (RFC 6455 §4.2.1), or null. */
export function webSocketHandshakeProblem(req: http.IncomingMessage): string | null {
  if (req.method !== 'GET') return `invalid method ${req.method}`;
  if (req.headers.upgrade?.toLowerCase() !== 'websocket') return 'invalid Upgrade header';
  const key = req.headers['sec-websocket-key'];
  if (key === undefined || !KEY_PATTERN.test(key)) return 'missing or invalid Sec-WebSocket-Key';
  const version = req.headers['sec-websocket-version'];
  if (version !== '13' && version !== '8') return 'missing or unsupported Sec-WebSocket-Version';
  return null;
}

/**
 * The service a URL path names: `/pong` -> `pong`. Percent-encoding is decoded first so
 * `%2e%2e` is seen as `..` by the validator; a query string is ignored. Returns the raw
 * text (the validator refuses anything that is not a plain name, `/` included).
 */
export function serviceFromPath(url: string | undefined): string {
  const path = (url ?? '/').split('?')[0]!;
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return path; // malformed escapes: the validator refuses the raw text ('%')
  }
  return decoded.startsWith('/') ? decoded.slice(1) : decoded;
}

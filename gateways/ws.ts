/**
 * wsd: WebSocket clients (browsers) to local libipc services. One WebSocket message is
 * one libipc message. The URL path names the service (`ws://host:8080/pong`), validated
 * and allow-listed like tcpd's names, or every upgrade reaches a fixed service.
 *
 * Connections are accepted by tcpd's listener (limits, admission), go through a TLS
 * handshake for wss (tlsd's), then through an HTTP server that serves the page and
 * upgrades. A refused upgrade gets an HTTP status and is closed: never a half-open socket.
 */
import http from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { TcpGateway, type TcpGatewayOptions } from './tcp.js';
import { terminateTls } from './tls.js';
import { TlsMaterial, type TlsServerSettings } from './tls-material.js';
import type { ConnectionInfo } from './gateway.js';
import { WebSocketEndpoint } from './ws-endpoint.js';
import { serveStatic } from './static-files.js';
import { ErrorCode, IpcError, ipcError } from '../src/errors.js';

export interface WsGatewayOptions extends TcpGatewayOptions {
  /** wss: TLS material (as tlsd's). */
  tls?: TlsServerSettings;
  watchCerts?: boolean;
  /** Send replies as text messages when they are valid UTF-8 (default binary). */
  text?: boolean;
  /** Allowed `Origin` values; unset allows any (non-browser clients send none). */
  origins?: readonly string[];
  /** Ping every this many ms and drop peers that did not answer the previous ping (0: off). */
  pingInterval?: number;
  /** Directory served over plain HTTP GET (the page); null turns it off. */
  staticDir?: string | null;
}

/** Connection facts kept from accept to upgrade. */
interface PendingHttp {
  info: ConnectionInfo;
  deadline: number;
  timer: NodeJS.Timeout;
  untrack: () => void;
  upgraded: boolean;
}

/** HTTP status lines for refusals. */
const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  426: 'Upgrade Required',
  503: 'Service Unavailable',
};

export class WsGateway extends TcpGateway {
  readonly material: TlsMaterial | null;
  private readonly wsOptions: WsGatewayOptions;
  private readonly http: http.Server;
  private readonly wss: WebSocketServer;
  private readonly pending = new WeakMap<Duplex, PendingHttp>();
  /** Whether each client answered the last ping, and its connection info for logs. */
  private readonly alive = new WeakMap<WebSocket, { answered: boolean; info: ConnectionInfo }>();
  private pingTimer: NodeJS.Timeout | null = null;

  constructor(options: WsGatewayOptions) {
    super(options);
    this.wsOptions = options;
    this.material = options.tls ? new TlsMaterial(options.tls, this.core.logger, this.core.options.handshakeTimeout + 1000) : null;
    if (this.material && options.watchCerts) this.material.watch();
    // ws enforces maxPayload on whole messages (fragments included) and closes with 1009.
    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.core.options.maxPayload, clientTracking: true });
    this.http = http.createServer((req, res) => this.onRequest(req, res));
    this.http.headersTimeout = this.core.options.handshakeTimeout;
    this.http.requestTimeout = this.core.options.handshakeTimeout;
    if (!options.origins?.length) {
      this.core.logger.warn(
        'no --origin: any web page a user visits can open WebSockets to the allowed services through their browser',
      );
    }
    this.http.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    this.http.on('clientError', (err: Error, socket: Duplex) => this.onClientError(err, socket));
    const interval = options.pingInterval ?? 30_000;
    if (interval > 0) {
      this.pingTimer = setInterval(() => this.sweepPings(), interval);
      this.pingTimer.unref();
    }
  }

  protected override get transport(): string {
    return this.material ? 'wss' : 'ws';
  }

  protected override serve(raw: net.Socket, info: ConnectionInfo, deadline: number): void {
    if (this.material) {
      terminateTls(this.core, this.material, raw, info, deadline, (socket, secured) => this.startHttp(socket, secured, deadline));
    } else {
      this.startHttp(raw, info, deadline);
    }
  }

  /** Hands a client socket to the HTTP server; it must upgrade before `deadline`. */
  private startHttp(socket: net.Socket, info: ConnectionInfo, deadline: number): void {
    const entry: PendingHttp = {
      info,
      deadline,
      upgraded: false,
      untrack: () => {},
      timer: setTimeout(() => {
        if (entry.upgraded) return;
        this.core.refuse(info, ipcError(ErrorCode.HANDSHAKE_TIMEOUT, `no WebSocket upgrade within ${this.core.options.handshakeTimeout} ms`));
        socket.destroy();
      }, Math.max(0, deadline - performance.now())),
    };
    entry.untrack = this.core.track({
      close: () => socket.destroy(),
    });
    socket.once('close', () => {
      clearTimeout(entry.timer);
      entry.untrack();
    });
    this.pending.set(socket, entry);
    this.http.emit('connection', socket);
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    // A page request is not a stalled upgrade: from here the HTTP server's own timeouts
    // (headers, request, keep-alive) bound the connection.
    const entry = this.pending.get(req.socket);
    if (entry) clearTimeout(entry.timer);
    const dir = this.wsOptions.staticDir;
    if (dir === null || dir === undefined) {
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' }).end('WebSocket upgrade required\n');
      return;
    }
    serveStatic(dir, req, res);
  }

  private onClientError(err: Error, socket: Duplex): void {
    const entry = this.pending.get(socket);
    if (entry) this.core.refuse(entry.info, ipcError(ErrorCode.HANDSHAKE_REFUSED, `bad HTTP request: ${err.message}`));
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    socket.destroy();
  }

  private refuseUpgrade(
    socket: Duplex,
    entry: PendingHttp | undefined,
    status: number,
    err: Error,
    extra: Record<string, unknown> = {},
    headers = '',
  ): void {
    if (entry) {
      clearTimeout(entry.timer);
      this.core.refuse(entry.info, err, { status, ...extra });
    }
    const body = `${err.message}\n`;
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nconnection: close\r\ncontent-type: text/plain\r\n` +
        `${headers}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      () => socket.destroy(),
    );
  }

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const entry = this.pending.get(socket);
    if (!entry || entry.upgraded) {
      socket.destroy();
      return;
    }
    // Checked before the service is connected, so a bad handshake costs no service connection.
    const handshakeProblem = webSocketHandshakeProblem(req);
    if (handshakeProblem !== null) {
      // RFC 6455 §4.2.2: a refused version is answered with the versions we speak.
      const versions = handshakeProblem.includes('Version') ? 'sec-websocket-version: 13, 8\r\n' : '';
      this.refuseUpgrade(socket, entry, 400, ipcError(ErrorCode.HANDSHAKE_REFUSED, handshakeProblem), {}, versions);
      return;
    }
    const origin = req.headers.origin;
    const origins = this.wsOptions.origins;
    if (origins?.length && (origin === undefined || !origins.includes(origin))) {
      this.refuseUpgrade(socket, entry, 403, ipcError(ErrorCode.HANDSHAKE_REFUSED, `origin ${origin ?? '(none)'} not allowed`));
      return;
    }
    const target = this.core.selectTarget(this.core.options.service === undefined ? serviceFromPath(req.url) : undefined);
    if (target instanceof Error) {
      const status = target instanceof IpcError && target.code === ErrorCode.INVALID_SERVICE_NAME ? 400 : 403;
      this.refuseUpgrade(socket, entry, status, target, { path: req.url });
      return;
    }
    this.core.connectTarget(target).then(
      (upstream) => {
        if (socket.destroyed) {
          upstream.destroy();
          return;
        }
        // ws validates the handshake (version, Sec-WebSocket-Key) and answers 400 itself.
        this.wss.handleUpgrade(req, socket, head, (ws) => {
          entry.upgraded = true;
          clearTimeout(entry.timer);
          entry.untrack();
          this.bridge(ws, socket as net.Socket, upstream, { ...entry.info, service: target, ...(origin ? { origin } : {}) }, target);
        });
        if (!entry.upgraded) {
          // handleUpgrade refused the request (bad key, version...): it answered and closed.
          upstream.destroy();
          if (!socket.destroyed) socket.destroy();
          this.core.refuse(entry.info, ipcError(ErrorCode.HANDSHAKE_REFUSED, 'invalid WebSocket handshake'), { status: 400 });
          clearTimeout(entry.timer);
        }
      },
      (err: Error) => this.refuseUpgrade(socket, entry, 404, err, { service: target }),
    );
  }

  private bridge(ws: WebSocket, socket: net.Socket, upstream: net.Socket, info: ConnectionInfo, service: string): void {
    const { options } = this.core;
    const client = new WebSocketEndpoint(ws, socket, options.maxPayload, this.wsOptions.text === true, info.peer);
    this.alive.set(ws, { answered: true, info });
    ws.on('pong', () => {
      const state = this.alive.get(ws);
      if (state) state.answered = true;
    });
    this.core.bridge(info, service, client, this.core.serviceEndpoint(upstream));
  }

  /** One timer for every connection (per-socket timers cost ~10 % CPU: PERFORMANCE.md). */
  private sweepPings(): void {
    for (const ws of this.wss.clients) {
      const state = this.alive.get(ws);
      if (state === undefined) continue;
      // A client paused by backpressure (its service is slow) cannot be read, pongs
      // included: it is not dead. TCP keeps its own liveness meanwhile.
      if (ws.isPaused) {
        state.answered = true;
        continue;
      }
      if (!state.answered) {
        this.core.logger.info({ ...state.info, reason: 'no pong to the last ping' }, 'dropping dead WebSocket peer');
        ws.terminate();
        continue;
      }
      state.answered = false;
      ws.ping();
    }
  }

  override async close(): Promise<void> {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.material?.close();
    await super.close();
  }

  override destroy(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.material?.close();
    super.destroy();
  }
}

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

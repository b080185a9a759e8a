/**
 * The outbound side of a gateway (PROTOCOL.md §4): a local Unix service (`tcp`, `tls`,
 * `ws`/`wss`) that takes one framed URI, connects to the remote gateway, performs the
 * remote handshake, answers the framed `ok`, and switches the two. ipcd uses it to reach
 * remote services on behalf of unmodified libipc clients.
 *
 * Remote handshakes: tcp/tls write the URI path raw and require exactly raw `ok` back
 * (bytes after it are kept); ws/wss open `ws(s)://host:port/path`. tls/wss verify the
 * remote certificate (system CAs or `ca`) and send SNI for host names.
 * Every failure (malformed URI, no path, bad port, unreachable remote, remote refusal,
 * timeout) closes the local connection without a byte, promptly, and is logged.
 *
 * With `--send-proxy-v2`, each remote connection starts with a PROXY v2 header, before
 * TLS and HTTP. The local client is on a Unix socket, so it has no IP to send: the header
 * says PROXY over the UNIX family (source: the client's socket name, empty for an unbound
 * client; destination: the outbound service's path). Not LOCAL: the spec keeps LOCAL for
 * connections the proxy makes on its own behalf (health checks), and this one is relayed
 * for a client. A receiver keeps the TCP peer address for it (spec §2.2: UNIX carries no
 * network address), as ours does, logging `proxy: "unix"` and the path.
 */
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { WebSocket } from 'ws';
import { HEADER_SIZE, encodeFrame } from '../src/frame.js';
import { ErrorCode, IpcError, hasCode, ipcError } from '../src/errors.js';
import { parseTarget, type Target } from '../src/network.js';
import { serveService, type ServiceServer } from '../src/service.js';
import { SocketEndpoint, type Endpoint } from '../src/switch.js';
import type { GatewayCore, ConnectionInfo } from './gateway.js';
import { asHandshakeError } from './lifecycle.js';
import { WebSocketEndpoint } from './ws-endpoint.js';
import type { ListenerLabels } from './metrics.js';
import { encodeProxyV2 } from './proxy-protocol.js';
import { servicePath } from '../src/rundir.js';

const OK = Buffer.from('ok');
/** The framed `ok` answered to the local client (000000026f6b). */
const FRAMED_OK = encodeFrame(OK);
/** Longest URI frame accepted from a local client. */
const MAX_URI_LENGTH = 4096;

export interface OutboundOptions {
  /** Unix service names to serve (e.g. ['tcp'], or ['ws', 'wss']). */
  names: readonly string[];
  /** URI schemes accepted (each name usually is its scheme). */
  schemes: readonly string[];
  /** CA bundle to verify remote TLS gateways (default: the system's). */
  ca?: string;
  /** Start each remote connection with a PROXY v2 header. */
  sendProxyV2?: boolean;
}

type RemoteTarget = Extract<Target, { host: string }>;

/** Serves the outbound Unix services of one gateway. */
export class OutboundService {
  private readonly core: GatewayCore;
  private readonly options: OutboundOptions;
  private readonly ca: Buffer | undefined;
  private servers: ServiceServer[] = [];

  constructor(core: GatewayCore, options: OutboundOptions) {
    this.core = core;
    this.options = options;
    this.ca = options.ca ? readFileSync(options.ca) : undefined;
  }

  /**
   * Starts serving every name. A name another process already serves is skipped with a
   * warning when `required` is false (the gateway kind's default names: several gateways
   * share one $RUNDIR); when the names were asked for explicitly it is an error.
   * @throws IpcError as serveService (name in use, run directory unusable...).
   */
  async start(required = true): Promise<void> {
    for (const name of this.options.names) {
      let served: ServiceServer;
      try {
        served = await serveService(name, {
          rundir: this.core.options.rundir,
          allowHalfOpen: true,
          onConnection: (socket) => this.onLocalClient(socket, name),
        });
      } catch (err) {
        if (required || !hasCode(err, ErrorCode.SERVICE_IN_USE)) {
          await this.close();
          throw err;
        }
        this.core.logger.warn(
          { service: name, code: err.code, reason: err.message, role: 'outbound' },
          'outbound service served by another process: running without it (give --name to choose another)',
        );
        continue;
      }
      this.servers.push(served);
      this.core.metrics.listenerUp(this.labelsOf(name));
      this.core.logger.info({ service: name, path: served.path, transport: 'unix', role: 'outbound' }, 'listening');
    }
  }

  async close(): Promise<void> {
    const servers = this.servers;
    this.servers = [];
    await Promise.all(servers.map((s) => s.close()));
  }

  /** The outbound services served now, as listeners (for /readyz and the status page). */
  get listeners(): { transport: string; listener: string; bound: boolean }[] {
    return this.servers.map((s) => ({ transport: 'unix', listener: `unix:${s.name}`, bound: s.server.listening }));
  }

  /** Local clients of the outbound service `name`: transport `unix`, listener `unix:<name>`. */
  private readonly labels = new Map<string, ListenerLabels>();
  private labelsOf(name: string): ListenerLabels {
    let labels = this.labels.get(name);
    if (!labels) this.labels.set(name, (labels = { transport: 'unix', listener: `unix:${name}` }));
    return labels;
  }

  private onLocalClient(local: net.Socket, name: string): void {
    local.on('error', noop);
    const core = this.core;
    const pending = core.admit(`unix:${name}`, performance.now(), this.labelsOf(name));
    if (pending instanceof IpcError) {
      local.destroy();
      return;
    }
    pending.hold(local);
    pending.stage = 'outbound handshake';
    const onError = (err: Error) => pending.refuse(asHandshakeError(err));
    const onEnd = () => pending.refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'local client closed before sending a URI'));
    let received: Buffer = Buffer.alloc(0);
    const onUri = (chunk: Buffer) => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      if (received.length < HEADER_SIZE) return;
      const length = received.readUInt32BE(0);
      if (length > MAX_URI_LENGTH) {
        pending.refuse(ipcError(ErrorCode.PAYLOAD_TOO_LARGE, `URI frame of ${length} bytes (at most ${MAX_URI_LENGTH})`));
        return;
      }
      if (received.length < HEADER_SIZE + length) return;
      const uriFrame = received.subarray(HEADER_SIZE, HEADER_SIZE + length);
      // Frames sent together with the URI are the client's first messages: keep them.
      const rest = received.subarray(HEADER_SIZE + length);
      local.off('data', onUri);
      local.off('end', onEnd);
      local.pause();
      if (rest.length > 0) local.unshift(rest);
      const uri = uriFrame.toString('latin1');
      let target: RemoteTarget;
      try {
        const parsed = parseTarget(uri);
        if (!('host' in parsed) || !this.options.schemes.includes(parsed.scheme)) {
          throw ipcError(ErrorCode.INVALID_URI, `scheme '${parsed.scheme}' is not served here (${this.options.schemes.join(', ')})`);
        }
        target = parsed;
      } catch (err) {
        pending.refuse(err as Error, { uri });
        return;
      }
      // The connection's deadline bounds the dial too: a refusal destroys the attempt.
      const attempt = this.dial(target, this.options.sendProxyV2 ? encodeProxyV2({ kind: 'unix', source: '', destination: servicePath(name, core.options.rundir) }) : null);
      pending.hold(attempt);
      attempt.ready.then(
        (endpoint) => {
          local.off('error', onError);
          if (pending.settled) {
            endpoint.destroy();
            return;
          }
          local.write(FRAMED_OK);
          const client = new SocketEndpoint('client', local, core.options.maxPayload);
          const connInfo: ConnectionInfo = { ...pending.info, uri, remote: `${target.host}:${target.port}` };
          core.bridge(pending, target.path, client, endpoint, connInfo);
        },
        (err: Error) => pending.refuse(err, { uri }),
      );
    };
    local.on('error', onError);
    local.on('data', onUri);
    local.on('end', onEnd);
  }

  /** Connects to a remote gateway (sending `proxyHeader` first, if any) and performs its handshake. */
  private dial(target: RemoteTarget, proxyHeader: Buffer | null): { ready: Promise<Endpoint>; destroy(): void } {
    if (target.scheme === 'ws' || target.scheme === 'wss') return this.dialWebSocket(target, proxyHeader);
    return this.dialStream(target, proxyHeader);
  }

  private dialStream(target: RemoteTarget, proxyHeader: Buffer | null): { ready: Promise<Endpoint>; destroy(): void } {
    const secure = target.scheme === 'tls';
    // The PROXY header goes first on the TCP connection, before the ClientHello.
    const raw = proxyHeader === null ? undefined : net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
    raw?.on('error', noop);
    raw?.write(proxyHeader!);
    const socket: net.Socket = secure
      ? tls.connect({
          ...(raw ? { socket: raw } : { host: target.host, port: target.port }),
          // SNI is for host names only (RFC 6066 §3).
          ...(net.isIP(target.host) === 0 ? { servername: target.host } : {}),
          ...(this.ca ? { ca: this.ca } : {}),
          // As the TCP leg: a remote FIN is a half-close, the other direction goes on
          // (tls.connect passes it to the socket; its type does not list it).
          ...({ allowHalfOpen: true } as tls.ConnectionOptions),
        })
      : (raw ?? net.connect({ host: target.host, port: target.port, allowHalfOpen: true }));
    socket.on('error', noop);
    const maxPayload = this.core.options.maxPayload;
    const ready = new Promise<Endpoint>((resolve, reject) => {
      let answer = Buffer.alloc(0);
      const fail = (err: Error) => {
        cleanup();
        socket.destroy();
        reject(err);
      };
      const onError = (err: Error) =>
        fail(ipcError(ErrorCode.SERVICE_UNAVAILABLE, `remote ${target.host}:${target.port} failed: ${err.message}`, err));
      const onEnd = () => fail(ipcError(ErrorCode.HANDSHAKE_REFUSED, `remote gateway refused service '${target.path}' (closed without ok)`));
      const onData = (chunk: Buffer) => {
        answer = Buffer.concat([answer, chunk]);
        if (answer.length < OK.length) return;
        if (!answer.subarray(0, OK.length).equals(OK)) {
          fail(ipcError(ErrorCode.HANDSHAKE_REFUSED, `remote gateway answered ${JSON.stringify(answer.toString('latin1').slice(0, 40))} instead of ok`));
          return;
        }
        cleanup();
        socket.pause();
        // Frames the remote sent right after its ok belong to the switch.
        if (answer.length > OK.length) socket.unshift(answer.subarray(OK.length));
        resolve(new SocketEndpoint('service', socket, maxPayload));
      };
      const onConnected = () => socket.write(target.path);
      const cleanup = () => {
        socket.off('error', onError);
        socket.off('end', onEnd);
        socket.off('data', onData);
      };
      socket.on('error', onError);
      socket.on('end', onEnd);
      socket.on('data', onData);
      socket.once(secure ? 'secureConnect' : 'connect', onConnected);
    });
    return {
      ready,
      destroy: () => {
        socket.destroy();
        raw?.destroy();
      },
    };
  }

  private dialWebSocket(target: RemoteTarget, proxyHeader: Buffer | null): { ready: Promise<Endpoint>; destroy(): void } {
    const host = net.isIPv6(target.host) ? `[${target.host}]` : target.host;
    const url = `${target.scheme}://${host}:${target.port}/${encodeURIComponent(target.path)}`;
    const ws = new WebSocket(url, {
      maxPayload: this.core.options.maxPayload,
      // Compression queues messages inside ws, out of reach of the switch's backpressure.
      perMessageDeflate: false,
      ...(this.ca ? { ca: this.ca } : {}),
      ...(net.isIP(target.host) === 0 ? { servername: target.host } : {}),
      ...(proxyHeader === null ? {} : { createConnection: ((opts: tls.ConnectionOptions) => proxiedConnection(opts, target, proxyHeader)) as typeof net.createConnection }),
    });
    const maxPayload = this.core.options.maxPayload;
    const ready = new Promise<Endpoint>((resolve, reject) => {
      let socket: net.Socket | null = null;
      ws.once('upgrade', (res) => {
        socket = res.socket as net.Socket;
      });
      ws.once('unexpected-response', (_req, res) => {
        ws.terminate();
        reject(ipcError(ErrorCode.HANDSHAKE_REFUSED, `remote WebSocket gateway answered HTTP ${res.statusCode} for '${target.path}'`));
      });
      let opened = false;
      // Stays for the socket's life: before the switch starts, an error (a bad frame sent
      // right after the 101) must not be an unhandled 'error' that kills the daemon.
      ws.on('error', (err) => {
        if (!opened) reject(new IpcError(ErrorCode.SERVICE_UNAVAILABLE, `remote ${url} failed: ${err.message}`, { cause: err }));
      });
      ws.once('open', () => {
        opened = true;
        // Messages that arrive before the switch starts are kept by the endpoint.
        resolve(new WebSocketEndpoint(ws, socket!, maxPayload, false, url, 'service'));
      });
    });
    return { ready, destroy: () => ws.terminate() };
  }
}

function noop(): void {}

/** ws's socket with a PROXY header first: the TCP connection, then TLS over it for wss. */
function proxiedConnection(opts: tls.ConnectionOptions, target: RemoteTarget, proxyHeader: Buffer): net.Socket {
  const raw = net.connect({ host: target.host, port: target.port });
  raw.on('error', noop);
  raw.write(proxyHeader);
  if (target.scheme !== 'wss') return raw;
  const { host: _host, port: _port, path: _path, ...rest } = opts as tls.ConnectionOptions & { path?: string };
  const servername = rest.servername ?? (net.isIP(target.host) === 0 ? target.host : undefined);
  const secure = tls.connect({ ...rest, socket: raw, ...(servername ? { servername } : {}) });
  secure.once('close', () => raw.destroy());
  return secure;
}

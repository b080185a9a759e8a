/**
 * What every gateway shares (DESIGN.md "One picture"): admission (connection limit,
 * closing), target selection (a fixed service or a client-named one checked against an
 * allow-list), the service connection, the switch, the teardown line, and a bounded drain.
 *
 * A gateway is composed, not inherited: a {@link Gateway} is listeners plus a serve
 * pipeline (`[tls] -> name handshake`, or `[tls] -> http upgrade`) that takes each
 * accepted socket with its {@link PendingConnection}. Nothing starts in a constructor:
 * `listen()` starts the parts (certificate watchers, ping sweeps), `close()` stops them.
 */
import net from 'node:net';
import { connectService, connectServiceFd, connectServicePath } from '../src/client.js';
import { ErrorCode, IpcError, ipcError } from '../src/errors.js';
import { ensureRundir, serviceNameProblem, servicePath } from '../src/rundir.js';
import { SocketEndpoint, Switch, type BridgedSwitch, type Endpoint, type SwitchSummary } from '../src/switch.js';
import { NativeSwitch, nativeDataPlane } from '../src/dataplane.js';
import { closeFd } from '../src/fdpass.js';
import type { DirectReader } from '../src/direct-read.js';
import type { Logger } from '../src/log.js';
import { ConnectionTable, PendingConnection, type ConnectionInfo } from './lifecycle.js';
import type { GatewayOptions } from './options.js';
import type { ListenAddress } from './listen.js';
import { bindAll, closeAll, remoteOf } from './listeners.js';
import { OutboundService } from './outbound.js';
import { GatewayMetrics, type ListenerLabels } from './metrics.js';
import { PerIpLimits } from './per-ip.js';
import { clientAddressSteps } from './proxy-step.js';

export type { ConnectionInfo } from './lifecycle.js';

/**
 * The shared core of a gateway. The listener calls {@link admit} for each accepted
 * client; the pipeline calls {@link selectTarget} once it knows which service the client
 * asks for, {@link connectTarget}, and {@link bridge} to hand the client over to its switch.
 */
export class GatewayCore {
  readonly options: GatewayOptions;
  readonly logger: Logger;
  /** Every client connection, pending or switched. */
  readonly table: ConnectionTable;
  private nextConn = 1;
  /** `$RUNDIR/<service>` of a fixed target, validated once. */
  private readonly fixedPath: string | null;
  /** Counted once per connection, never per message (gateways/metrics.ts). */
  readonly metrics: GatewayMetrics;
  /** Labels of connections handed in without a listener (admit without labels). */
  private readonly externalLabels: ListenerLabels;
  /** Per-IP limits, or null when none is set. */
  readonly perIp: PerIpLimits | null;
  /** The native data plane when asked for (`dataPlane: 'native'`) and available, else null. */
  readonly dataPlane: ReturnType<typeof nativeDataPlane> | null;

  constructor(options: GatewayOptions) {
    this.options = options;
    this.logger = options.logger;
    this.metrics = options.metrics ?? new GatewayMetrics({ defaultMetrics: false });
    this.externalLabels = { transport: options.kind, listener: 'external' };
    this.table = new ConnectionTable(options.handshakeTimeout);
    this.fixedPath = options.service === undefined ? null : servicePath(options.service, options.rundir);
    const { maxConnectionsPerIp, connectRatePerIp } = options;
    this.perIp = maxConnectionsPerIp > 0 || connectRatePerIp > 0 ? new PerIpLimits(maxConnectionsPerIp, connectRatePerIp) : null;
    this.dataPlane = null;
    if (options.dataPlane === 'native') {
      const plane = nativeDataPlane();
      if (plane instanceof Error) {
        this.logger.warn({ reason: plane.message }, 'native data plane unavailable: the JS switch carries every connection');
      } else {
        this.dataPlane = plane;
      }
    }
  }

  /** Number of live client connections (in their handshakes or switched). */
  get connections(): number {
    return this.table.size;
  }

  /** True once close() or destroy() was called. */
  get isClosing(): boolean {
    return this.table.closing;
  }

  /**
   * Admits a new client, or refuses it (connection limit, or closing): the refusal is
   * logged with its code and returned. The owner's deadline counts from `acceptedAt`.
   */
  admit(peer: string | undefined, acceptedAt = performance.now(), labels = this.externalLabels): PendingConnection | IpcError {
    const info: ConnectionInfo = { conn: this.nextConn++, peer };
    const metrics = this.metrics;
    metrics.connectionAccepted(labels);
    let refusal: IpcError | null = null;
    if (this.table.closing) refusal = ipcError(ErrorCode.SHUTDOWN, 'gateway is closing');
    else if (this.table.size >= this.options.maxConnections) {
      refusal = ipcError(ErrorCode.TOO_MANY_CONNECTIONS, `limit of ${this.options.maxConnections} connections reached`);
    }
    if (refusal !== null) {
      this.logger.warn({ ...info, code: refusal.code, reason: refusal.message }, 'connection refused');
      metrics.refused(labels, refusal.code);
      return refusal;
    }
    const pending = new PendingConnection(this.table, info, this.options.handshakeTimeout, this.reportRefusal, acceptedAt);
    pending.labels = labels;
    metrics.handshakeStarted(labels);
    pending.onSettle = () => metrics.handshakeEnded(labels);
    return pending;
  }

  /**
   * Per-IP admission of `pending` by its client address (`pending.clientAddress`, known
   * once a PROXY or forwarding header was read), once per connection: returns the refusal
   * for the caller to report through `pending.refuse`, or null. The slot it takes is given
   * back when the connection is gone, whatever ends it.
   */
  admitAddress(pending: PendingConnection): IpcError | null {
    if (pending.addressAdmitted) return null;
    pending.addressAdmitted = true;
    if (this.perIp === null || pending.clientAddress === undefined) return null;
    const slot = this.perIp.acquire(pending.clientAddress);
    if (slot instanceof IpcError) return slot;
    pending.whenGone(slot);
    return null;
  }

  /** The one refusal line: expected refusals are coded, so every line carries `code`. */
  private readonly reportRefusal = (pending: PendingConnection, err: IpcError, extra: Record<string, unknown>): void => {
    const cause = err.cause instanceof Error && !(err.cause instanceof IpcError) ? { cause: err.cause.message } : {};
    this.logger.warn({ ...pending.info, ...extra, code: err.code, reason: err.message, ...cause }, 'connection refused');
    this.metrics.refused(pending.labels, err.code);
  };

  /**
   * Which service a client reaches. `requested` is the name the client sent (undefined
   * for a fixed target). Returns the validated name, or a coded error for the refusal.
   */
  selectTarget(requested: string | undefined): string | IpcError {
    const { service, allow, maxNameLength } = this.options;
    if (service !== undefined) return service;
    if (requested === undefined) return ipcError(ErrorCode.INVALID_SERVICE_NAME, 'no service name given');
    // Validate before anything else touches the name (no path is ever built from it
    // unless it passes: PROTOCOL.md §3, path traversal in the original).
    const problem = serviceNameProblem(requested, maxNameLength);
    if (problem) {
      return ipcError(ErrorCode.INVALID_SERVICE_NAME, `invalid service name ${JSON.stringify(requested)}: ${problem}`);
    }
    if (allow !== '*' && !allow.has(requested)) {
      return ipcError(ErrorCode.SERVICE_NOT_ALLOWED, `service '${requested}' is not in the allow-list`);
    }
    return requested;
  }

  /**
   * Connects to `service` for `pending` and resolves the socket, or null when the client
   * was refused meanwhile (the socket is then closed); rejects with a coded error. With a
   * `reader`, the socket reads through it (for byte-stream clients: see DirectReader).
   */
  async connectTarget(service: string, pending: PendingConnection, reader?: DirectReader): Promise<net.Socket | null> {
    const options = { rundir: this.options.rundir, allowHalfOpen: true, ...(reader ? { onread: reader.onread } : {}) };
    const socket =
      service === this.options.service && this.fixedPath !== null
        ? await connectServicePath(service, this.fixedPath, options)
        : await connectService(service, options);
    // Held from here: a refusal (client gone, deadline, shutdown) closes it too.
    pending.hold(socket);
    return pending.settled ? null : socket;
  }

  /**
   * {@link connectTarget} for the native data plane: connected by the addon, at once, with
   * no JS socket; the descriptor is the caller's.
   * @throws IpcError as connectTarget rejects.
   */
  connectTargetFd(service: string): number {
    const socketPath = service === this.options.service && this.fixedPath !== null ? this.fixedPath : servicePath(service, this.options.rundir);
    return connectServiceFd(service, socketPath);
  }

  /** Wraps a connected service socket as the service endpoint of a switch. */
  serviceEndpoint(upstream: net.Socket, reader?: DirectReader): SocketEndpoint {
    return new SocketEndpoint('service', upstream, this.options.maxPayload, reader ?? null);
  }

  /**
   * Hands `pending` over to a switch of `client` and `serviceEndpoint` (connected to
   * `service`), in one step that drain sees, and logs the switch's end. Returns null
   * (and closes both) when `pending` was already refused.
   */
  bridge(pending: PendingConnection, service: string, client: Endpoint, serviceEndpoint: Endpoint, info = pending.info): Switch | null {
    const sw: Switch = new Switch(client, serviceEndpoint, {
      halfCloseTimeout: this.options.halfCloseTimeout,
      onClose: this.switchEnd(info, service),
    });
    return this.adopt(pending, sw, service, () => sw.start(), () => {
      client.destroy();
      serviceEndpoint.destroy();
    });
  }

  /**
   * Hands `pending` over to the native data plane: `clientSocket` (plain TCP or Unix,
   * nothing queued to write) and `serviceFd` (connected to `service` by the addon) are taken over
   * by the addon's thread, `greeting` (the handshake's `ok`) is sent first. Logged and
   * counted as {@link bridge} does. Returns null (and closes both) when `pending` was
   * already refused.
   */
  bridgeNative(pending: PendingConnection, service: string, clientSocket: net.Socket, serviceFd: number, greeting?: Buffer): NativeSwitch | null {
    const plane = this.dataPlane;
    if (plane === null || plane instanceof Error) throw new Error('bridgeNative without a data plane');
    const sw: NativeSwitch = new NativeSwitch(plane, {
      maxPayload: this.options.maxPayload,
      halfCloseTimeout: this.options.halfCloseTimeout,
      ...(greeting ? { greeting } : {}),
      onClose: this.switchEnd(pending.info, service),
    });
    return this.adopt(pending, sw, service, () => sw.start(clientSocket, serviceFd), () => {
      clientSocket.destroy();
      closeFd(serviceFd);
    });
  }

  /** What a switch's end does, either plane: out of the table, into the totals, one log line. */
  private switchEnd(info: ConnectionInfo, service: string): (summary: SwitchSummary, sw: BridgedSwitch) => void {
    return (summary, sw) => {
      this.table.delete(sw);
      this.metrics.switchEnded(sw, summary);
      logConnectionEnd(this.logger, info, service, summary);
    };
  }

  /**
   * The hand-over, either plane: `sw` replaces `pending` in the table in one step (else,
   * refused meanwhile, `discard` closes both sockets), is counted, started, and watched
   * for idleness.
   */
  private adopt<S extends BridgedSwitch>(pending: PendingConnection, sw: S, service: string, start: () => void, discard: () => void): S | null {
    if (!pending.handOver(sw)) {
      discard();
      return null;
    }
    this.metrics.switched(sw, pending.labels, service, (performance.now() - pending.acceptedAt) / 1000);
    start();
    if (this.options.idleTimeout > 0 && !sw.done) this.watchIdle(sw);
    return sw;
  }

  /** Switches watched for idleness, with their byte total at the last sweep. */
  private readonly idle = new Map<BridgedSwitch, { bytes: number; quietSince: number }>();
  private idleTimer: NodeJS.Timeout | null = null;

  /**
   * Idle detection costs nothing per chunk: a sweep compares each switch's byte counters
   * with the previous sweep's (per-socket timers cost ~10 % CPU: PERFORMANCE.md).
   */
  private watchIdle(sw: BridgedSwitch): void {
    this.idle.set(sw, { bytes: -1, quietSince: performance.now() });
    if (this.idleTimer !== null) return;
    const period = Math.max(100, Math.min(this.options.idleTimeout / 4, 5000));
    this.idleTimer = setInterval(() => {
      const now = performance.now();
      for (const [s, seen] of this.idle) {
        if (s.done) {
          this.idle.delete(s);
          continue;
        }
        const bytes = s.client.bytesIn + s.client.bytesOut + s.service.bytesIn;
        if (bytes !== seen.bytes) {
          seen.bytes = bytes;
          seen.quietSince = now;
        } else if (now - seen.quietSince >= this.options.idleTimeout) {
          this.idle.delete(s);
          s.close('idle timeout', ipcError(ErrorCode.IDLE_TIMEOUT, `no traffic for ${this.options.idleTimeout} ms`));
        }
      }
      if (this.idle.size === 0 && this.idleTimer !== null) {
        clearInterval(this.idleTimer);
        this.idleTimer = null;
      }
    }, period);
    this.idleTimer.unref();
  }

  /**
   * Stops admitting clients and lets open connections (pending ones included, and those
   * that finish their handshake meanwhile) finish within `drainTimeout`; the rest are
   * closed with `IPC_ERR_SHUTDOWN`. Resolves when none is left.
   */
  close(): Promise<void> {
    return this.table.close(this.options.drainTimeout).then(() => this.perIp?.stop());
  }

  /** Closes every connection now. */
  destroy(): void {
    this.table.destroy();
    this.perIp?.stop();
  }
}


/** The one log line per connection, at teardown. */
function logConnectionEnd(logger: Logger, info: ConnectionInfo, service: string, s: SwitchSummary): void {
  const fields = {
    ...info,
    service,
    reason: s.reason,
    endedBy: s.endedBy,
    bytesIn: s.bytesIn,
    bytesOut: s.bytesOut,
    messagesIn: s.messagesIn,
    messagesOut: s.messagesOut,
    durationMs: s.durationMs,
  };
  if (s.error instanceof IpcError) logger.warn({ ...fields, code: s.error.code }, 'connection closed');
  else if (s.error) logger.info({ ...fields, code: (s.error as NodeJS.ErrnoException).code }, 'connection closed');
  else logger.info(fields, 'connection closed');
}

/** `host:port` for logs, with brackets around IPv6 hosts. */
export function formatAddress(address: string | net.AddressInfo | null | undefined): string {
  if (address === null || address === undefined) return 'unknown';
  if (typeof address === 'string') return address;
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
}

/** The step of a pipeline that takes an accepted socket and its owner. */
export type ServeStep = (socket: net.Socket, pending: PendingConnection) => void;

/** A part with a life of its own (certificate watchers, ping sweeps): started by listen(). */
export interface GatewayPart {
  start(): void;
  stop(): void;
}

/**
 * A gateway: listeners feeding a serve pipeline, plus the outbound Unix services when
 * asked for. `listen()` binds and starts, `close()` drains, `destroy()` cuts.
 */
export class Gateway {
  readonly core: GatewayCore;
  /** Transport name in logs (`tcp`, `tls`, `ws`, `wss`). */
  readonly transport: string;
  readonly outbound: OutboundService | null;
  private readonly serve: ServeStep;
  private readonly parts: readonly GatewayPart[];
  private servers: net.Server[] = [];

  constructor(core: GatewayCore, transport: string, serve: ServeStep, parts: readonly GatewayPart[] = []) {
    this.core = core;
    this.transport = transport;
    // [PROXY header] and per-IP admission first, once per connection.
    this.serve = clientAddressSteps(core, serve);
    this.parts = parts;
    const { outboundNames, outboundSchemes, outboundCa, sendProxyV2 } = core.options;
    this.outbound =
      outboundNames.length > 0
        ? new OutboundService(core, { names: outboundNames, schemes: outboundSchemes, sendProxyV2, ...(outboundCa ? { ca: outboundCa } : {}) })
        : null;
  }

  /** Bound TCP addresses, once listening (`unix:` listeners are in {@link paths}). */
  get addresses(): net.AddressInfo[] {
    return this.servers.map((s) => s.address()).filter((a): a is net.AddressInfo => a !== null && typeof a === 'object');
  }

  /** Bound Unix socket paths, once listening. */
  get paths(): string[] {
    return this.servers.map((s) => s.address()).filter((a): a is string => typeof a === 'string');
  }

  /** Live client connections. */
  get connections(): number {
    return this.core.connections;
  }

  /** Every configured listen address, and whether it is bound now (for /readyz). */
  get listeners(): { transport: string; listener: string; bound: boolean }[] {
    const bound = new Map(this.servers.filter((s) => s.listening).map((s) => [this.keys.get(s), this.labels.get(s)!.listener]));
    const configured = this.core.options.listen.map((address) => {
      const key = listenKey(address);
      const listener = bound.get(key);
      return { transport: this.transport, listener: listener ?? key, bound: listener !== undefined && !this.core.isClosing };
    });
    return [...configured, ...(this.outbound?.listeners ?? [])];
  }

  /**
   * Takes a client socket accepted elsewhere (or by our listeners): admission, then the
   * pipeline. Every socket gets an error listener first: an unhandled error kills the daemon.
   */
  readonly accept = (socket: net.Socket, labels?: ListenerLabels): void => {
    const acceptedAt = performance.now();
    socket.on('error', noop);
    const pending = this.core.admit(remoteOf(socket), acceptedAt, labels);
    if (pending instanceof IpcError) {
      socket.destroy();
      return;
    }
    pending.hold(socket);
    pending.clientAddress = socket.remoteAddress;
    this.serve(socket, pending);
  };

  /**
   * Starts the parts and the outbound service, then binds every listen address. A
   * listening socket found in `inherit` (a reload's predecessors, by {@link listenKey}) is
   * taken over instead of bound again: never closed and reopened, so no client is refused.
   */
  async listen(inherit?: Map<string, net.Server>): Promise<net.AddressInfo[]> {
    const { options, logger } = this.core;
    // An unsafe run directory (others may write it, another user owns it) is refused
    // before anything is served; a missing one is made with safe permissions.
    ensureRundir(options.rundir);
    // The outbound service first: a gateway that cannot serve it (name in use) fails
    // before logging `listening` for its ports.
    await this.outbound?.start(options.outboundRequired);
    for (const part of this.parts) part.start();
    const inherited = new Set<net.Server>();
    try {
      for (const address of options.listen) {
        const key = listenKey(address);
        const kept = inherit?.get(key);
        if (kept !== undefined) {
          inherit!.delete(key);
          inherited.add(kept);
          kept.removeAllListeners('connection');
          const labels = this.listenerLabels(key, kept);
          kept.on('connection', (socket: net.Socket) => this.accept(socket, labels));
          this.servers.push(kept);
          this.keys.set(kept, key);
          logger.info({ address: key, transport: this.transport, kept: true }, 'listening');
          continue;
        }
        // Set once bound (before the first accept: that comes in a later turn of the loop).
        let labels: ListenerLabels | undefined;
        const onConnection = (socket: net.Socket) => this.accept(socket, labels);
        const [server] = await bindAll([address], () => net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection), {
          backlog: options.backlog,
          logger,
          transport: this.transport,
        });
        labels = this.listenerLabels(key, server!);
        this.servers.push(server!);
        this.keys.set(server!, key);
      }
    } catch (err) {
      this.stopParts();
      // Sockets taken over go back to the pool (the reload decides what closes them);
      // the ones bound here close.
      for (const server of this.servers) {
        const key = this.keys.get(server)!;
        if (inherit !== undefined && inherited.has(server)) inherit.set(key, server);
        else server.close();
      }
      this.servers = [];
      await this.outbound?.close();
      throw err;
    }
    return this.addresses;
  }

  /** The configured address of each bound server. */
  private readonly keys = new Map<net.Server, string>();

  /** Metrics labels of each bound server. */
  private readonly labels = new Map<net.Server, ListenerLabels>();

  /**
   * The metrics labels of `server`, bound for `key` (shown at zero from now on): the
   * configured address, or the bound one when the port was left to the system (`:0`).
   */
  private listenerLabels(key: string, server: net.Server): ListenerLabels {
    const bound = server.address();
    const listener = key.endsWith(':0') && bound !== null && typeof bound === 'object' ? formatAddress(bound) : key;
    const labels = { transport: this.transport, listener };
    this.labels.set(server, labels);
    this.core.metrics.listenerUp(labels);
    return labels;
  }

  /**
   * Gives up the listening sockets (for a successor to take over) and stops admitting;
   * the connections it has go on until they end, then its parts stop. Returns the
   * sockets by {@link listenKey}.
   */
  release(): Map<string, net.Server> {
    const handed = new Map<string, net.Server>();
    for (const server of this.servers) handed.set(this.keys.get(server)!, server);
    this.servers = [];
    // No drain deadline: a reload never drops a connection of a gateway that stays.
    void this.core.table.close(2 ** 31 - 1).then(() => this.stopParts());
    void this.outbound?.close();
    return handed;
  }

  private stopParts(): void {
    for (const part of this.parts) part.stop();
  }

  /** Stops accepting, lets open connections finish within drainTimeout. */
  async close(): Promise<void> {
    this.stopParts();
    await Promise.all([closeAll(this.servers), this.outbound?.close(), this.core.close()]);
  }

  /** Closes every listener and connection now. */
  destroy(): void {
    this.stopParts();
    for (const s of this.servers) s.close();
    void this.outbound?.close();
    this.core.destroy();
  }
}

export function noop(): void {}

/** A listen address as a key: `unix:/path`, or `host:port` (`*:port` for every interface). */
export function listenKey(address: ListenAddress): string {
  return address.path !== undefined ? `unix:${address.path}` : `${address.host ?? '*'}:${address.port}`;
}

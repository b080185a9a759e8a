/**
 * What every gateway shares (DESIGN.md "One picture"): connection limits, target
 * selection (fixed service or a client-named one checked against an allow-list),
 * connecting the service, the switch, teardown logging, and a bounded drain on close.
 * Transports (tcp.ts, tls.ts, ws.ts) only accept clients and wrap them as endpoints.
 */
import type net from 'node:net';
import { connectService, connectServicePath } from '../src/client.js';
import { DEFAULT_MAX_PAYLOAD } from '../src/frame.js';
import { ErrorCode, IpcError, ipcError } from '../src/errors.js';
import { MAX_SERVICE_NAME_LENGTH, resolveRundir, serviceNameProblem, servicePath } from '../src/rundir.js';
import { SocketEndpoint, Switch, type Endpoint, type SwitchSummary } from '../src/switch.js';
import type { DirectReader } from '../src/direct-read.js';
import { silentLogger, type Logger } from '../src/log.js';

/** Options every gateway takes; CLI flags map one to one (kebab-case). */
export interface GatewayOptions {
  /** Fixed target: every client reaches this service. Exclusive with `allow`. */
  service?: string;
  /** Client-named targets allowed: a list of names, or `'*'` for any valid name. */
  allow?: readonly string[] | '*';
  /** Run directory (default `$RUNDIR` or `/tmp/.libipc-run/`). */
  rundir?: string;
  /** Largest libipc payload passed, bytes (default 99,992, the original's limit). */
  maxPayload?: number;
  /** Time a client has to finish its handshakes, ms (default 5000). */
  handshakeTimeout?: number;
  /** Concurrent client connections, handshakes included (default 10000). */
  maxConnections?: number;
  /** Longest service name a client may send, bytes (default 64). */
  maxNameLength?: number;
  /** Time open connections get to finish once close() is called, ms (default 10000). */
  drainTimeout?: number;
  /** Time the other direction gets after one side half-closed, ms (default 5000). */
  halfCloseTimeout?: number;
  /**
   * Close a switched connection after this many ms without a byte either way (0: never,
   * the default: libipc connections may rightly stay quiet). Checked by one sweep timer.
   */
  idleTimeout?: number;
  /** Read service sockets through net `onread` buffers (less CPU, +128 KiB per connection; default false). */
  directRead?: boolean;
  logger?: Logger;
}

/** Options with defaults applied. */
export interface ResolvedGatewayOptions {
  service: string | undefined;
  allow: ReadonlySet<string> | '*';
  rundir: string;
  maxPayload: number;
  handshakeTimeout: number;
  maxConnections: number;
  maxNameLength: number;
  drainTimeout: number;
  halfCloseTimeout: number;
  idleTimeout: number;
  directRead: boolean;
  logger: Logger;
}

/** Applies defaults and checks that exactly one way of choosing the target is given. */
export function resolveGatewayOptions(options: GatewayOptions): ResolvedGatewayOptions {
  const hasAllow = options.allow !== undefined && (options.allow === '*' || options.allow.length > 0);
  // Neither is allowed for a gateway that only serves outbound connections.
  if (options.service !== undefined && hasAllow) {
    throw new TypeError('give one of `service` (fixed target) or `allow` (client-named targets), not both');
  }
  if (options.service !== undefined) {
    const problem = serviceNameProblem(options.service);
    if (problem) throw ipcError(ErrorCode.INVALID_SERVICE_NAME, `invalid service name '${options.service}': ${problem}`);
  }
  return {
    service: options.service,
    allow: options.allow === '*' ? '*' : new Set(options.allow ?? []),
    rundir: options.rundir ?? resolveRundir(),
    maxPayload: options.maxPayload ?? DEFAULT_MAX_PAYLOAD,
    handshakeTimeout: options.handshakeTimeout ?? 5000,
    maxConnections: options.maxConnections ?? 10_000,
    maxNameLength: options.maxNameLength ?? MAX_SERVICE_NAME_LENGTH,
    drainTimeout: options.drainTimeout ?? 10_000,
    halfCloseTimeout: options.halfCloseTimeout ?? 5000,
    idleTimeout: options.idleTimeout ?? 0,
    directRead: options.directRead ?? false,
    logger: options.logger ?? silentLogger,
  };
}

/** Per-connection facts that go into the teardown log line. */
export interface ConnectionInfo {
  conn: number;
  peer: string | undefined;
  /** Extra fields for the log line (TLS identity, WebSocket origin...). */
  [key: string]: unknown;
}

/**
 * The shared core of a gateway. A transport calls {@link admit} for each accepted client,
 * {@link selectTarget} once it knows which service the client asks for (if any), and
 * {@link bridge} to connect the service and switch.
 */
export class GatewayCore {
  readonly options: ResolvedGatewayOptions;
  readonly logger: Logger;
  /** Live client connections: in their handshake or switched. */
  private readonly live = new Set<{ close(reason: string, err?: Error): void }>();
  private nextConn = 1;
  private closing = false;
  /** `$RUNDIR/<service>` of a fixed target, validated once. */
  private readonly fixedPath: string | null;
  private closed: Promise<void> | null = null;
  private drained: (() => void) | null = null;

  constructor(options: GatewayOptions) {
    this.options = resolveGatewayOptions(options);
    this.logger = this.options.logger;
    const { service, rundir } = this.options;
    this.fixedPath = service === undefined ? null : servicePath(service, rundir);
  }

  /** Number of live client connections. */
  get connections(): number {
    return this.live.size;
  }

  /** True once close() or destroy() was called. */
  get isClosing(): boolean {
    return this.closing;
  }

  /**
   * Admits a new client or refuses it (connection limit, or closing). Returns the info
   * to carry through the connection's life, or null when the caller must drop it.
   */
  admit(peer: string | undefined): ConnectionInfo | null {
    const info: ConnectionInfo = { conn: this.nextConn++, peer };
    if (this.closing) {
      this.logger.info({ ...info, reason: 'gateway is closing' }, 'connection refused');
      return null;
    }
    if (this.live.size >= this.options.maxConnections) {
      const err = ipcError(ErrorCode.TOO_MANY_CONNECTIONS, `limit of ${this.options.maxConnections} connections reached`);
      this.logger.warn({ ...info, code: err.code, reason: err.message }, 'connection refused');
      return null;
    }
    return info;
  }

  /**
   * Which service a client reaches. `requested` is the name the client sent (undefined
   * for a fixed target). Returns the validated name, or a coded error for the refusal.
   */
  selectTarget(requested: string | undefined): string | IpcError {
    const { service, allow, maxNameLength } = this.options;
    if (service !== undefined) return service;
    if (requested === undefined) {
      return ipcError(ErrorCode.INVALID_SERVICE_NAME, 'no service name given');
    }
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
   * Logs a refused client (no byte is sent to it by the caller). Expected refusals (coded
   * errors) log their code and reason; anything else logs the whole error.
   */
  refuse(info: ConnectionInfo, err: Error, extra: Record<string, unknown> = {}): void {
    const detail = err instanceof IpcError ? { code: err.code } : { err };
    this.logger.warn({ ...info, ...extra, ...detail, reason: err.message }, 'connection refused');
  }

  /**
   * Tracks a client still in its handshake so close()/destroy() reach it. Returns the
   * function that stops tracking it.
   */
  track(handle: { close(reason: string, err?: Error): void }): () => void {
    this.live.add(handle);
    return () => this.untrack(handle);
  }

  /**
   * Connects to `service` and resolves the socket; rejects with a coded error. With a
   * `reader`, the socket reads through it (for byte-stream clients: see DirectReader).
   */
  connectTarget(service: string, reader?: DirectReader): Promise<net.Socket> {
    const options = { rundir: this.options.rundir, allowHalfOpen: true, ...(reader ? { onread: reader.onread } : {}) };
    if (service === this.options.service && this.fixedPath !== null) return connectServicePath(service, this.fixedPath, options);
    return connectService(service, options);
  }

  /** Wraps a connected service socket as the service endpoint of a switch. */
  serviceEndpoint(upstream: net.Socket, reader?: DirectReader): SocketEndpoint {
    return new SocketEndpoint('service', upstream, this.options.maxPayload, reader ?? null);
  }

  /** Switches `client` with `serviceEndpoint` (connected to `service`), logging its end. */
  bridge(info: ConnectionInfo, service: string, client: Endpoint, serviceEndpoint: Endpoint): Switch {
    const logger = this.logger;
    const sw = new Switch(client, serviceEndpoint, {
      halfCloseTimeout: this.options.halfCloseTimeout,
      onClose: (summary: SwitchSummary) => {
        this.untrack(sw);
        logConnectionEnd(logger, info, service, summary);
      },
    });
    this.live.add(sw);
    sw.start();
    if (this.options.idleTimeout > 0) this.watchIdle(sw);
    return sw;
  }

  /** Switches watched for idleness, with their byte total at the last sweep. */
  private readonly idle = new Map<Switch, { bytes: number; quietSince: number }>();
  private idleTimer: NodeJS.Timeout | null = null;

  /**
   * Idle detection costs nothing per chunk: a sweep compares each switch's byte counters
   * with the previous sweep's (per-socket timers cost ~10 % CPU: PERFORMANCE.md).
   */
  private watchIdle(sw: Switch): void {
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
   * Stops admitting clients and lets open connections finish within `drainTimeout`;
   * the rest are closed with `IPC_ERR_SHUTDOWN`. Resolves when none is left.
   */
  close(): Promise<void> {
    this.closing = true;
    this.closed ??= this.live.size === 0 ? Promise.resolve() : this.drain();
    return this.closed;
  }

  private drain(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.destroy(), this.options.drainTimeout);
      timer.unref();
      this.drained = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Closes every connection now. */
  destroy(): void {
    this.closing = true;
    const err = ipcError(ErrorCode.SHUTDOWN, 'gateway shut down');
    for (const handle of [...this.live]) handle.close('gateway shut down', err);
  }

  private untrack(handle: object): void {
    this.live.delete(handle as never);
    if (this.live.size === 0 && this.drained) {
      const done = this.drained;
      this.drained = null;
      done();
    }
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

/**
 * ipcd: libipc's network lookup service (service `ipc`, PROTOCOL.md §4).
 *
 * A client sends one frame `<service>;<IPC_NETWORK>`. ipcd picks the last entry for the
 * service and gets a connected socket for it:
 * - `unix://NAME`: it connects `$RUNDIR/NAME` itself;
 * - `<scheme>://host:port/path`: it connects the local gateway serving `<scheme>`, sends
 *   the URI as one frame and waits (bounded) for the framed `ok`.
 * It then passes that socket to the client: sendmsg with the 2 bytes `ok` and the
 * descriptor in SCM_RIGHTS, as the original, and closes its own copies.
 * Every failure closes the lookup without a byte, promptly, logs why, and ipcd keeps
 * serving; lookups never wait on each other.
 */
import net from 'node:net';
import { FrameDecoder, encodeFrame } from '../src/frame.js';
import { ErrorCode, IpcError, ipcError } from '../src/errors.js';
import { ConnectionTable, PendingConnection } from './lifecycle.js';
import { OptionsError } from './options.js';
import { parseLookup, parseTarget, routeFor } from '../src/network.js';
import { resolveRundir, serviceNameProblem, servicePath } from '../src/rundir.js';
import { serveService, type ServiceServer } from '../src/service.js';
import { descriptorOf, handOverSocket } from '../src/fdpass.js';
import { isSymbolicLink } from '../src/client.js';
import { silentLogger, type Logger } from '../src/log.js';
import type { GatewayMetrics } from './metrics.js';

/** The framed `ok` a gateway answers once its remote side is switched. */
const FRAMED_OK = encodeFrame('ok');

export interface IpcdOptions {
  /** Run directory (default `$RUNDIR` or `/tmp/.libipc-run/`). */
  rundir?: string;
  /** Service name (default `ipc`, what libipc clients connect to). */
  name?: string;
  /** Time a lookup may take from accept to the passed descriptor, ms (default 5000). */
  lookupTimeout?: number;
  /** Lookups in progress at once; more are refused (default 1024). */
  maxLookups?: number;
  logger?: Logger;
  /** Where lookups are counted (`libipc_lookups_total{result}`); default: not counted. */
  metrics?: GatewayMetrics;
}

/** Creates the lookup service; nothing starts before `start()`. */
export function createIpcd(options: IpcdOptions = {}): Ipcd {
  return new Ipcd(options);
}

function checkedInteger(value: number | undefined, fallback: number, name: string, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min || value > max) throw new OptionsError(name, `an integer from ${min} to ${max}`, value);
  return value;
}

export class Ipcd {
  private readonly rundir: string;
  private readonly name: string;
  readonly lookupTimeout: number;
  private readonly maxLookups: number;
  readonly logger: Logger;
  readonly metrics: GatewayMetrics | null;
  /** Lookups in progress: each a pending connection whose hand-over is the passed descriptor. */
  private readonly table: ConnectionTable;
  private server: ServiceServer | null = null;
  private nextId = 1;

  constructor(options: IpcdOptions = {}) {
    this.rundir = options.rundir ?? resolveRundir();
    this.name = options.name ?? 'ipc';
    const problem = serviceNameProblem(this.name);
    if (problem) throw new OptionsError('name', 'a valid service name', `${this.name} (${problem})`);
    this.lookupTimeout = checkedInteger(options.lookupTimeout, 5000, 'lookupTimeout', 1, 24 * 3600 * 1000);
    this.maxLookups = checkedInteger(options.maxLookups, 1024, 'maxLookups', 1, 10_000_000);
    this.logger = options.logger ?? silentLogger;
    this.metrics = options.metrics ?? null;
    this.table = new ConnectionTable(this.lookupTimeout);
  }

  /** The socket path, once started. */
  get path(): string | undefined {
    return this.server?.path;
  }

  /** Lookups in progress. */
  get lookups(): number {
    return this.table.size;
  }

  async start(): Promise<void> {
    this.server = await serveService(this.name, {
      rundir: this.rundir,
      // A client may half-close after its lookup and still wait for the answer.
      allowHalfOpen: true,
      onConnection: (socket) => this.onLookup(socket),
    });
    this.logger.info({ service: this.name, path: this.server.path }, 'listening');
  }

  /** Stops accepting; lookups in progress are closed. */
  async close(): Promise<void> {
    this.table.destroy();
    await this.server?.close();
  }

  /** The one refusal line of a lookup: what it asked for, why, with a code, and how long it took. */
  private readonly reportRefusal = (pending: PendingConnection, err: IpcError, extra: Record<string, unknown>): void => {
    const { conn, peer: _peer, ...asked } = pending.info;
    const durationMs = Math.round(performance.now() - pending.acceptedAt);
    this.logger.warn({ lookup: conn, ...asked, ...extra, code: err.code, reason: err.message, durationMs }, 'lookup refused');
    this.metrics?.lookup(err.code);
  };

  private onLookup(client: net.Socket): void {
    client.on('error', noop);
    const id = this.nextId++;
    if (this.table.size >= this.maxLookups) {
      const err = ipcError(ErrorCode.TOO_MANY_CONNECTIONS, `limit of ${this.maxLookups} lookups in progress reached`);
      this.logger.warn({ lookup: id, code: err.code, reason: err.message }, 'lookup refused');
      this.metrics?.lookup(err.code);
      client.destroy();
      return;
    }
    const pending = new PendingConnection(this.table, { conn: id, peer: undefined }, this.lookupTimeout, this.reportRefusal);
    pending.stage = 'lookup';
    new Lookup(this, client, pending, this.rundir);
  }
}

/** The states of one lookup, in order; each failure leaves from any of them to REFUSED. */
const LookupState = {
  /** Waiting for the lookup frame. */
  READING: 0,
  /** Connecting the service or the local gateway for the route. */
  CONNECTING: 1,
  /** The descriptor was passed (or passing failed): the lookup is over. */
  DONE: 2,
} as const;
type LookupState = (typeof LookupState)[keyof typeof LookupState];

/**
 * One lookup, as an explicit state machine: READING the frame `<service>;<IPC_NETWORK>`,
 * CONNECTING what the route names, DONE once the descriptor is passed. Its pending
 * connection holds the deadline, the refusal path and what to close.
 */
class Lookup {
  private state: LookupState = LookupState.READING;
  private readonly decoder = new FrameDecoder();
  private readonly ipcd: Ipcd;
  private readonly client: net.Socket;
  private readonly pending: PendingConnection;
  private readonly rundir: string;

  constructor(ipcd: Ipcd, client: net.Socket, pending: PendingConnection, rundir: string) {
    this.ipcd = ipcd;
    this.client = client;
    this.pending = pending;
    this.rundir = rundir;
    pending.hold(client);
    client.on('data', this.onData);
    client.on('end', this.onEnd);
    client.on('close', this.onClose);
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.state !== LookupState.READING) return;
    let frames: Buffer[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.pending.refuse(err as Error);
      return;
    }
    const frame = frames[0];
    if (frame === undefined) return;
    this.client.pause();
    this.state = LookupState.CONNECTING;
    try {
      this.connect(frame);
    } catch (err) {
      this.pending.refuse(err as Error);
    }
  };

  private readonly onEnd = (): void => {
    // A half-close after the lookup frame is fine: the client still waits for the answer.
    if (this.state === LookupState.READING) {
      this.pending.refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client closed before sending its lookup'));
    }
  };

  private readonly onClose = (): void => {
    this.pending.refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client left before its lookup was answered'));
  };

  /** Parses the lookup, picks the route, and connects what it names. @throws IpcError */
  private connect(frame: Buffer): void {
    const info = this.pending.info;
    const request = parseLookup(frame.toString('latin1'));
    info['service'] = request.service;
    const route = routeFor(request.service, request.network);
    if (route === null) throw ipcError(ErrorCode.NO_ROUTE, `no route for '${request.service}' in IPC_NETWORK`);
    info['target'] = route;
    const parsed = parseTarget(route);
    const name = parsed.scheme === 'unix' && 'name' in parsed ? parsed.name : parsed.scheme;
    const socketPath = servicePath(name, this.rundir);
    // As every service connection: a name in $RUNDIR that is a symbolic link is not followed.
    if (isSymbolicLink(socketPath)) {
      throw ipcError(ErrorCode.SERVICE_UNAVAILABLE, `${socketPath} is a symbolic link, which is not followed`);
    }
    const upstream = parsed.scheme === 'unix' ? connectLocalService(socketPath) : connectLocalGateway(socketPath, parsed.uri);
    this.pending.hold(upstream);
    upstream.ready.then(
      () => this.pass(upstream),
      (err: Error) => this.pending.refuse(err),
    );
  }

  /** Passes the connected socket to the client: `ok` + SCM_RIGHTS, as the original. */
  private pass(upstream: net.Socket): void {
    if (!this.pending.handOver()) return; // refused meanwhile: what it held is closed
    this.state = LookupState.DONE;
    const { service, target } = this.pending.info;
    const durationMs = Math.round(performance.now() - this.pending.acceptedAt);
    const log = { lookup: this.pending.info.conn, service, target };
    try {
      // Our copy of the service socket is never read nor ended: once the descriptor is
      // passed the client owns the connection; we only close ours.
      handOverSocket(descriptorOf(this.client), upstream);
      this.ipcd.logger.info({ ...log, durationMs }, 'lookup answered');
      this.ipcd.metrics?.lookup('ok');
    } catch (err) {
      const coded = err instanceof IpcError ? err : ipcError(ErrorCode.FD_PASSING, `passing the descriptor failed: ${(err as Error).message}`, err);
      this.ipcd.logger.warn({ ...log, code: coded.code, reason: coded.message, durationMs }, 'lookup refused');
      this.ipcd.metrics?.lookup(coded.code);
      upstream.destroy();
    }
    this.client.destroy();
  }
}

/** Connects a local service for `unix://` targets; never reads from it. */
function connectLocalService(socketPath: string): net.Socket & { ready: Promise<void> } {
  const socket = new net.Socket() as net.Socket & { ready: Promise<void> };
  // Paused before it connects, so Node never starts reading it (PROTOCOL.md §4a).
  socket.pause();
  socket.ready = new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', (err: NodeJS.ErrnoException) =>
      reject(ipcError(ErrorCode.SERVICE_UNAVAILABLE, `local service at ${socketPath} unavailable (${err.code ?? err.message})`, err)),
    );
  });
  socket.connect({ path: socketPath });
  return socket;
}

/**
 * Connects the local gateway, sends the URI frame and reads exactly the framed `ok`.
 * Reads go into buffers sized to what is still expected, so no byte past the `ok`
 * is ever taken from the socket: what follows belongs to the client.
 */
function connectLocalGateway(socketPath: string, uri: string): net.Socket & { ready: Promise<void> } {
  const expected = FRAMED_OK.length;
  const answer = Buffer.alloc(expected);
  let have = 0;
  let settle: ((err?: Error) => void) | null = null;
  const socket = net.connect({
    path: socketPath,
    onread: {
      buffer: () => answer.subarray(have),
      callback: (nread: number) => {
        have += nread;
        if (have < expected) return true;
        settle?.(answer.equals(FRAMED_OK) ? undefined : ipcError(ErrorCode.HANDSHAKE_REFUSED, `gateway answered ${answer.toString('hex')} instead of ok`));
        return false; // stop reading: the rest is the client's
      },
    },
  }) as net.Socket & { ready: Promise<void> };
  socket.ready = new Promise<void>((resolve, reject) => {
    settle = (err) => {
      settle = null;
      if (err) reject(err);
      else resolve();
    };
    socket.once('connect', () => socket.write(encodeFrame(uri)));
    socket.once('error', (err: NodeJS.ErrnoException) =>
      settle?.(ipcError(ErrorCode.SERVICE_UNAVAILABLE, `no local gateway at ${socketPath} (${err.code ?? err.message})`, err)),
    );
    socket.once('end', () => settle?.(ipcError(ErrorCode.HANDSHAKE_REFUSED, `local gateway refused ${uri} (closed after ${have} bytes)`)));
  });
  return socket;
}

function noop(): void {}

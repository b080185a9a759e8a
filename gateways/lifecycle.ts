/**
 * One owner for a connection's life (DESIGN.md, second wave): a client is a
 * {@link PendingConnection} from accept until it is switched (or its descriptor passed,
 * for ipcd) or refused, then the switch. Both live in one {@link ConnectionTable}, so
 * "drained" means no connection in any state, and the hand-over from pending to switched
 * is one synchronous step that a drain cannot see half done.
 *
 * Deadlines: every byte before the switch (PROXY header, TLS, name, HTTP upgrade, lookup)
 * is under one deadline counted from accept, kept by one sweep timer per table rather than
 * a timer per connection (a timer per connection costs ~10 % CPU: PERFORMANCE.md).
 */
import { ErrorCode, IpcError, ipcError } from '../src/errors.js';
import type { ListenerLabels } from './metrics.js';

/** Labels of a connection no listener accepted (handed in by an application). */
export const NO_LISTENER: ListenerLabels = Object.freeze({ transport: 'unknown', listener: 'none' });

/** What the table can close: a pending connection, a switch. */
export interface Tracked {
  close(reason: string, err?: Error): void;
}

/** Something a pending connection holds and closes when refused (sockets, dials). */
export interface Holdable {
  destroy(): void;
}

/** Per-connection facts that go into every log line of the connection. */
export interface ConnectionInfo {
  conn: number;
  peer: string | undefined;
  /** Extra fields for the log line (TLS identity, WebSocket origin...). */
  [key: string]: unknown;
}

/** How a refusal is reported (the gateway logs `connection refused`, ipcd `lookup refused`). */
export type RefusalReporter = (pending: PendingConnection, err: IpcError, extra: Record<string, unknown>) => void;

/** Time a refusal response (an HTTP status) gets to reach the client before the socket is cut. */
export const RESPONSE_GRACE_MS = 2000;

/**
 * Live connections and pending deadlines. `close(drainTimeout)` stops admitting and
 * resolves once none is left, closing what remains when the drain timeout passes.
 */
export class ConnectionTable {
  private readonly live = new Set<Tracked>();
  private readonly pending = new Set<PendingConnection>();
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly sweepPeriod: number;
  private closingFlag = false;
  private closed: Promise<void> | null = null;
  private drained: (() => void) | null = null;
  private drainTimer: NodeJS.Timeout | null = null;
  /** What runs when a connection is gone for good (per-IP slots): moved along at a hand-over. */
  private readonly finalizers = new Map<Tracked, Array<() => void>>();

  /** @param handshakeTimeout the deadline length, which sets how often the sweep runs. */
  constructor(handshakeTimeout: number) {
    // A tenth of the deadline, within [10 ms, 1 s]: a refusal comes at most that late.
    this.sweepPeriod = Math.min(1000, Math.max(10, Math.floor(handshakeTimeout / 10)));
  }

  /** Connections in any state. */
  get size(): number {
    return this.live.size;
  }

  /** Connections still in their handshakes. */
  get pendingCount(): number {
    return this.pending.size;
  }

  get closing(): boolean {
    return this.closingFlag;
  }

  add(item: Tracked): void {
    this.live.add(item);
  }

  delete(item: Tracked): void {
    if (!this.live.delete(item)) return;
    if (item instanceof PendingConnection) this.pending.delete(item);
    const finalizers = this.finalizers.get(item);
    if (finalizers !== undefined) {
      this.finalizers.delete(item);
      for (const fn of finalizers) fn();
    }
    if (this.live.size === 0 && this.drained) this.drained();
  }

  /** @internal A pending connection with a deadline: the sweep watches it. */
  watch(item: PendingConnection): void {
    this.live.add(item);
    this.pending.add(item);
    // Started by the first connection, not by a constructor, and never keeps the process alive.
    if (this.sweepTimer === null) {
      this.sweepTimer = setInterval(() => this.sweep(), this.sweepPeriod);
      this.sweepTimer.unref();
    }
  }

  /**
   * Hands `from` (pending) over to `to` (its switch) in one step: `to` is live before
   * `from` leaves, so a drain never sees zero connections in between.
   */
  replace(from: PendingConnection, to: Tracked): void {
    this.live.add(to);
    const finalizers = this.finalizers.get(from);
    if (finalizers !== undefined) {
      this.finalizers.delete(from);
      this.finalizers.set(to, finalizers);
    }
    this.delete(from);
  }

  /**
   * Runs `fn` once `item` is gone: deleted from the table (refused, ended, its switch
   * closed), or at once if it is not live. A hand-over ({@link replace}) passes it on.
   */
  whenGone(item: Tracked, fn: () => void): void {
    if (!this.live.has(item)) {
      fn();
      return;
    }
    const list = this.finalizers.get(item);
    if (list === undefined) this.finalizers.set(item, [fn]);
    else list.push(fn);
  }

  private sweep(): void {
    if (this.pending.size === 0) {
      if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
      this.sweepTimer = null;
      return;
    }
    const now = performance.now();
    for (const item of this.pending) {
      if (now >= item.deadline) item.expire();
    }
  }

  /**
   * Stops admitting; resolves when no connection is left. What is still open after
   * `drainTimeout` ms (connections that finished their handshake after this call
   * included) is closed with `IPC_ERR_SHUTDOWN`.
   */
  close(drainTimeout: number): Promise<void> {
    this.closingFlag = true;
    this.closed ??= new Promise<void>((resolve) => {
      this.drained = () => {
        this.drained = null;
        if (this.drainTimer !== null) clearTimeout(this.drainTimer);
        this.drainTimer = null;
        this.stopSweep();
        resolve();
      };
      if (this.live.size === 0) {
        this.drained();
        return;
      }
      this.drainTimer = setTimeout(() => this.destroy(), drainTimeout);
      this.drainTimer.unref();
    });
    return this.closed;
  }

  /** Closes every connection now. */
  destroy(): void {
    this.closingFlag = true;
    const err = ipcError(ErrorCode.SHUTDOWN, 'gateway shut down');
    for (const item of [...this.live]) item.close('gateway shut down', err);
    if (this.live.size === 0) this.stopSweep();
  }

  private stopSweep(): void {
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
  }
}

/** The coded error for anything a client's socket reports during its handshake. */
export function asHandshakeError(err: Error): IpcError {
  if (err instanceof IpcError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  return ipcError(ErrorCode.HANDSHAKE_ABORTED, `client connection failed during the handshake (${code ?? err.message})`, err);
}

/**
 * A client from accept to its hand-over (or refusal): tracked by its table, bounded by
 * `deadline`, ended once. Whatever it holds (sockets, a service connection, a dial) is
 * closed when it is refused; nothing is closed by a hand-over.
 */
export class PendingConnection implements Tracked {
  readonly info: ConnectionInfo;
  /** performance.now() by which every handshake must be over. */
  readonly deadline: number;
  /** performance.now() at accept. */
  readonly acceptedAt: number;
  /** What is being waited for, for the timeout message (`name handshake`, `TLS handshake`...). */
  stage = 'handshake';
  /**
   * The client's IP address (no port), for per-IP limits: the TCP peer's at accept, the
   * PROXY or forwarded one once known; undefined for a Unix client without a PROXY header.
   * `info.peer` is the same address as logged (with its port).
   */
  clientAddress: string | undefined = undefined;
  /** Set once per-IP admission ran for {@link clientAddress} (it runs once per connection). */
  addressAdmitted = false;
  private readonly table: ConnectionTable;
  private readonly report: RefusalReporter;
  private readonly timeout: number;
  private held: Holdable[] = [];
  private ended = false;
  /** Where it came in (metrics labels); set by the gateway that admitted it. */
  labels: ListenerLabels = NO_LISTENER;
  /** Called once when it settles (hand-over, refusal or end): the gateway's bookkeeping. */
  onSettle: (() => void) | null = null;

  constructor(table: ConnectionTable, info: ConnectionInfo, timeout: number, report: RefusalReporter, start = performance.now()) {
    this.table = table;
    this.info = info;
    this.timeout = timeout;
    this.acceptedAt = start;
    this.deadline = start + timeout;
    this.report = report;
    table.watch(this);
  }

  /**
   * Runs `fn` once the connection is gone for good, whatever the path: refused (deadline
   * included), ended, or handed over and its switch closed.
   */
  whenGone(fn: () => void): void {
    this.table.whenGone(this, fn);
  }

  /** True once handed over or refused. */
  get settled(): boolean {
    return this.ended;
  }

  /** Closes `resource` too if the connection is refused; destroys it now if already settled. */
  hold(resource: Holdable): void {
    if (this.ended) resource.destroy();
    else this.held.push(resource);
  }

  /**
   * Ends the pending state for a hand-over to `to` (the switch), atomically with respect
   * to drain. False when the connection was already refused: the caller then closes
   * what it was about to hand over.
   */
  handOver(to?: Tracked): boolean {
    if (this.ended) return false;
    this.ended = true;
    this.held = [];
    this.onSettle?.();
    if (to) this.table.replace(this, to);
    else this.table.delete(this);
    return true;
  }

  /**
   * Refuses the client: logs why (with a code) and closes everything held. Without a
   * `response`, no byte is sent (what original libipc clients expect); with one (an HTTP
   * status for WebSocket clients), the response is flushed before the close.
   */
  refuse(err: Error, extra: Record<string, unknown> = {}, response?: { socket: ResponseSocket; bytes: string }): void {
    if (this.ended) return;
    this.ended = true;
    this.table.delete(this);
    this.onSettle?.();
    const held = this.held;
    this.held = [];
    if (response) sendAndClose(response.socket, response.bytes);
    // Outer layers first (a TLS socket before the socket under it: destroying the
    // socket under a live TLS socket first can crash Node).
    // What lies under the response socket (the raw socket under a TLS socket) stays
    // until the response socket closed: cutting it now would reset the response away.
    const at = response ? held.indexOf(response.socket) : -1;
    for (let i = held.length - 1; i > at; i--) held[i]!.destroy();
    if (at > 0) {
      response!.socket.once('close', () => {
        for (let i = at - 1; i >= 0; i--) held[i]!.destroy();
      });
    }
    this.report(this, asHandshakeError(err), extra);
  }

  /**
   * Set by a step whose connection may rightly end at the deadline without a refusal
   * (an HTTP connection that only fetched pages): returns true when it closed it itself.
   */
  onExpire: (() => boolean) | null = null;

  /** @internal Called by the sweep once the deadline passed. */
  expire(): void {
    if (this.onExpire?.()) return;
    this.refuse(ipcError(ErrorCode.HANDSHAKE_TIMEOUT, `${this.stage} not finished within ${this.timeout} ms`));
  }

  /** Ends without a refusal (an ordinary end, logged by the caller): closes what it holds. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.table.delete(this);
    this.onSettle?.();
    const held = this.held;
    this.held = [];
    for (let i = held.length - 1; i >= 0; i--) held[i]!.destroy();
  }

  /** Table protocol: shutdown or destroy. */
  close(reason: string, err?: Error): void {
    this.refuse(err ?? ipcError(ErrorCode.SHUTDOWN, reason));
  }
}

/** The part of a socket a refusal response needs. */
export interface ResponseSocket extends Holdable {
  readonly destroyed: boolean;
  readonly writable: boolean;
  end(data: string, cb?: () => void): unknown;
  resume(): unknown;
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  once(event: 'close', listener: () => void): unknown;
}

/**
 * Writes `bytes`, half-closes, and destroys once the client closed too or after
 * {@link RESPONSE_GRACE_MS}. Not destroyed at once: closing a socket with unread input
 * makes the kernel send a reset, which can discard the response before the client reads it.
 */
export function sendAndClose(socket: ResponseSocket, bytes: string): void {
  if (socket.destroyed) return;
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const timer = setTimeout(() => socket.destroy(), RESPONSE_GRACE_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  // Input is read and dropped until the client closes: its close ends the wait.
  socket.on('data', discard);
  socket.resume();
  socket.end(bytes);
}

function discard(): void {}

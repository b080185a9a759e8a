/**
 * A switch joins two endpoints (an external client and a service connection) so that
 * what one receives is sent by the other. It is libipc's SWITCHED connection pair
 * (seeds/context.zig `add_switch`), the Node way.
 *
 * Callback contract: each endpoint has `in`, which turns what its transport received
 * into libipc frame bytes handed to `forward`, and `out`, which turns libipc frame bytes
 * into what its transport sends. Each call ends in one of libipc's four outcomes:
 * {@link Outcome.MESSAGE}, {@link Outcome.IGNORE}, {@link Outcome.CLOSING}, or an Error.
 * CLOSING and errors tear both endpoints down, once.
 *
 * Flow control: when `out` leaves the destination needing a drain, the source is paused
 * until the destination drains, so a slow reader slows its writer and memory stays
 * bounded. End of input is forwarded as a half-close (FIN) so a reply sent after a
 * client's FIN still reaches it; the other direction then has `halfCloseTimeout` ms.
 */
import type net from 'node:net';
import { FrameTracker, DEFAULT_MAX_PAYLOAD } from './frame.js';
import type { DirectReader, ReadConsumer } from './direct-read.js';

/** libipc's callback outcomes (the original's CBEvent types). An Error is the fourth. */
export const Outcome = {
  /** Bytes were produced/sent. */
  MESSAGE: 0,
  /** Nothing to pass on (e.g. a partial unit kept for later). */
  IGNORE: 1,
  /** The endpoint is closing cleanly: tear the switch down. */
  CLOSING: 2,
} as const;

export type SwitchResult = (typeof Outcome)[keyof typeof Outcome] | Error;

/** Hands libipc frame bytes to the other endpoint's `out`. */
export type Forward = (bytes: Buffer) => void;

/** Time an endpoint has to flush what is queued for it when its switch ends (ms). */
export const FINISH_GRACE_MS = 5000;

/** What the switch needs from an endpoint's transport, and its two callbacks. */
export abstract class Endpoint {
  /** `client` or `service`, for logs. */
  readonly role: string;
  /** Bytes received from / sent to this endpoint's transport. */
  bytesIn = 0;
  bytesOut = 0;
  /** Set by the switch that owns this endpoint (when it starts). @internal */
  owner: Switch | null = null;
  /** Input reached its end (EOF seen). */
  inputEnded = false;
  /** The transport is fully closed. */
  closed = false;

  constructor(role: string) {
    this.role = role;
  }

  /** libipc messages received from this endpoint's transport (complete frames). */
  abstract get messagesIn(): number;
  /** Turns received data into frame bytes for `forward`. */
  abstract in(data: Buffer, forward: Forward): SwitchResult;
  /** Sends frame bytes through this endpoint's transport. */
  abstract out(bytes: Buffer): SwitchResult;
  /** Called at end of input: CLOSING when it ended at a frame boundary, else an Error. */
  abstract endInput(): SwitchResult;
  /** True when the transport holds more than it wants and the source should pause. */
  abstract get needsDrain(): boolean;
  abstract pause(): void;
  abstract resume(): void;
  /** Half-close: no more output after what is queued. */
  abstract endOutput(): void;
  /** Closes the transport now; `err` (when the switch failed) may choose how to tell the peer. */
  abstract destroy(err?: Error): void;
  /**
   * Closes the transport once what is queued for it was sent (its peer failed or closed):
   * nothing already accepted is lost. Bounded: cut after {@link FINISH_GRACE_MS}.
   */
  abstract finish(err?: Error): void;
  /** Attaches transport listeners that report to `owner`. */
  abstract start(owner: Switch): void;
  /** A short description of the remote peer, for logs. */
  abstract get peer(): string | undefined;
}

/**
 * An endpoint over a byte stream (TCP, TLS, Unix socket) whose bytes already are libipc
 * frames: `in` forwards every chunk untouched while a {@link FrameTracker} follows frame
 * boundaries (to enforce maxPayload and count messages without copying); `out` writes.
 */
export class SocketEndpoint extends Endpoint implements ReadConsumer {
  readonly socket: net.Socket;
  private readonly tracker: FrameTracker;
  private readonly reader: DirectReader | null;
  /** The byte socket this endpoint's input is written to, for a {@link DirectReader}. */
  private sink: net.Socket | null = null;

  /**
   * @param reader set when `socket` was created with `reader.onread`: input then comes
   *   from it instead of 'data' events.
   */
  constructor(role: string, socket: net.Socket, maxPayload = DEFAULT_MAX_PAYLOAD, reader: DirectReader | null = null) {
    super(role);
    this.socket = socket;
    this.tracker = new FrameTracker(maxPayload);
    this.reader = reader;
  }

  /** Tells a direct reader which socket its bytes are written to (see DirectReader). */
  writesTo(sink: Endpoint): void {
    if (sink instanceof SocketEndpoint) this.sink = sink.socket;
  }

  get messagesIn(): number {
    return this.tracker.frames;
  }

  get peer(): string | undefined {
    const { remoteAddress, remotePort } = this.socket;
    if (remoteAddress === undefined) return undefined;
    return remoteAddress.includes(':') ? `[${remoteAddress}]:${remotePort}` : `${remoteAddress}:${remotePort}`;
  }

  in(chunk: Buffer, forward: Forward): SwitchResult {
    // Check the limit before forwarding anything (PERFORMANCE.md): the peer's length
    // field is never trusted; complete frames before the bad header still pass.
    if (this.tracker.track(chunk)) {
      forward(chunk);
      return Outcome.MESSAGE;
    }
    if (this.tracker.errorOffset > 0) forward(chunk.subarray(0, this.tracker.errorOffset));
    return this.tracker.error!;
  }

  out(bytes: Buffer): SwitchResult {
    this.bytesOut += bytes.length;
    this.socket.write(bytes);
    return Outcome.MESSAGE;
  }

  endInput(): SwitchResult {
    return this.tracker.endError() ?? Outcome.CLOSING;
  }

  get needsDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  endOutput(): void {
    if (!this.socket.destroyed) this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  finish(): void {
    const socket = this.socket;
    if (socket.destroyed) return;
    // Our side was already ended and flushed (its FIN forwarded earlier): nothing to wait for.
    if (socket.writableFinished) {
      socket.destroy();
      return;
    }
    // Input no longer matters; queued output is flushed, then FIN.
    socket.pause();
    socket.end();
    const timer = setTimeout(() => socket.destroy(), FINISH_GRACE_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
    // With allowHalfOpen the socket stays open until the peer closes too: once our side
    // is flushed there is nothing left to wait for.
    socket.once('finish', () => socket.destroy());
  }

  start(owner: Switch): void {
    this.owner = owner;
    const socket = this.socket as BoundSocket;
    // Shared listeners find the endpoint on its socket: no closures per connection (idle memory).
    socket[kSocketEndpoint] = this;
    if (this.reader) this.reader.attach(this, this.sink);
    else socket.on('data', socketOnData);
    socket.on('end', socketOnEnd);
    socket.on('drain', socketOnDrain);
    socket.on('error', socketOnError);
    socket.on('close', socketOnClose);
    // A handshake may have paused the socket (and unshifted bytes that followed it).
    socket.resume();
    // The client's FIN may have come during the handshake (a name then a half-close):
    // its 'end' was emitted before this listener existed, so it is applied here.
    if (socket.readableEnded) process.nextTick(endAfterHandshake, this);
  }

  /** @internal Input from the socket (its 'data', or its direct reader). */
  received(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    this.owner!.input(this, chunk);
  }

  /** @internal The socket closed: the reader's buffer goes back, the switch is told. */
  socketClosed(): void {
    this.reader?.release();
    this.owner!.transportClosed(this);
  }
}

const kSocketEndpoint = Symbol('socketEndpoint');
type BoundSocket = net.Socket & { [kSocketEndpoint]: SocketEndpoint };

function socketOnData(this: BoundSocket, chunk: Buffer): void {
  this[kSocketEndpoint].received(chunk);
}

function socketOnEnd(this: BoundSocket): void {
  const endpoint = this[kSocketEndpoint];
  endpoint.owner!.inputEnd(endpoint);
}

function endAfterHandshake(endpoint: SocketEndpoint): void {
  endpoint.owner!.inputEnd(endpoint);
}

function socketOnDrain(this: BoundSocket): void {
  const endpoint = this[kSocketEndpoint];
  endpoint.owner!.drained(endpoint);
}

function socketOnError(this: BoundSocket, err: Error): void {
  const endpoint = this[kSocketEndpoint];
  endpoint.owner!.fail(endpoint, err);
}

function socketOnClose(this: BoundSocket): void {
  this[kSocketEndpoint].socketClosed();
}

/** What a switch reports once, when it is over. */
export interface SwitchSummary {
  /** Why it ended: `client closed`, `service closed`, or the error's message. */
  reason: string;
  /** Set when the switch ended on an error (coded errors carry `code`). */
  error?: Error;
  /** The role of the endpoint that ended first, or failed. */
  endedBy: string;
  /** Bytes the client sent and was sent (as its transport carries them), and messages each way. */
  bytesIn: number;
  bytesOut: number;
  messagesIn: number;
  messagesOut: number;
  durationMs: number;
}

/** One side's counts as the gateway reads them (metrics, idle sweep). */
export interface SideTraffic {
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly messagesIn: number;
}

/**
 * What a gateway keeps of a switched connection, whichever moves its bytes: a JS
 * {@link Switch}, or a native one (src/dataplane.ts NativeSwitch).
 */
export interface BridgedSwitch {
  readonly client: SideTraffic;
  readonly service: SideTraffic;
  readonly done: boolean;
  close(reason: string, err?: Error): void;
}

export interface SwitchOptions {
  /** Time allowed to the other direction after one side half-closed (ms, default 5000). */
  halfCloseTimeout?: number;
  /** Called once when the switch is over, with the switch. */
  onClose?: (summary: SwitchSummary, sw: Switch) => void;
  /** Called for each unit passed (SWITCH_RX from a, SWITCH_TX to b); off by default. */
  onPass?: (from: Endpoint, to: Endpoint, bytes: Buffer) => void;
}

/** Joins endpoint `client` and endpoint `service` (see the module comment). */
export class Switch {
  readonly client: Endpoint;
  readonly service: Endpoint;
  private readonly options: SwitchOptions;
  private readonly startedAt = performance.now();
  private readonly toService: Forward;
  private readonly toClient: Forward;
  private lingerTimer: NodeJS.Timeout | null = null;
  private firstEnd: Endpoint | null = null;
  private over = false;

  constructor(client: Endpoint, service: Endpoint, options: SwitchOptions = {}) {
    this.client = client;
    this.service = service;
    this.options = options;
    // Two closures over `this` alone (one context for both: idle memory).
    this.toService = (bytes: Buffer) => this.pass(this.client, this.service, bytes);
    this.toClient = (bytes: Buffer) => this.pass(this.service, this.client, bytes);
  }

  /** True once the switch is torn down or finished. */
  get done(): boolean {
    return this.over;
  }

  /** Starts moving data both ways. */
  start(): this {
    if (this.client instanceof SocketEndpoint) this.client.writesTo(this.service);
    if (this.service instanceof SocketEndpoint) this.service.writesTo(this.client);
    this.client.start(this);
    this.service.start(this);
    return this;
  }

  /** Hands what `from`'s `in` produced to `to`'s `out`; pauses `from` while `to` needs a drain. */
  private pass(from: Endpoint, to: Endpoint, bytes: Buffer): void {
    if (this.over) return;
    const result = to.out(bytes);
    if (result instanceof Error) {
      this.teardown(to, result);
      return;
    }
    if (result === Outcome.CLOSING) {
      this.teardown(to, undefined, `${to.role} closing`);
      return;
    }
    const onPass = this.options.onPass;
    if (onPass) onPass(from, to, bytes);
    if (to.needsDrain) from.pause();
  }

  /** @internal Transport data from `from`. */
  input(from: Endpoint, data: Buffer): void {
    if (this.over) return;
    const result = from.in(data, from === this.client ? this.toService : this.toClient);
    if (result instanceof Error) this.teardown(from, result);
    else if (result === Outcome.CLOSING) this.teardown(from, undefined, `${from.role} closing`);
  }

  /** @internal `from` reached end of input. */
  inputEnd(from: Endpoint): void {
    if (this.over || from.inputEnded) return;
    from.inputEnded = true;
    const result = from.endInput();
    if (result instanceof Error) {
      this.teardown(from, result);
      return;
    }
    this.firstEnd ??= from;
    const other = from === this.client ? this.service : this.client;
    other.endOutput();
    if (!other.inputEnded && this.lingerTimer === null) {
      const timeout = this.options.halfCloseTimeout ?? 5000;
      this.lingerTimer = setTimeout(() => this.teardown(from, undefined, `${from.role} closed`), timeout);
      this.lingerTimer.unref();
    }
  }

  /** @internal `from`'s transport can take more: resume the other side. */
  drained(from: Endpoint): void {
    if (this.over) return;
    (from === this.client ? this.service : this.client).resume();
  }

  /** @internal A transport error on `from`. */
  fail(from: Endpoint, err: Error): void {
    this.teardown(from, err);
  }

  /** @internal `from`'s transport closed. */
  transportClosed(from: Endpoint): void {
    from.closed = true;
    if (this.over) return;
    const other = from === this.client ? this.service : this.client;
    if (!from.inputEnded) {
      // Closed without a clean end of input: nothing more can pass. When the other side
      // ended first, this close is its consequence (a WebSocket has no half-close: the
      // service's end closes the client), so the end is the other side's.
      const by = this.firstEnd !== null && this.firstEnd !== from ? this.firstEnd : from;
      this.teardown(by, undefined, `${by.role} closed`);
    } else if (other.closed) {
      this.finish();
    }
  }

  /** Ends the switch now: both endpoints destroyed, reported once with `reason`. */
  close(reason: string, err?: Error): void {
    this.teardown(this.client, err, reason);
  }

  private finish(): void {
    const by = this.firstEnd ?? this.client;
    this.report(by, undefined, `${by.role} closed`);
  }

  /**
   * Ends the switch because of `by` (its error, close, or protocol violation): `by` is
   * closed now, the other endpoint after flushing what was already queued for it (frames
   * accepted before a bad header, replies sent before a service died).
   */
  private teardown(by: Endpoint, err?: Error, reason?: string): void {
    if (this.over) return;
    by.destroy(err);
    (by === this.client ? this.service : this.client).finish(err);
    this.report(by, err, reason ?? (err ? err.message : `${by.role} closed`));
  }

  private report(by: Endpoint, err: Error | undefined, reason: string): void {
    if (this.over) return;
    this.over = true;
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.options.onClose?.({
      reason,
      ...(err ? { error: err } : {}),
      endedBy: by.role,
      bytesIn: this.client.bytesIn,
      bytesOut: this.client.bytesOut,
      messagesIn: this.client.messagesIn,
      messagesOut: this.service.messagesIn,
      durationMs: Math.round(performance.now() - this.startedAt),
    }, this);
  }
}

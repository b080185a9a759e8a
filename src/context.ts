/**
 * libipc's event model for Node programs (seeds/context.zig `Context`). The original's
 * `wait_event()` returns one event at a time from a poll loop; here the same events come
 * from `waitEvent()` or `for await (const event of context)`, while sockets run on Node's
 * event loop. Event names and meanings are the original's:
 *
 * - CONNECTION: a client connected to a served service.
 * - DISCONNECTION: a connection ended (peer closed, or closed after an error).
 * - MESSAGE_RX: a whole libipc message arrived (`payload`).
 * - MESSAGE_TX: a scheduled message was handed to the kernel.
 * - TIMER: no event for `timer` ms while waiting.
 * - EXTERNAL: bytes arrived on an external socket the program handles itself (`data`).
 * - SWITCH_RX / SWITCH_TX: bytes passed through a switch, from its client / to its client
 *   (only when asked for with `switchEvents`: the hot path pays nothing otherwise).
 * - ERROR: something failed on a connection (`error`); DISCONNECTION follows.
 */
import net from 'node:net';
import { FrameDecoder, encodeFrame, DEFAULT_MAX_PAYLOAD } from './frame.js';
import { serveService, type ServiceServer } from './service.js';
import { connectService } from './client.js';
import { checkRundir, resolveRundir } from './rundir.js';
import { IpcError } from './errors.js';
import { SocketEndpoint, Switch, type Endpoint, type SwitchSummary } from './switch.js';
import { silentLogger, type Logger } from './log.js';

export const EventType = {
  CONNECTION: 'CONNECTION',
  DISCONNECTION: 'DISCONNECTION',
  MESSAGE_RX: 'MESSAGE_RX',
  MESSAGE_TX: 'MESSAGE_TX',
  TIMER: 'TIMER',
  EXTERNAL: 'EXTERNAL',
  SWITCH_RX: 'SWITCH_RX',
  SWITCH_TX: 'SWITCH_TX',
  ERROR: 'ERROR',
} as const;
export type EventTypeValue = (typeof EventType)[keyof typeof EventType];

/** libipc connection kinds (context.zig `Connection.Type`). */
export const ConnectionKind = { IPC: 'IPC', EXTERNAL: 'EXTERNAL', SERVER: 'SERVER', SWITCHED: 'SWITCHED' } as const;
export type ConnectionKindValue = (typeof ConnectionKind)[keyof typeof ConnectionKind];

/** A connection the context follows. */
export class Connection {
  readonly id: number;
  kind: ConnectionKindValue;
  readonly socket: net.Socket;
  /** The service name, for connections made with `connect()` or accepted by `serve()`. */
  readonly service: string | undefined;

  constructor(id: number, kind: ConnectionKindValue, socket: net.Socket, service?: string) {
    this.id = id;
    this.kind = kind;
    this.socket = socket;
    this.service = service;
  }
}

export interface IpcEvent {
  type: EventTypeValue;
  connection?: Connection;
  /** MESSAGE_RX: the message. SWITCH_RX/SWITCH_TX: the bytes passed. */
  payload?: Buffer;
  /** EXTERNAL: the bytes read from the external socket. */
  data?: Buffer;
  /** ERROR: what failed. */
  error?: Error;
  /** SWITCH_* and DISCONNECTION of a switch: its summary when it ended. */
  summary?: SwitchSummary;
}

export interface ContextOptions {
  /** Run directory (default `$RUNDIR` or `/tmp/.libipc-run/`). */
  rundir?: string;
  /** Largest payload accepted from a peer, bytes (default 99,992). */
  maxPayload?: number;
  /** Yield TIMER after this many ms without an event (default: never). */
  timer?: number | null;
  /** Emit SWITCH_RX / SWITCH_TX for switches (default false). */
  switchEvents?: boolean;
  /** Pause reading when this many events wait to be consumed (default 1024). */
  maxQueuedEvents?: number;
  logger?: Logger;
}

/**
 * Called as an event reaches the program. A peer's clean end (DISCONNECTION of a
 * half-open socket) ends our side only now: every message before it was handled and
 * its replies written.
 */
function delivered(event: IpcEvent): IpcEvent {
  const socket = event.connection?.socket;
  if (event.type === EventType.DISCONNECTION && socket && event.connection!.kind !== ConnectionKind.SWITCHED) {
    if (!socket.destroyed) socket.end();
  }
  return event;
}

/** The event loop of a libipc program. */
export class Context implements AsyncIterable<IpcEvent> {
  /** TIMER period in ms, or null for none. May be changed at any time. */
  timer: number | null;
  readonly rundir: string;
  private readonly maxPayload: number;
  private readonly switchEvents: boolean;
  private readonly maxQueued: number;
  private readonly logger: Logger;
  private readonly connections = new Set<Connection>();
  private readonly servers: ServiceServer[] = [];
  private readonly switches = new Set<Switch>();
  private readonly queue: IpcEvent[] = [];
  /** Pending waitEvent() calls, served in order. */
  private waiters: Array<(event: IpcEvent | null) => void> = [];
  private readonly failed = new WeakSet<Connection>();
  /** The listeners the context put on each connection's socket, and its decoder. */
  private readonly listeners = new WeakMap<Connection, Array<[string, (...args: unknown[]) => void]>>();
  private readonly decoders = new WeakMap<Connection, FrameDecoder>();
  /** Sockets paused until their peer reads what was scheduled for it. */
  private readonly blocked = new WeakSet<net.Socket>();
  private readingPaused = false;
  private nextId = 1;
  private closed = false;
  /** Set once the run directory passed checkRundir (on the first connect that finds it). */
  private rundirChecked = false;

  constructor(options: ContextOptions = {}) {
    this.rundir = options.rundir ?? resolveRundir();
    this.maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.timer = options.timer ?? null;
    this.switchEvents = options.switchEvents ?? false;
    this.maxQueued = options.maxQueuedEvents ?? 1024;
    this.logger = options.logger ?? silentLogger;
  }

  /**
   * Serves `name` at `$RUNDIR/<name>`; clients yield CONNECTION then MESSAGE_RX events.
   * @throws IpcError as {@link serveService}.
   */
  async serve(name: string): Promise<ServiceServer> {
    const served = await serveService(name, {
      rundir: this.rundir,
      // Half-open on purpose: replies to messages that came with the peer's FIN are
      // still written; the socket is ended once the program has seen DISCONNECTION.
      allowHalfOpen: true,
      onConnection: (socket) => {
        const connection = this.add(ConnectionKind.IPC, socket, name);
        this.push({ type: EventType.CONNECTION, connection });
      },
    });
    this.servers.push(served);
    return served;
  }

  /**
   * Connects to the service `name`. The run directory is checked first (once per
   * context): a directory others could write or another user owns is refused.
   * @throws IpcError `IPC_ERR_SERVICE_UNAVAILABLE` (a missing run directory included:
   *   nothing serves there), `IPC_ERR_RUNDIR_UNUSABLE`.
   */
  async connect(name: string): Promise<Connection> {
    if (!this.rundirChecked) {
      try {
        checkRundir(this.rundir);
        this.rundirChecked = true;
      } catch (err) {
        // Missing: connectService reports that nothing serves the name.
        if (!(err instanceof IpcError && (err.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT')) throw err;
      }
    }
    const socket = await connectService(name, { rundir: this.rundir, allowHalfOpen: true });
    return this.add(ConnectionKind.IPC, socket, name);
  }

  /**
   * Sends `payload` as one message on `connection`; MESSAGE_TX follows once written.
   * While the peer does not read what was sent, the connection is not read either (a
   * client that sends without reading cannot make the program buffer without bound).
   */
  schedule(connection: Connection, payload: Uint8Array | string): void {
    const socket = connection.socket;
    if (socket.destroyed) return;
    const more = socket.write(encodeFrame(payload), (err) => {
      if (!err) this.push({ type: EventType.MESSAGE_TX, connection });
    });
    if (!more && !this.blocked.has(socket)) {
      this.blocked.add(socket);
      socket.pause();
      socket.once('drain', () => {
        this.blocked.delete(socket);
        if (!this.readingPaused) socket.resume();
      });
    }
  }

  /** Follows a socket the program reads itself: each chunk yields EXTERNAL with `data`. */
  addExternal(socket: net.Socket): Connection {
    const connection = new Connection(this.nextId++, ConnectionKind.EXTERNAL, socket);
    this.connections.add(connection);
    this.listen(connection, 'data', (data: Buffer) => this.push({ type: EventType.EXTERNAL, connection, data }));
    this.watchEnd(connection);
    return connection;
  }

  /**
   * Switches two connections (an external one and a service one): their bytes pass
   * through `client`'s and `service`'s endpoints (default: libipc frames unchanged).
   * Both connections stop yielding their own events; DISCONNECTION comes once, for the
   * client connection, when the switch ends.
   */
  addSwitch(client: Connection, service: Connection, endpoints?: { client?: Endpoint; service?: Endpoint }): Switch {
    const pending: Buffer[][] = [];
    for (const c of [client, service]) {
      c.kind = ConnectionKind.SWITCHED;
      // Only the context's own listeners go (Node's internal ones stay), and bytes of a
      // partial message already read pass through the switch first.
      for (const [event, listener] of this.listeners.get(c) ?? []) c.socket.off(event, listener);
      this.listeners.delete(c);
      pending.push(this.decoders.get(c)?.takeBuffered() ?? []);
      this.connections.delete(c);
    }
    for (const [i, c] of [client, service].entries()) {
      const bytes = pending[i]!;
      // Paused first: unshifted bytes of a flowing stream with no 'data' listener are lost.
      c.socket.pause();
      if (bytes.length > 0) c.socket.unshift(Buffer.concat(bytes));
    }
    const a = endpoints?.client ?? new SocketEndpoint('client', client.socket, this.maxPayload);
    const b = endpoints?.service ?? new SocketEndpoint('service', service.socket, this.maxPayload);
    const sw = new Switch(a, b, {
      onClose: (summary) => {
        this.switches.delete(sw);
        this.push({ type: EventType.DISCONNECTION, connection: client, summary });
      },
      ...(this.switchEvents
        ? {
            onPass: (from: Endpoint, _to: Endpoint, payload: Buffer) =>
              this.push({ type: from === a ? EventType.SWITCH_RX : EventType.SWITCH_TX, connection: client, payload }),
          }
        : {}),
    });
    this.switches.add(sw);
    return sw.start();
  }

  /** Closes one connection (no DISCONNECTION event: the program asked for it). */
  close(connection: Connection): void {
    this.connections.delete(connection);
    connection.socket.destroy();
  }

  /** Closes every connection and served socket; pending waits resolve with no event. */
  async closeAll(): Promise<void> {
    this.closed = true;
    for (const c of this.connections) c.socket.destroy();
    this.connections.clear();
    for (const sw of [...this.switches]) sw.close('context closed');
    await Promise.all(this.servers.map((s) => s.close()));
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter(null);
  }

  /**
   * The next event; resolves `null` once the context is closed. With `timer` set, TIMER
   * comes after that many ms without another event.
   */
  waitEvent(): Promise<IpcEvent | null> {
    const next = this.queue.shift();
    if (next) {
      this.maybeResumeReading();
      return Promise.resolve(delivered(next));
    }
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      let timeout: NodeJS.Timeout | null = null;
      const waiter = (event: IpcEvent | null) => {
        if (timeout) clearTimeout(timeout);
        resolve(event === null ? null : delivered(event));
      };
      if (this.timer !== null) {
        timeout = setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve({ type: EventType.TIMER });
        }, this.timer);
      }
      this.waiters.push(waiter);
    });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<IpcEvent> {
    for (;;) {
      const event = await this.waitEvent();
      if (event === null) return;
      yield event;
    }
  }

  private add(kind: ConnectionKindValue, socket: net.Socket, service?: string): Connection {
    const connection = new Connection(this.nextId++, kind, socket, service);
    this.connections.add(connection);
    const decoder = new FrameDecoder(this.maxPayload);
    this.decoders.set(connection, decoder);
    this.listen(connection, 'data', (chunk: Buffer) => {
      let payloads: Buffer[];
      try {
        payloads = decoder.push(chunk);
      } catch (err) {
        this.fail(connection, err as Error);
        return;
      }
      for (const payload of payloads) this.push({ type: EventType.MESSAGE_RX, connection, payload });
      // Frames before an oversize header in the same chunk were delivered above.
      if (decoder.error) this.fail(connection, decoder.error);
    });
    this.listen(connection, 'end', () => {
      try {
        decoder.end();
      } catch (err) {
        this.fail(connection, err as Error);
        return;
      }
      if (this.connections.delete(connection)) this.push({ type: EventType.DISCONNECTION, connection });
    });
    this.watchEnd(connection);
    if (this.readingPaused) socket.pause();
    return connection;
  }

  private watchEnd(connection: Connection): void {
    const { socket } = connection;
    this.listen(connection, 'error', (err: Error) => this.fail(connection, err));
    this.listen(connection, 'close', () => {
      if (!this.connections.delete(connection)) return;
      this.push({ type: EventType.DISCONNECTION, connection });
    });
  }

  /** Adds a socket listener the context owns (removed again by addSwitch). */
  private listen(connection: Connection, event: string, listener: (...args: never[]) => void): void {
    connection.socket.on(event, listener as (...args: unknown[]) => void);
    const own = this.listeners.get(connection) ?? [];
    own.push([event, listener as (...args: unknown[]) => void]);
    this.listeners.set(connection, own);
  }

  private fail(connection: Connection, error: Error): void {
    if (!this.connections.has(connection) || this.failed.has(connection)) return;
    this.failed.add(connection);
    this.logger.warn({ conn: connection.id, service: connection.service, err: error }, 'connection error');
    this.push({ type: EventType.ERROR, connection, error });
    connection.socket.destroy();
  }

  private push(event: IpcEvent): void {
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter(event);
      return;
    }
    this.queue.push(event);
    // Bounded memory: a program slower than its peers stops reading until it catches up.
    if (!this.readingPaused && this.queue.length >= this.maxQueued) {
      this.readingPaused = true;
      for (const c of this.connections) c.socket.pause();
    }
  }

  private maybeResumeReading(): void {
    if (this.readingPaused && this.queue.length <= this.maxQueued / 2) {
      this.readingPaused = false;
      for (const c of this.connections) if (!this.blocked.has(c.socket)) c.socket.resume();
    }
  }
}

/**
 * The native data plane (docs/architecture.md "Native data plane"): a byte-transparent
 * switch between a TCP or Unix client socket and a Unix service socket, run by the addon's
 * epoll thread (native/dataplane.cc) instead of the JavaScript event loop.
 *
 * {@link NativeSwitch} is what the gateway keeps for such a connection: the same face as
 * a JS {@link Switch} to the connection table (close), the metrics and the idle sweep
 * (byte and message counts read from the thread at any time, `done`), and the same
 * {@link SwitchSummary} once it is over. The addon is optional: {@link nativeDataPlane}
 * says why it cannot be used, and the caller keeps the JS switch.
 */
import os from 'node:os';
import type net from 'node:net';
import { ErrorCode, ipcError } from './errors.js';
import { closeFd, descriptorOf, loadDataPlaneAddon } from './fdpass.js';
import type { SwitchSummary } from './switch.js';

/** What the addon exports as `dataPlane`. */
interface PlaneAddon {
  start(onEnd: EndCallback): void;
  add(clientFd: number, serviceFd: number, maxPayload: number, halfCloseMs: number, ok: Buffer | undefined, clientData: Buffer | undefined, serviceData: Buffer | undefined): number;
  close(id: number): void;
  counts(id: number, out: Float64Array): boolean;
}

type EndCallback = (id: number, kind: number, endedBy: number, detail: number, syscall: string | null, counts: number[]) => void;

/** How the thread says a connection ended (native/dataplane.cc `Kind`). */
const KIND_CLOSED = 0;
const KIND_TOO_LARGE = 1;
const KIND_TRUNCATED = 2;
const KIND_ERRNO = 3;

const ROLES = ['client', 'service'] as const;

/** Live native switches by id: the end callback finds its switch here. */
const live = new Map<number, NativeSwitch>();
let plane: PlaneAddon | null = null;
let unavailable: Error | null = null;

/**
 * The started data plane, or the Error saying why there is none (addon not built, built
 * without it, or the thread could not start). Started once per process, on first use.
 */
export function nativeDataPlane(): PlaneAddon | Error {
  if (plane !== null) return plane;
  if (unavailable !== null) return unavailable;
  const loaded = loadDataPlaneAddon();
  if ('error' in loaded) return (unavailable = loaded.error);
  const addon = loaded.plane as PlaneAddon;
  try {
    addon.start(onEnd);
  } catch (err) {
    return (unavailable = err as Error);
  }
  return (plane = addon);
}

function onEnd(id: number, kind: number, endedBy: number, detail: number, syscall: string | null, counts: number[]): void {
  const sw = live.get(id);
  if (sw === undefined) return; // closed from JS: reported then
  try {
    sw.ended(kind, endedBy, detail, syscall, counts);
  } catch (err) {
    // A throw here would reach the addon's callback as an uncaught exception.
    process.emitWarning(`native data plane: end report failed: ${(err as Error).message}`);
  }
}

const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([name, value]) => [value, name]));

/** A system error as Node's sockets report it (`read ECONNRESET`, code, negative errno). */
function systemError(errno: number, syscall: string): NodeJS.ErrnoException {
  const code = errnoNames.get(errno) ?? `E${errno}`;
  return Object.assign(new Error(`${syscall} ${code}`), { code, errno: -errno, syscall });
}

/** One side's counts, as the metrics and the idle sweep read them from a switch. */
export interface TrafficCounts {
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly messagesIn: number;
}

const scratch = new Float64Array(6);

class SideCounts implements TrafficCounts {
  private readonly sw: NativeSwitch;
  private readonly base: number;
  constructor(sw: NativeSwitch, base: number) {
    this.sw = sw;
    this.base = base;
  }
  get bytesIn(): number {
    return this.sw.count(this.base);
  }
  get bytesOut(): number {
    return this.sw.count(this.base + 1);
  }
  get messagesIn(): number {
    return this.sw.count(this.base + 2);
  }
}

export interface NativeSwitchOptions {
  maxPayload: number;
  halfCloseTimeout: number;
  /** Raw bytes sent to the client before anything else (the handshake's `ok`), uncounted. */
  greeting?: Buffer;
  /** Called once when the switch is over, with the switch. */
  onClose: (summary: SwitchSummary, sw: NativeSwitch) => void;
}

/**
 * A client-service pair switched by the native data plane. Built first (so the table can
 * take it in the hand-over), then {@link start}ed with the two sockets.
 */
export class NativeSwitch {
  readonly client: TrafficCounts = new SideCounts(this, 0);
  readonly service: TrafficCounts = new SideCounts(this, 3);
  private id = 0;
  private over = false;
  private readonly startedAt = performance.now();
  /** The last counts seen (the end report's, once over). */
  private last: Float64Array | null = null;
  private readonly options: NativeSwitchOptions;
  private readonly plane: PlaneAddon;

  constructor(addon: PlaneAddon, options: NativeSwitchOptions) {
    this.plane = addon;
    this.options = options;
  }

  get done(): boolean {
    return this.over;
  }

  /**
   * Takes the connection over: what Node already read from the client socket (bytes
   * after the name) goes first; both descriptors are dup'ed in the addon, the client's JS
   * socket is destroyed and the service's descriptor (connected by the addon, no JS socket
   * was made for it) closed (no FIN: the duplicates keep both connections open). The
   * client socket may have no queued writes. On failure both are closed and the switch
   * ends with the error.
   */
  start(clientSocket: net.Socket, serviceFd: number): void {
    try {
      const clientFd = descriptorOf(clientSocket);
      const clientData = takeBuffered(clientSocket);
      const { maxPayload, halfCloseTimeout, greeting } = this.options;
      this.id = this.plane.add(clientFd, serviceFd, maxPayload, halfCloseTimeout, greeting, clientData, undefined);
      live.set(this.id, this);
    } catch (err) {
      clientSocket.destroy();
      closeFd(serviceFd);
      const e = err as NodeJS.ErrnoException;
      if (typeof e.errno === 'number' && e.errno > 0) e.code ??= errnoNames.get(e.errno);
      this.report('client', e, `native data plane: ${e.message}`);
      return;
    }
    clientSocket.destroy();
    closeFd(serviceFd);
  }

  /** @internal Counter `i` of the six (client in/out/messages, service in/out/messages). */
  count(i: number): number {
    if (!this.over && this.id !== 0 && this.plane.counts(this.id, scratch)) {
      // Kept: should the connection end before the next read, close() reports these.
      (this.last ??= new Float64Array(6)).set(scratch);
    }
    const last = this.last;
    if (last === null) return 0;
    return i === 1 ? Math.max(0, last[1]! - (this.options.greeting?.length ?? 0)) : last[i]!;
  }

  /** Ends the switch now (drain, shutdown, idle): the client closes at once, the service once flushed. */
  close(reason: string, err?: Error): void {
    if (this.over) return;
    if (this.id !== 0) {
      this.count(0); // the latest counts, for the report
      this.plane.close(this.id);
    }
    this.report('client', err, reason);
  }

  /** @internal The thread's end report. */
  ended(kind: number, endedBy: number, detail: number, syscall: string | null, counts: number[]): void {
    if (this.over) return;
    this.last = Float64Array.from(counts);
    const role = ROLES[endedBy] ?? 'client';
    let err: Error | undefined;
    if (kind === KIND_TOO_LARGE) {
      err = ipcError(ErrorCode.PAYLOAD_TOO_LARGE, `frame length ${detail} exceeds the limit of ${this.options.maxPayload} bytes`);
    } else if (kind === KIND_TRUNCATED) {
      const what = detail > 0 ? `${detail} payload bytes missing` : `${-detail} of 4 header bytes`;
      err = ipcError(ErrorCode.TRUNCATED_FRAME, `stream ended inside a frame (${what})`);
    } else if (kind === KIND_ERRNO) {
      err = systemError(detail, syscall ?? 'io');
    } else if (kind !== KIND_CLOSED) {
      return;
    }
    this.report(role, err, err ? err.message : `${role} closed`);
  }

  private report(endedBy: string, error: Error | undefined, reason: string): void {
    if (this.over) return;
    this.over = true;
    live.delete(this.id);
    this.options.onClose({
      reason,
      ...(error ? { error } : {}),
      endedBy,
      bytesIn: this.count(0),
      bytesOut: this.count(1),
      messagesIn: this.count(2),
      messagesOut: this.count(5),
      durationMs: Math.round(performance.now() - this.startedAt),
    }, this);
  }
}

/**
 * What Node read from `socket` and holds (bytes pushed back after a handshake, data that
 * came while nobody listened), taken out so the data plane sends it first. Reading stops
 * first; nothing more is read before the socket is destroyed in this same turn.
 */
function takeBuffered(socket: net.Socket): Buffer | undefined {
  if (socket.writableLength > 0) throw new Error('the socket still has queued writes');
  socket.pause();
  const chunks: Buffer[] = [];
  // Bounded: read() with no size empties the buffer in one call; a few more at most.
  for (let i = 0; i < 16; i++) {
    const chunk = socket.read() as Buffer | null;
    if (chunk === null) break;
    chunks.push(chunk);
  }
  if (chunks.length === 0) return undefined;
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
}

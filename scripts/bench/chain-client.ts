/**
 * The benchmark's Node load client for the full chain (scripts/bench/chain.ts runs it):
 * a pong-style client that connects with `connectIpc` (src/client.ts), so with
 * IPC_NETWORK set every connection is an ipcd lookup whose descriptor comes back by
 * SCM_RIGHTS, and with IPC_NETWORK unset it connects `$RUNDIR/<service>` directly.
 * ipcbench cannot do lookups; this client is the same for both, so the ratio of the two
 * is the chain's cost.
 *
 *   node dist/scripts/bench/chain-client.js --mode rr --conns 64 --size 64 --service echo
 *   node dist/scripts/bench/chain-client.js --mode lookup --conns 2 --size 64 --service echo
 *   (also --id N: tags payloads; --max-seconds, --op-timeout, --lookup-timeout ms;
 *   --samples 1: every latency sample in the result)
 *
 * Modes:
 * - rr: opens --conns connections (connectIpc), checks each with one echo, then every
 *   connection is a closed loop of one libipc frame of --size bytes out, the whole echo
 *   back (length and every byte verified), the next one out.
 * - lookup: --conns slots, each looping connectIpc + one verified echo + close.
 *
 * Driven over stdin/stdout, one line each, so that several client processes and the
 * parent's CPU sampling share one measured window:
 *   stdout {"event":"ready",...}      (rr: connections open and checked)
 *   stdin  go                         start the loops (warmup)
 *   stdin  mark                       start counting; stdout {"event":"mark"}
 *   stdin  stop                       stop; stdout {"event":"result",...}, then exit
 * Every loop is bounded: by `stop`, by --max-seconds (the process exits, status 3), by
 * MAX_OPS operations, by an error budget, and each wait on an echo by --op-timeout. A
 * closed stdin (parent gone) ends the process.
 */
import net from 'node:net';
import readline from 'node:readline';
import { connectIpc } from '../../src/client.js';

const HEADER = 4;
/** Upper bound on operations per loop, whatever the time. */
const MAX_OPS = 50_000_000;
/** Latency samples kept per process (the first ones in the measured window). */
const MAX_SAMPLES = 400_000;
/** Errors after which a loop gives up (no hot spinning on a broken chain). */
const MAX_ERRORS = 200;

interface Args {
  mode: 'rr' | 'lookup';
  conns: number;
  size: number;
  service: string;
  maxSeconds: number;
  opTimeout: number;
  lookupTimeout: number;
  id: number;
  /** Put every latency sample in the result (the parent merges several processes). */
  samples: boolean;
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { mode: 'rr', conns: 1, size: 64, service: 'echo', maxSeconds: 60, opTimeout: 10_000, lookupTimeout: 5000, id: 0, samples: false };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`${key}: missing value`);
    const num = Number(value);
    switch (key) {
      case '--mode':
        if (value !== 'rr' && value !== 'lookup') throw new Error(`--mode ${value}: rr or lookup`);
        a.mode = value;
        break;
      case '--conns': a.conns = int(key, num, 1, 10_000); break;
      case '--size': a.size = int(key, num, 8, 1 << 20); break;
      case '--service': a.service = value; break;
      case '--max-seconds': a.maxSeconds = int(key, num, 1, 3600); break;
      case '--op-timeout': a.opTimeout = int(key, num, 1, 600_000); break;
      case '--lookup-timeout': a.lookupTimeout = int(key, num, 1, 600_000); break;
      case '--id': a.id = int(key, num, 0, 65_535); break;
      case '--samples': a.samples = value === '1'; break;
      default: throw new Error(`unknown option ${key}`);
    }
  }
  return a;
}

function int(key: string, n: number, min: number, max: number): number {
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${key}: expected an integer in ${min}..${max}`);
  return n;
}

const args = parseArgs(process.argv.slice(2));
const errors = { verify: 0, length: 0, io: 0, eof: 0, connect: 0, timeout: 0 };
type ErrorKind = keyof typeof errors;
const errorSamples: string[] = [];
let errorCount = 0;

function fail(kind: ErrorKind, detail: string): void {
  errors[kind]++;
  errorCount++;
  if (errorSamples.length < 5) errorSamples.push(`${kind}: ${detail}`);
}

/** started: loops run; counting: in the measured window; stopped: loops end. */
let started = false;
let counting = false;
let stopped = false;
let wakeStart: (() => void) | null = null;
const startGate = new Promise<void>((resolve) => (wakeStart = resolve));
let ops = 0;
let opsInWindow = 0;
const samples = new Float64Array(MAX_SAMPLES);
let nSamples = 0;
let windowStart = 0;

function record(startedAt: number): void {
  const now = performance.now();
  ops++;
  if (!counting) return;
  opsInWindow++;
  if (nSamples < MAX_SAMPLES) samples[nSamples++] = (now - startedAt) * 1000;
}

/** Payload: connection id (4 B), sequence (4 B), then a pattern depending on both. */
function fill(frame: Buffer, conn: number, seq: number): void {
  frame.writeUInt32BE(args.size, 0);
  frame.writeUInt32BE(conn >>> 0, HEADER);
  frame.writeUInt32BE(seq >>> 0, HEADER + 4);
  let x = (conn * 2654435761 + seq * 40503 + 1) >>> 0;
  for (let i = HEADER + 8; i < frame.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    frame[i] = x >>> 24;
  }
}

/**
 * One exchange at a time on a socket: send `frame`, resolve once the whole echo came back
 * and matched (true), or on an error/close/timeout (false, counted).
 */
class Echoer {
  private readonly socket: net.Socket;
  /** The frame sent; the echo must equal it (the caller refills it between exchanges). */
  readonly frame: Buffer;
  private buffered: Buffer | null = null;
  private waiting: ((ok: boolean) => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  dead = false;

  constructor(socket: net.Socket, frame: Buffer) {
    this.socket = socket;
    this.frame = frame;
    socket.setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => this.finish(false, 'io', err.code ?? err.message));
    socket.on('close', () => this.finish(false, 'eof', 'closed by the peer'));
  }

  exchange(): Promise<boolean> {
    if (this.dead) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.timer = setTimeout(() => this.finish(false, 'timeout', `no full echo within ${args.opTimeout} ms`), args.opTimeout);
      this.socket.write(this.frame);
    });
  }

  close(): void {
    this.dead = true;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (!this.waiting) {
      if (!this.dead) this.finish(false, 'length', `${chunk.length} unexpected bytes`);
      return;
    }
    const data = this.buffered ? Buffer.concat([this.buffered, chunk]) : chunk;
    if (data.length < this.frame.length) {
      if (data.length >= HEADER && data.readUInt32BE(0) !== args.size) {
        this.finish(false, 'length', `length field ${data.readUInt32BE(0)}, expected ${args.size}`);
        return;
      }
      this.buffered = Buffer.from(data);
      return;
    }
    this.buffered = null;
    if (data.length > this.frame.length) {
      this.finish(false, 'length', `${data.length - this.frame.length} bytes more than one echo`);
    } else if (data.readUInt32BE(0) !== args.size) {
      this.finish(false, 'length', `length field ${data.readUInt32BE(0)}, expected ${args.size}`);
    } else if (!data.equals(this.frame)) {
      this.finish(false, 'verify', 'echo differs from what was sent');
    } else {
      this.finish(true);
    }
  }

  private finish(ok: boolean, kind?: ErrorKind, detail?: string): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const waiting = this.waiting;
    this.waiting = null;
    if (!ok) {
      // A close after our own close() or after a counted error, or an I/O end while
      // shutting down, is no news; wrong bytes always count.
      const quiet = this.dead || (stopped && (kind === 'eof' || kind === 'io'));
      this.dead = true;
      this.socket.destroy();
      if (!quiet) fail(kind!, detail!);
    }
    waiting?.(ok);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function open(): Promise<net.Socket> {
  return withTimeout(connectIpc(args.service, { lookupTimeout: args.lookupTimeout }), args.lookupTimeout + 2000, 'connectIpc');
}

const sockets = new Set<Echoer>();

async function rrLoop(echoer: Echoer, conn: number): Promise<void> {
  let seq = 1;
  const frame = echoer.frame;
  while (!stopped && ops < MAX_OPS && errorCount < MAX_ERRORS) {
    fill(frame, conn, seq++);
    const t0 = performance.now();
    if (!(await echoer.exchange())) return;
    if (!stopped) record(t0);
  }
}

async function lookupLoop(slot: number): Promise<void> {
  const frame = Buffer.alloc(HEADER + args.size);
  let seq = 1;
  while (!stopped && ops < MAX_OPS && errorCount < MAX_ERRORS) {
    const t0 = performance.now();
    let socket: net.Socket;
    try {
      socket = await open();
    } catch (err) {
      fail('connect', (err as Error).message);
      await new Promise((r) => setTimeout(r, 20));
      continue;
    }
    fill(frame, (args.id << 16) | slot, seq++);
    const echoer = new Echoer(socket, frame);
    const ok = await echoer.exchange();
    echoer.close();
    if (ok && !stopped) record(t0);
  }
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

/**
 * One JSON line to the parent. Resolves once written: stdout is a pipe, which Node
 * writes asynchronously when the pipe is full, so exiting before would cut the line.
 */
function say(line: object): Promise<void> {
  return new Promise((resolve) => process.stdout.write(`${JSON.stringify(line)}\n`, () => resolve()));
}

async function main(): Promise<void> {
  // The hard bound: whatever happens, this process ends.
  const deadline = setTimeout(() => {
    process.stderr.write(`chain-client: --max-seconds ${args.maxSeconds} reached\n`);
    process.exit(3);
  }, args.maxSeconds * 1000);
  deadline.unref();

  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const cmd = line.trim();
    if (cmd === 'go' && !started) {
      started = true;
      wakeStart?.();
    } else if (cmd === 'mark') {
      counting = true;
      windowStart = performance.now();
      void say({ event: 'mark', ops });
    } else if (cmd === 'stop') {
      stop();
    }
  });
  lines.on('close', () => {
    if (!stopped) {
      process.stderr.write('chain-client: stdin closed: stopping\n');
      process.exit(4);
    }
  });

  const loops: Promise<void>[] = [];
  const setupStart = performance.now();
  if (args.mode === 'rr') {
    // Open every connection (connectIpc itself limits concurrent lookups) and check each.
    const opened = await Promise.all(
      Array.from({ length: args.conns }, async (_, i) => {
        const conn = (args.id << 16) | i;
        try {
          const frame = Buffer.alloc(HEADER + args.size);
          const echoer = new Echoer(await open(), frame);
          fill(frame, conn, 0);
          if (!(await echoer.exchange())) return null;
          sockets.add(echoer);
          return { echoer, conn };
        } catch (err) {
          fail('connect', (err as Error).message);
          return null;
        }
      }),
    );
    const ready = opened.filter((o) => o !== null);
    void say({ event: 'ready', conns_ready: ready.length, conns_failed: args.conns - ready.length, setup_ms: round(performance.now() - setupStart, 1) });
    await startGate;
    for (const o of ready) loops.push(rrLoop(o.echoer, o.conn));
  } else {
    void say({ event: 'ready', conns_ready: args.conns, conns_failed: 0, setup_ms: 0 });
    await startGate;
    for (let slot = 0; slot < args.conns; slot++) loops.push(lookupLoop(slot));
  }

  let stopAt = 0;
  let resolveStop: () => void;
  const stopSignal = new Promise<void>((resolve) => (resolveStop = resolve));
  stop = () => {
    if (stopped) return;
    stopAt = performance.now();
    stopped = true;
    resolveStop();
  };
  if (stopped) resolveStop!();
  await stopSignal;
  const windowS = counting && stopAt > windowStart ? (stopAt - windowStart) / 1000 : 0;
  const sorted = samples.slice(0, nSamples).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  const lat = {
    n: sorted.length,
    mean: round(sorted.length ? sum / sorted.length : 0, 1),
    p50: round(percentile(sorted, 50), 1),
    p90: round(percentile(sorted, 90), 1),
    p99: round(percentile(sorted, 99), 1),
    p999: round(percentile(sorted, 99.9), 1),
    max: round(sorted.length ? sorted[sorted.length - 1]! : 0, 1),
  };
  const written = say({
    event: 'result',
    mode: args.mode,
    conns: args.conns,
    size: args.size,
    window_s: round(windowS, 4),
    ops: opsInWindow,
    ops_per_s: windowS > 0 ? round(opsInWindow / windowS, 1) : 0,
    lat_us: lat,
    ...(args.samples ? { samples: Array.from(sorted, (v) => Math.round(v * 10) / 10) } : {}),
    errors,
    errors_total: Object.values(errors).reduce((a, b) => a + b, 0),
    error_samples: errorSamples,
    network: process.env['IPC_NETWORK'] ?? null,
  });
  for (const e of sockets) e.close();
  // Loops waiting on an exchange end with their socket; give them a moment, then leave
  // once the result is out (the hard deadline still bounds this).
  await Promise.race([Promise.all(loops), new Promise((r) => setTimeout(r, 1000))]);
  await written;
  process.exit(0);
}

/** Replaced once the loops run; before that, a stop only sets the flag. */
let stop = (): void => {
  stopped = true;
};

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

main().catch((err: unknown) => {
  process.stderr.write(`chain-client: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});

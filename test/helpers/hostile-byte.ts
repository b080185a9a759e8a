/**
 * The hostile-client suite of the byte-stream gateways (tcpd, tlsd; issue 8): one
 * connection API over plain TCP and over TLS, the catalogue's building blocks (names,
 * frames, slowloris, concurrent handshakes, churn), and the per-batch checks: every
 * hostile connection has its refusal or teardown line, the daemon still serves a fresh
 * client (a verified echo), and it is back to its descriptor and memory baseline.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { ExecutionContext } from 'ava';
import type { Daemon } from './daemon.js';
import { assertBackToBaseline, type Baseline } from './hostile.js';
import type { LogLine } from './log-sink.js';
import { RawClient, frame, pattern, pause } from './raw-client.js';
import { TlsClient } from './tls-client.js';

/** How a connection of the suite reaches the daemon: plain TCP, or TLS with these options. */
export interface Transport {
  port: number;
  /** TLS client options (trust of the test CA); absent for plain TCP. */
  tls?: tls.ConnectionOptions;
}

/**
 * One client connection, TCP (a RawClient) or TLS (a TlsClient, handshake done): the same
 * catalogue runs over both.
 */
export interface Conn {
  /** `127.0.0.1:PORT`, as the gateway logs the client. */
  readonly peer: string;
  write(bytes: Buffer): Promise<void>;
  /** Half-close (FIN, or close_notify + FIN for TLS). */
  endWrite(): void;
  /** Sends a TCP RST (the TCP socket under TLS, for tlsd). */
  reset(): void;
  destroy(): void;
  expect(bytes: Buffer, timeout?: number): Promise<void>;
  /** The end of the stream, with no byte left unconsumed. */
  expectEnd(timeout?: number): Promise<void>;
  readonly finished: boolean;
}

/** Upper bound of a wait in the suite (a loaded 2-core machine). */
export const HOSTILE_WAIT = 10_000;

function tcpConn(c: RawClient): Conn {
  return {
    peer: c.peer,
    write: (b) => c.write(b),
    endWrite: () => c.endWrite(),
    reset: () => c.socket.resetAndDestroy(),
    destroy: () => c.destroy(),
    expect: (b, timeout = HOSTILE_WAIT) => c.expect(b, timeout),
    expectEnd: async (timeout = HOSTILE_WAIT) => {
      await c.expectEof(timeout);
    },
    get finished() {
      return c.finished;
    },
  };
}

function tlsConn(c: TlsClient): Conn {
  return {
    get peer() {
      return c.peer;
    },
    write: (b) => c.write(b),
    endWrite: () => c.socket.end(),
    reset: () => c.raw.resetAndDestroy(),
    destroy: () => c.socket.destroy(),
    expect: (b, timeout = HOSTILE_WAIT) => c.expect(b, timeout),
    expectEnd: (timeout = HOSTILE_WAIT) => c.expectEnd(timeout),
    get finished() {
      return c.finished;
    },
  };
}

/** Opens a connection (TLS handshake completed for a TLS transport); destroyed at teardown. */
export async function open(t: ExecutionContext, transport: Transport, timeout = HOSTILE_WAIT): Promise<Conn> {
  if (transport.tls === undefined) return tcpConn(await RawClient.tcp(t, transport.port, '127.0.0.1', timeout));
  return tlsConn(await TlsClient.connect(t, transport.port, transport.tls, timeout));
}

/**
 * Opens a connection and reports whether it got through the TLS handshake (always, for
 * TCP), keeping the connection either way (its address names its log line).
 */
export async function tryOpen(t: ExecutionContext, transport: Transport, timeout = HOSTILE_WAIT): Promise<{ conn: Conn; secured: boolean }> {
  if (transport.tls === undefined) return { conn: tcpConn(await RawClient.tcp(t, transport.port, '127.0.0.1', timeout)), secured: true };
  const client = new TlsClient(t, transport.port, transport.tls);
  const secured = await client.secure(timeout).then(
    () => true,
    () => false,
  );
  return { conn: tlsConn(client), secured };
}

/** Writes, ignoring a failure (the gateway may have closed first: that is the point). */
export async function writeQuietly(conn: Conn | RawClient, bytes: Buffer): Promise<void> {
  await conn.write(bytes).catch(() => undefined);
}

/** Opens a connection, names `service`, expects raw `ok`. */
export async function named(t: ExecutionContext, transport: Transport, service = 'pong'): Promise<Conn> {
  const conn = await open(t, transport);
  await conn.write(Buffer.from(service, 'latin1'));
  await conn.expect(Buffer.from('ok'));
  return conn;
}

/** A 1000-byte patterned frame: sent and expected back unchanged by a verified echo. */
export const ECHO_FRAME = frame(pattern(1000, 7, 3));

/**
 * What the suite expects of one hostile connection's log line: `code` (a string from
 * docs/errors.md or a socket error), any code (`'coded'`), or none (`null`, a clean end).
 */
export type Expect = string | 'coded' | null;

/** A hostile connection and what its line must say. */
export interface Hostile {
  what: string;
  peer: string;
  code: Expect;
  /** Messages the line may have (default: refused or closed). */
  msgs?: readonly string[];
}

const END_MSGS = ['connection refused', 'connection closed'] as const;

/**
 * Waits until every peer has its refusal/teardown line, scanning the log incrementally
 * (thousands of peers in a churn), and returns the lines by peer. A peer listed n times
 * (a client port reused within a batch) waits for n lines. `unattributed` counts end
 * lines without a peer (a client gone before the gateway could read its address): they
 * stand in for peers not found.
 */
export async function endLines(
  daemon: Daemon,
  peers: readonly string[],
  timeout = HOSTILE_WAIT,
  from = 0,
): Promise<{ byPeer: Map<string, LogLine[]>; unattributed: number; missing: string[] }> {
  const wanted = new Map<string, number>();
  for (const p of peers) wanted.set(p, (wanted.get(p) ?? 0) + 1);
  const byPeer = new Map<string, LogLine[]>();
  let found = 0;
  let unattributed = 0;
  let scanned = from;
  const deadline = Date.now() + timeout;
  for (;;) {
    const lines = daemon.log.lines;
    for (; scanned < lines.length; scanned++) {
      const l = lines[scanned]!;
      if (!END_MSGS.includes(l.msg as (typeof END_MSGS)[number])) continue;
      const peer = l['peer'];
      if (typeof peer !== 'string') {
        unattributed++;
        continue;
      }
      const want = wanted.get(peer);
      if (want === undefined) continue;
      const got = byPeer.get(peer) ?? [];
      if (got.length < want) found++;
      got.push(l);
      byPeer.set(peer, got);
    }
    if (found + unattributed >= peers.length || Date.now() > deadline || !daemon.running) break;
    await pause(20);
  }
  const missing = [...wanted].filter(([p, n]) => (byPeer.get(p)?.length ?? 0) < n).map(([p]) => p);
  return { byPeer, unattributed, missing };
}

/** Does `line` say what `h` expects? */
function matches(h: Hostile, line: LogLine): boolean {
  if (!(h.msgs ?? END_MSGS).includes(line.msg as string)) return false;
  const code = line['code'];
  if (h.code === 'coded') return typeof code === 'string';
  if (h.code === null) return code === undefined;
  return code === h.code;
}

/**
 * Asserts each hostile connection's line: present, with the expected message and code.
 * When a client port came back within the batch, each of its lines serves one client.
 */
export async function assertLogged(t: ExecutionContext, daemon: Daemon, hostile: readonly Hostile[], timeout = HOSTILE_WAIT, from = 0): Promise<void> {
  const { byPeer } = await endLines(daemon, hostile.map((h) => h.peer), timeout, from);
  for (const h of hostile) {
    const lines = byPeer.get(h.peer) ?? [];
    if (lines.length === 0) {
      t.fail(`${h.what} (${h.peer}): no refusal/teardown line logged`);
      continue;
    }
    const index = lines.findIndex((l) => matches(h, l));
    if (index === -1) {
      t.fail(`${h.what}: expected ${h.msgs?.join(' or ') ?? 'an end line'} with code ${JSON.stringify(h.code)}; logged: ${JSON.stringify(lines)}`);
      continue;
    }
    lines.splice(index, 1);
  }
  t.pass(`${hostile.length} refusal/teardown lines checked`);
}

/** A fresh client is served: `ok` (when named), a 1000-byte frame echoed, a clean close, logged. */
export async function verifiedEcho(t: ExecutionContext, daemon: Daemon, transport: Transport, service: string | null): Promise<void> {
  const from = daemon.log.lines.length;
  const conn = service === null ? await open(t, transport) : await named(t, transport, service);
  await conn.write(ECHO_FRAME);
  await conn.expect(ECHO_FRAME);
  conn.endWrite();
  await conn.expectEnd();
  // Its teardown line, so that its descriptors are gone before a baseline check.
  const { missing } = await endLines(daemon, [conn.peer], HOSTILE_WAIT, from);
  t.deepEqual(missing, [], 'the verified echo client has its teardown line');
}

/** A daemon under the suite, with its baseline. */
export interface HostileEnv {
  daemon: Daemon;
  transport: Transport;
  /** The name clients send, or null for a fixed target. */
  service: string | null;
  baseline: Baseline;
  /**
   * Log lines before this index belong to earlier batches: a client address (port) may
   * come back in a later batch, so each batch's lines are looked for after its mark.
   */
  mark: number;
  /** When the current batch started (Date.now()), for the batch timings logged. */
  started: number;
}

/** Starts a batch: its lines are looked for from here. */
export function markBatch(env: HostileEnv): void {
  env.mark = env.daemon.log.lines.length;
  env.started = Date.now();
}

/**
 * The checks after every batch: the lines, a verified echo, the baseline. Then marks the
 * start of the next batch.
 */
export async function afterBatch(t: ExecutionContext, env: HostileEnv, what: string, hostile: readonly Hostile[]): Promise<void> {
  await assertLogged(t, env.daemon, hostile, HOSTILE_WAIT, env.mark);
  await verifiedEcho(t, env.daemon, env.transport, env.service);
  await assertBackToBaseline(t, env.daemon, env.baseline);
  t.log(`${what}: ${hostile.length} clients, ${Date.now() - env.started} ms with the checks`);
  markBatch(env);
}

/**
 * Writes `bytes` one byte at a time, 200-500 ms apart (a fixed pseudo-random walk), until
 * the gateway ends the connection or `limit` ms passed; resolves the bytes written.
 */
export async function slowloris(conn: { write(b: Buffer): Promise<void>; readonly finished: boolean }, bytes: Buffer, limit: number): Promise<number> {
  const start = Date.now();
  let i = 0;
  for (; i < bytes.length && !conn.finished && Date.now() - start < limit; i++) {
    const ok = await conn.write(bytes.subarray(i, i + 1)).then(
      () => true,
      () => false,
    );
    if (!ok) break;
    await pause(200 + ((i * 131) % 301));
  }
  return i;
}

/** A real TLS ClientHello (the first flight of Node's client), captured on a local server. */
export async function captureClientHello(servername = 'localhost'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      socket.once('data', (chunk: Buffer) => {
        resolve(chunk);
        socket.destroy();
        server.close();
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      const client = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false });
      client.on('error', () => undefined);
      setTimeout(() => {
        client.destroy();
        server.close();
        reject(new Error('no ClientHello captured'));
      }, HOSTILE_WAIT).unref();
    });
  });
}

/** Runs `task(i)` for i < count with at most `inFlight` running at once. */
export async function bounded(count: number, inFlight: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, worker));
}

/** When a churned client leaves. */
export type ChurnMode = 'at-connect' | 'after-echo' | 'mid-handshake';

export interface ChurnResult {
  /** Every churned client's address (known once TCP connected). */
  peers: string[];
  /** Clients that completed their echo (mode after-echo). */
  echoed: number;
  /** Clients whose exchange did not go as scripted (refused, reset: not counted as errors here). */
  cut: number;
}

/** A bare socket (TCP, or TLS over TCP): churned clients are many, each kept light. */
function dial(transport: Transport): { raw: net.Socket; socket: net.Socket } {
  const raw = net.connect({ host: '127.0.0.1', port: transport.port });
  raw.on('error', () => undefined);
  if (transport.tls === undefined) return { raw, socket: raw };
  const socket = tls.connect({ ...transport.tls, socket: raw });
  socket.on('error', () => undefined);
  return { raw, socket };
}

/**
 * `count` connect/close cycles, `inFlight` at a time, the modes in turn: close as soon
 * as TCP connected (before the gateway reached the service, or the TLS handshake);
 * close after the `ok` (named) and one echoed frame; close mid-handshake (half a name,
 * or for a fixed target half a frame; for TLS after the ClientHello only).
 * Each cycle is bounded by `HOSTILE_WAIT`.
 */
export async function churn(
  transport: Transport,
  service: string | null,
  count: number,
  inFlight = 50,
  modes: readonly ChurnMode[] = ['at-connect', 'after-echo', 'mid-handshake'],
): Promise<ChurnResult> {
  const result: ChurnResult = { peers: [], echoed: 0, cut: 0 };
  const probe = frame('churn');
  const expected = Buffer.concat([service === null ? Buffer.alloc(0) : Buffer.from('ok'), probe]);
  await bounded(count, inFlight, async (i) => {
    const mode = modes[i % modes.length]!;
    const { raw, socket } = dial(transport);
    await new Promise<void>((resolve) => {
      let received = Buffer.alloc(0);
      let done = false;
      const finish = (echoed: boolean) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (echoed) result.echoed++;
        else if (mode === 'after-echo') result.cut++;
        socket.destroy();
        raw.destroy();
        resolve();
      };
      const timer = setTimeout(() => finish(false), HOSTILE_WAIT);
      raw.once('connect', () => {
        result.peers.push(`${raw.localAddress}:${raw.localPort}`);
        if (mode === 'at-connect') finish(false);
      });
      socket.once('close', () => finish(false));
      if (mode === 'mid-handshake') {
        if (transport.tls !== undefined) {
          // The ClientHello is out once the TLS socket wrote to the TCP one.
          raw.once('connect', () => setImmediate(() => finish(false)));
          return;
        }
        raw.once('connect', () => {
          socket.write(service === null ? probe.subarray(0, 6) : Buffer.from(service.slice(0, Math.ceil(service.length / 2))));
          setImmediate(() => finish(false));
        });
        return;
      }
      const ready = transport.tls === undefined ? 'connect' : 'secureConnect';
      // after-echo: the name alone first (the gateway takes its first read as the name),
      // the frame once `ok` came; a fixed target gets the frame at once.
      socket.once(ready, () => {
        if (!done) socket.write(service === null ? probe : Buffer.from(service));
      });
      socket.on('data', (chunk: Buffer) => {
        received = Buffer.concat([received, chunk]);
        if (service !== null && received.length === 2 && received.equals(Buffer.from('ok'))) socket.write(probe);
        if (received.length >= expected.length) finish(received.subarray(0, expected.length).equals(expected));
      });
    });
  });
  return result;
}

/** Number of churn cycles (`HOSTILE_CHURN` for a soak; default `fallback`). */
export function churnCount(fallback: number): number {
  const env = process.env['HOSTILE_CHURN'];
  if (env === undefined || env === '') return fallback;
  const n = Number(env);
  if (!Number.isInteger(n) || n < 1) throw new Error(`HOSTILE_CHURN must be a positive integer, got ${env}`);
  return n;
}

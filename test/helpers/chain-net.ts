/**
 * Sockets for the chain tests (test/chain.test.ts): recording proxies put between two
 * hops, fake gateways, raw clients, and the recorded transcripts with their ports
 * rewritten to the test's. Everything listens on loopback or in a temporary run
 * directory and is closed by the cleanup function it is given.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { vectorsDir } from './paths.js';
import { Waiters } from './waiters.js';

export type Cleanup = (fn: () => void | Promise<void>) => void;

/** A libipc frame: 4-byte big-endian length, then the payload. */
export function frame(payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload;
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length);
  return Buffer.concat([header, body]);
}

export const hex = (data: string | Buffer): string => (typeof data === 'string' ? Buffer.from(data, 'latin1') : data).toString('hex');

/** The framed `ok` a gateway answers ipcd. */
export const FRAMED_OK = '000000026f6b';
/** pong's default message, framed. */
export const BOUNCE = '00000009626f756e6365206d65';

// ---------------------------------------------------------------------------------------
// Transcripts

export interface WireHop {
  dir: string;
  hex: string;
}

export interface ChainVector {
  scenario: string;
  ours: string;
  ipc_network?: string;
  steps: { dir: string; hex?: string; iov_hex?: string; ancillary?: { level: number; type: number; data_hex: string }[] }[];
  wire?: WireHop[];
}

export { vectorsDir };

export function loadVector(scenario: string): ChainVector {
  return JSON.parse(readFileSync(path.join(vectorsDir(), `${scenario}.json`), 'utf8')) as ChainVector;
}

export function loadIndex(): { scenario: string; ours: string }[] {
  return JSON.parse(readFileSync(path.join(vectorsDir(), 'INDEX.json'), 'utf8')) as { scenario: string; ours: string }[];
}

const RECORDED_ADDRESS = /127\.0\.0\.1:\d+/g;

/** Text with the recording's `127.0.0.1:PORT` replaced by `127.0.0.1:<port>`. */
export function withPort(text: string, port: number): string {
  return text.replace(RECORDED_ADDRESS, `127.0.0.1:${port}`);
}

/**
 * Recorded bytes with the port rewritten: a frame (its length field matches the rest) is
 * decoded, rewritten and framed again, so the length follows the new port's digits.
 */
export function rewriteHex(recorded: string, port: number): string {
  const bytes = Buffer.from(recorded, 'hex');
  if (bytes.length >= 4 && bytes.readUInt32BE(0) === bytes.length - 4) {
    return hex(frame(withPort(bytes.subarray(4).toString('latin1'), port)));
  }
  return hex(withPort(bytes.toString('latin1'), port));
}

/** The recorded bytes of the wire hops going from `from` to `to`, in order (either may be '?'). */
export function hopsOf(vector: ChainVector, from: string, to: string): string[] {
  return (vector.wire ?? []).filter((w) => w.dir === `${from}->${to}`).map((w) => w.hex);
}

/** The one recorded hop `from->to` (the n-th with `nth`). */
export function hop(vector: ChainVector, from: string, to: string, nth = 0): string {
  const found = hopsOf(vector, from, to)[nth];
  if (found === undefined) throw new Error(`${vector.scenario}: no wire hop ${from}->${to} #${nth}`);
  return found;
}

// ---------------------------------------------------------------------------------------
// Recording proxy

/** `>`: from the connecting side to the target; `<`: back. */
export type Direction = '>' | '<';

/** One proxied connection: every chunk in arrival order, and how each side ended. */
export class RecordedConnection {
  readonly chunks: { dir: Direction; data: Buffer }[] = [];
  /** Local port of the proxy's connection to the target (the target logs it as the peer). */
  upstreamPort: number | undefined;
  /** Set when the target could not be reached. */
  upstreamError: string | undefined;
  /** Which side ended first (FIN or close), once one did. */
  firstEnd: 'client' | 'target' | undefined;
  /** Resolves once both sockets are closed. */
  readonly closed: Promise<void>;
  resolveClosed!: () => void;

  constructor() {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  /** Bytes sent in `dir`, concatenated. */
  bytes(dir: Direction): string {
    return Buffer.concat(this.chunks.filter((c) => c.dir === dir).map((c) => c.data)).toString('hex');
  }

  /**
   * The conversation as runs: consecutive chunks in one direction joined, e.g.
   * `['> 0000001a...', '< 000000026f6b', ...]`. Each hop of a request/response exchange
   * is one run, whatever TCP did to the segments.
   */
  runs(): string[] {
    const out: { dir: Direction; hex: string }[] = [];
    for (const c of this.chunks) {
      const last = out[out.length - 1];
      if (last && last.dir === c.dir) last.hex += c.data.toString('hex');
      else out.push({ dir: c.dir, hex: c.data.toString('hex') });
    }
    return out.map((r) => `${r.dir} ${r.hex}`);
  }
}

export interface RecordingProxy {
  /** TCP port (TCP proxies) or socket path (Unix proxies). */
  port: number;
  path: string;
  readonly connections: RecordedConnection[];
  /** Resolves the first connection (made before or after the call) matching `predicate`. */
  waitConnection(predicate: (c: RecordedConnection) => boolean, timeout: number): Promise<RecordedConnection>;
}

/**
 * A byte-for-byte proxy that records both directions. It forwards half-closes, and
 * closes the client without a byte when the target cannot be reached.
 * `listen` is a TCP port on 127.0.0.1 (0: ephemeral) or a Unix socket path; `target`
 * likewise a `{ port }` on 127.0.0.1 or a `{ path }`.
 */
export async function recordingProxy(
  cleanup: Cleanup,
  listen: { port: number } | { path: string },
  target: { port: number } | { path: string },
): Promise<RecordingProxy> {
  const connections: RecordedConnection[] = [];
  const waiters = new Waiters();
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const rec = new RecordedConnection();
    const upstream = net.connect({ ...('port' in target ? { host: '127.0.0.1', port: target.port } : { path: target.path }), allowHalfOpen: true });
    sockets.add(client);
    sockets.add(upstream);
    connections.push(rec);
    let open = 2;
    const onClose = (socket: net.Socket) => () => {
      sockets.delete(socket);
      if (--open === 0) rec.resolveClosed();
    };
    client.once('close', onClose(client));
    upstream.once('close', onClose(upstream));
    upstream.once('connect', () => {
      rec.upstreamPort = upstream.localPort;
      waiters.wake();
    });
    client.on('data', (data: Buffer) => {
      rec.chunks.push({ dir: '>', data });
      upstream.write(data);
      waiters.wake();
    });
    upstream.on('data', (data: Buffer) => {
      rec.chunks.push({ dir: '<', data });
      client.write(data);
      waiters.wake();
    });
    client.on('end', () => {
      rec.firstEnd ??= 'client';
      upstream.end();
    });
    upstream.on('end', () => {
      rec.firstEnd ??= 'target';
      client.end();
    });
    client.on('error', () => {
      rec.firstEnd ??= 'client';
      upstream.destroy();
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      rec.upstreamError ??= err.code ?? err.message;
      rec.firstEnd ??= 'target';
      client.destroy();
    });
    waiters.wake();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('port' in listen) server.listen(listen.port, '127.0.0.1', resolve);
    else server.listen(listen.path, resolve);
  });
  cleanup(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    path: 'path' in listen ? listen.path : '',
    connections,
    waitConnection(predicate, timeout) {
      return waiters.wait(
        () => {
          const found = connections.find(predicate);
          return found ? { value: found } : undefined;
        },
        timeout,
        () => new Error(`no matching proxied connection within ${timeout} ms; seen: ${JSON.stringify(connections.map((c) => c.runs()))}`),
      );
    },
  };
}

// ---------------------------------------------------------------------------------------
// Fake servers and raw clients

/** A connection accepted by a {@link fakeServer}: what it received so far. */
export interface FakeConnection {
  socket: net.Socket;
  received: Buffer;
  ended: boolean;
  closed: boolean;
}

export interface FakeServer {
  port: number;
  connections: FakeConnection[];
  /** Resolves the first connection whose received bytes satisfy `predicate`. */
  waitFor(predicate: (c: FakeConnection) => boolean, timeout: number): Promise<FakeConnection>;
}

/**
 * A raw server (TCP on 127.0.0.1 or Unix) that records what each connection receives
 * and calls `onData(conn, chunk)` to answer.
 */
export async function fakeServer(
  cleanup: Cleanup,
  listen: { port: number } | { path: string },
  onData: (conn: FakeConnection, chunk: Buffer) => void,
): Promise<FakeServer> {
  const connections: FakeConnection[] = [];
  const waiters = new Waiters();
  const wake = () => waiters.wake();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const conn: FakeConnection = { socket, received: Buffer.alloc(0), ended: false, closed: false };
    connections.push(conn);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      conn.received = Buffer.concat([conn.received, chunk]);
      onData(conn, chunk);
      wake();
    });
    socket.on('end', () => {
      conn.ended = true;
      wake();
    });
    socket.on('close', () => {
      conn.closed = true;
      wake();
    });
    wake();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('port' in listen) server.listen(listen.port, '127.0.0.1', resolve);
    else server.listen(listen.path, resolve);
  });
  cleanup(async () => {
    for (const c of connections) c.socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? address.port : 0,
    connections,
    waitFor(predicate, timeout) {
      return waiters.wait(
        () => {
          const found = connections.find(predicate);
          return found ? { value: found } : undefined;
        },
        timeout,
        () =>
          new Error(
            `fake server: no matching connection within ${timeout} ms; received: ${JSON.stringify(connections.map((c) => c.received.toString('hex')))}`,
          ),
      );
    },
  };
}

/** A free loopback TCP port with nothing listening on it (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface Exchange {
  /** Everything the server sent, hex. */
  received: string;
  /** How it ended: the server closed (`eof`), `until` was satisfied (`enough`), an error, or the bound `timeout` passed first. */
  end: 'eof' | 'enough' | 'error' | 'timeout';
}

/**
 * Connects `socketPath` (or a TCP port on 127.0.0.1), writes `send` (then half-closes with
 * `halfClose`), then reads until the server closes, `until(received)` says enough, or
 * `timeout` ms pass; then closes. `after` sees every chunk and may write more.
 */
export function exchange(
  to: { path: string } | { port: number },
  send: Buffer,
  timeout: number,
  until: (received: Buffer) => boolean = () => false,
  after?: (received: Buffer, socket: net.Socket) => void,
  /** Half-close (FIN) right after `send`. */
  halfClose = false,
): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = net.connect('path' in to ? { path: to.path } : { host: '127.0.0.1', port: to.port });
    let received = Buffer.alloc(0);
    let settled = false;
    const finish = (end: Exchange['end']) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ received: received.toString('hex'), end });
    };
    const timer = setTimeout(() => finish('timeout'), timeout);
    socket.on('connect', () => (halfClose ? socket.end(send) : socket.write(send)));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      after?.(received, socket);
      if (until(received)) finish('enough');
    });
    socket.on('end', () => finish('eof'));
    socket.on('error', () => finish('error'));
  });
}

export { limiter } from './limit.js';

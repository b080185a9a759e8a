/**
 * Tools of the hostile-client suites for wsd (test/hostile-wsd.test.ts and
 * test/regressions-issue8-wsd.test.ts): daemons shared by the serial tests of one file
 * (ava refuses t.teardown in hooks), wsd spawned with --expose-gc, clients that dribble
 * bytes or reset mid-frame, a captured TLS ClientHello, and a bounded-concurrency runner.
 */
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import type { ExecutionContext } from 'ava';
import { spawnCli, type Daemon, type SpawnOptions } from './daemon.js';
import { HOSTILE_NODE_ARGS, openFds } from './hostile.js';
import type { LogLine } from './log-sink.js';

/** Upper bound for a daemon to start (node startup on a loaded 2-core machine). */
export const START_TIMEOUT = 20_000;

/**
 * Teardowns for daemons shared by several tests: pass `scope.context` where a helper wants
 * an ExecutionContext (only its `teardown` is used) and call `scope.close()` from
 * `test.after.always`.
 */
export class SharedScope {
  private readonly teardowns: Array<() => unknown> = [];
  readonly context = { teardown: (fn: () => unknown) => void this.teardowns.push(fn) } as unknown as ExecutionContext;

  async close(): Promise<void> {
    for (const fn of this.teardowns.reverse()) await fn();
  }
}

/**
 * Node arguments for a wsd whose memory a test compares: --expose-gc (hostile.ts) and a
 * young generation capped at 1 MiB semi-spaces. Without the cap, V8 grows the young
 * generation under the allocation rate of a burst of connections and keeps it after a
 * full GC: measured +35-40 MB of RSS over the first 520-client burst and 1,000-cycle
 * churn, flat afterwards (heapUsed flat at ~7 MB), which no batch could be compared
 * with. Capped, RSS after a forced GC follows live memory, so a leak still shows.
 */
export const WSD_NODE_ARGS = [...HOSTILE_NODE_ARGS, '--max-semi-space-size=1'] as const;

/** A spawned wsd and the port it listens on. */
export interface HostileWsd {
  daemon: Daemon;
  port: number;
}

/**
 * Starts wsd (`--listen 127.0.0.1:0 --no-outbound ...args`) with {@link WSD_NODE_ARGS}, so
 * hostile.ts can compare its descriptors and collected RSS with a baseline.
 */
export async function startHostileWsd(
  t: ExecutionContext,
  rundir: string,
  args: readonly string[],
  options: SpawnOptions = {},
): Promise<HostileWsd> {
  const daemon = spawnCli(t, 'wsd', ['--listen', '127.0.0.1:0', '--no-outbound', ...args], {
    nodeArgs: WSD_NODE_ARGS,
    ...options,
    env: { RUNDIR: rundir, ...options.env },
  });
  const line = await daemon.listening((l) => typeof l['port'] === 'number', START_TIMEOUT);
  return { daemon, port: line['port'] as number };
}

/** Log lines that end a client connection in wsd: a refusal or the teardown of a switch. */
export function isEnding(line: LogLine): boolean {
  return line.msg === 'connection refused' || line.msg === 'connection closed';
}

/**
 * Polls `daemon`'s log from line index `from` on (earlier lines are ignored: ephemeral
 * ports come back after a few thousand connections) until `count` lines match;
 * resolves them. Scans each line once, so thousands of lines cost little.
 */
export async function linesFrom(
  daemon: Daemon,
  from: number,
  predicate: (line: LogLine) => boolean,
  count: number,
  timeout: number,
  what: string,
): Promise<LogLine[]> {
  const found: LogLine[] = [];
  let next = from;
  const deadline = performance.now() + timeout;
  for (;;) {
    const lines = daemon.log.lines;
    for (; next < lines.length; next++) if (predicate(lines[next]!)) found.push(lines[next]!);
    if (found.length >= count) return found;
    if (!daemon.running) throw new Error(`${daemon.name} exited while waiting for ${what}`);
    if (performance.now() > deadline) {
      throw new Error(`${found.length} of ${count} ${what} within ${timeout} ms; last lines:\n${lines.slice(-20).map((l) => JSON.stringify(l)).join('\n')}`);
    }
    await sleep(20);
  }
}

/** The ending log line of the client at `peer` (`127.0.0.1:PORT`), logged at index `from` or later. */
export async function endingOf(daemon: Daemon, from: number, peer: string, timeout = 10_000): Promise<LogLine> {
  const [line] = await linesFrom(daemon, from, (l) => isEnding(l) && l['peer'] === peer, 1, timeout, `ending log line of ${peer}`);
  return line!;
}

/** Resolves once `daemon` has had `fds` open descriptors for `quietMs` in a row (closes in flight settled). */
export async function settledFds(daemon: Daemon, quietMs = 500, timeout = 15_000): Promise<number> {
  const deadline = performance.now() + timeout;
  let last = openFds(daemon.pid);
  let since = performance.now();
  while (performance.now() < deadline) {
    await sleep(50);
    const now = openFds(daemon.pid);
    if (now !== last) {
      last = now;
      since = performance.now();
    } else if (performance.now() - since >= quietMs) return now;
  }
  throw new Error(`${daemon.name}: descriptors still changing after ${timeout} ms`);
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` running at once. */
export async function pool<T>(count: number, concurrency: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array<T>(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      results[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(count, concurrency) }, worker));
  return results;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Writes `data` one byte every `intervalMs` until it is all sent, the socket closes, or
 * `maxMs` passed. Resolves when the first byte was written (`first`, performance.now())
 * and `done`, which says whether the peer closed the socket before the end.
 */
export function dribble(
  socket: net.Socket,
  data: string | Buffer,
  intervalMs: number,
  maxMs: number,
): { first: number; done: Promise<{ closedByPeer: boolean; sent: number }> } {
  const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data, 'latin1');
  const first = performance.now();
  let sent = 0;
  const done = (async () => {
    while (sent < bytes.length && performance.now() - first < maxMs) {
      if (socket.destroyed || socket.readableEnded) return { closedByPeer: true, sent };
      socket.write(bytes.subarray(sent, sent + 1));
      sent++;
      await sleep(intervalMs);
    }
    return { closedByPeer: socket.destroyed || socket.readableEnded, sent };
  })();
  return { first, done };
}

/** Resolves when `socket` closed; false if it is still open after `timeout` ms. */
export async function closedWithin(socket: net.Socket, timeout: number): Promise<boolean> {
  if (socket.destroyed || socket.closed) return true;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeout);
  });
  try {
    return await Promise.race([once(socket, 'close').then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The first flight of a real TLS client (its ClientHello record), captured from
 * node:tls talking to a local listener that never answers.
 */
export async function captureClientHello(): Promise<Buffer> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  try {
    const got = new Promise<Buffer>((resolve) => {
      server.once('connection', (socket) => {
        socket.once('data', (chunk: Buffer) => {
          resolve(chunk);
          socket.destroy();
        });
      });
    });
    const client = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
    client.on('error', () => undefined);
    const hello = await got;
    client.destroy();
    return hello;
  } finally {
    server.close();
  }
}

/** A plain TCP socket to 127.0.0.1:`port`, connected and flowing, errors swallowed (tests look at `close`). */
export async function connectRaw(port: number): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  // Flowing: a paused socket would never see the peer's FIN (no 'end', no 'close').
  socket.resume();
  await once(socket, 'connect');
  return socket;
}

/** `127.0.0.1:<local port>` of a socket, as wsd logs `peer`. */
export function peerOf(socket: net.Socket): string {
  return `127.0.0.1:${socket.localPort}`;
}

/** Everything a socket receives until it closes (or `timeout` ms), and whether it ended with an error. */
export function collectUntilClose(socket: net.Socket, timeout = 10_000): Promise<{ data: Buffer; error: string | null; timedOut: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | null = null;
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      error = err.code ?? err.message;
    });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ data: Buffer.concat(chunks), error, timedOut: true });
    }, timeout);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ data: Buffer.concat(chunks), error, timedOut: false });
    });
  });
}

/**
 * Parses a complete HTTP response at the start of `data`: the status, headers, and the
 * body per content-length. `complete` is false when the head or the body is cut short.
 */
export function parseResponse(data: Buffer): {
  complete: boolean;
  status: number;
  headers: Record<string, string>;
  body: string;
} {
  const end = data.indexOf('\r\n\r\n');
  if (end === -1) return { complete: false, status: 0, headers: {}, body: '' };
  const [statusLine = '', ...rest] = data.subarray(0, end).toString('latin1').split('\r\n');
  const match = /^HTTP\/1\.[01] (\d{3}) /.exec(statusLine);
  const headers: Record<string, string> = {};
  for (const line of rest) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const length = headers['content-length'] === undefined ? 0 : Number(headers['content-length']);
  const body = data.subarray(end + 4, end + 4 + length);
  return {
    complete: match !== null && body.length === length,
    status: match ? Number(match[1]) : 0,
    headers,
    body: body.toString('utf8'),
  };
}

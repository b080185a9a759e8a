/**
 * A scripted peer on a real socket (TCP or Unix): writes exact bytes, and waits for exact
 * bytes or for the end of the stream, each wait bounded by a timeout. Every received byte
 * is accounted for: `expect` consumes what it matched, `expectEof` fails on leftovers.
 */
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import { Waiters } from './waiters.js';

/** Default upper bound of a wait, ms. */
export const WAIT = 5000;

/** Bytes given as a Buffer or as a hex string. */
export type Bytes = Buffer | string;

export function toBuffer(bytes: Bytes): Buffer {
  return typeof bytes === 'string' ? Buffer.from(bytes, 'hex') : bytes;
}

/** Hex for messages, shortened for big buffers. */
export function showHex(bytes: Buffer, max = 64): string {
  const hex = bytes.subarray(0, max).toString('hex');
  return bytes.length > max ? `${hex}... (${bytes.length} bytes)` : `${hex} (${bytes.length} bytes)`;
}

/** How a stream ended: a clean FIN, or a reset (or other socket error). */
export type Ending = 'eof' | 'reset';

export class RawClient {
  readonly socket: net.Socket;
  /** Received and not yet consumed by `expect`. */
  private pending: Buffer = Buffer.alloc(0);
  /** Total bytes received. */
  received = 0;
  /** The peer ended its side (FIN). */
  ended = false;
  /** The socket is closed. */
  closed = false;
  error: NodeJS.ErrnoException | null = null;
  /**
   * This client's address as the gateway logs it (`127.0.0.1:PORT`, `[::1]:PORT`);
   * `unix` for a Unix socket.
   */
  readonly peer: string;
  private readonly waiters = new Waiters();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    const { localAddress, localPort } = socket;
    this.peer =
      localAddress === undefined
        ? 'unix'
        : localAddress.includes(':')
          ? `[${localAddress}]:${localPort}`
          : `${localAddress}:${localPort}`;
    socket.on('data', (chunk: Buffer) => {
      this.received += chunk.length;
      this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.error = err;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Connects to `host:port` (destroyed at teardown). Rejects with the connect error. */
  static tcp(t: ExecutionContext, port: number, host = '127.0.0.1', timeout = WAIT): Promise<RawClient> {
    return RawClient.open(t, { host, port }, timeout);
  }

  /** Connects to a Unix socket (destroyed at teardown). Rejects with the connect error. */
  static unix(t: ExecutionContext, path: string, timeout = WAIT): Promise<RawClient> {
    return RawClient.open(t, { path }, timeout);
  }

  private static open(t: ExecutionContext, target: net.NetConnectOpts, timeout: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(target);
      t.teardown(() => {
        socket.destroy();
      });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${JSON.stringify(target)} did not finish within ${timeout} ms`));
      }, timeout);
      const onError = (err: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        socket.setNoDelay?.(true);
        resolve(new RawClient(socket));
      });
    });
  }

  /** Received bytes not consumed yet. */
  get unconsumed(): Buffer {
    return this.pending;
  }

  /** Writes bytes; resolves once they were handed to the kernel. */
  write(bytes: Bytes): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(toBuffer(bytes), (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Half-closes (shutdown(SHUT_WR)); reading goes on. */
  endWrite(): void {
    this.socket.end();
  }

  /** Closes the socket now. */
  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Waits for exactly `bytes` as the next bytes received and consumes them. Fails when
   * different bytes arrive, when the stream ends first, or after `timeout` ms.
   */
  async expect(bytes: Bytes, timeout = WAIT): Promise<void> {
    const want = toBuffer(bytes);
    await this.waitUntil(
      () => this.pending.length >= want.length || this.finished,
      timeout,
      () => `expected ${showHex(want)}`,
    );
    const got = this.pending.subarray(0, want.length);
    if (!got.equals(want)) {
      throw new Error(`expected ${showHex(want)}, received ${showHex(this.pending)}${this.endingText()}`);
    }
    this.pending = this.pending.subarray(want.length);
  }

  /** Waits for `n` bytes and consumes them. */
  async read(n: number, timeout = WAIT): Promise<Buffer> {
    await this.waitUntil(() => this.pending.length >= n || this.finished, timeout, () => `expected ${n} bytes`);
    if (this.pending.length < n) throw new Error(`expected ${n} bytes, received ${showHex(this.pending)}${this.endingText()}`);
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    return out;
  }

  /**
   * Waits for the end of the stream (FIN, or a reset) and fails if bytes arrived that no
   * `expect` consumed: "closed without a byte" is `expectEof()` on a fresh client.
   */
  async expectEof(timeout = WAIT): Promise<Ending> {
    await this.waitUntil(() => this.finished, timeout, () => 'expected the end of the stream');
    if (this.pending.length > 0) throw new Error(`unexpected bytes before the end: ${showHex(this.pending)}`);
    return this.error && !this.ended ? 'reset' : 'eof';
  }

  /** True once the peer ended, or the socket failed or closed. */
  get finished(): boolean {
    return this.ended || this.closed || this.error !== null;
  }

  private endingText(): string {
    if (this.error) return ` then ${this.error.code ?? this.error.message}`;
    if (this.ended || this.closed) return ' then EOF';
    return '';
  }

  private waitUntil(condition: () => boolean, timeout: number, what: () => string): Promise<void> {
    return this.waiters.until(
      condition,
      timeout,
      () => new Error(`${what()}: nothing more within ${timeout} ms; pending ${showHex(this.pending)}${this.endingText()}`),
    );
  }

  private wake(): void {
    this.waiters.wake();
  }
}

/** A libipc frame: 4-byte big-endian length, then the payload (the tests' own encoder). */
export function frame(payload: Bytes | string): Buffer {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

/** `length` bytes where byte i is `(i * mul + add) % 256` (the vectors' payload patterns). */
export function pattern(length: number, mul: number, add: number, mod = 256): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = (i * mul + add) % mod;
  return out;
}

/** Resolves after `ms` (pacing writes so they reach the peer as separate segments). */
export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The probe the vectors use after a scenario: `ping` framed, echoed unchanged. */
export const PROBE = '0000000470696e67';

/** Sends the probe on `client` and expects its echo. */
export async function probeEcho(client: RawClient, timeout = WAIT): Promise<void> {
  await client.write(PROBE);
  await client.expect(PROBE, timeout);
}

/** Opens a TCP client to tcpd, names `service`, expects raw `ok`. */
export async function tcpSession(t: ExecutionContext, port: number, service = 'pong', host = '127.0.0.1'): Promise<RawClient> {
  const client = await RawClient.tcp(t, port, host);
  await client.write(Buffer.from(service, 'latin1'));
  await client.expect(Buffer.from('ok'));
  return client;
}

/** Writes `message` on a plain socket and resolves the first `message.length` bytes read back (bounded). */
export function echoOn(socket: net.Socket, message: Buffer, timeout = 15_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => reject(new Error(`no echo within ${timeout} ms (got ${got.toString('hex')})`)), timeout);
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= message.length) {
        clearTimeout(timer);
        resolve(got);
      }
    });
    socket.write(message);
  });
}

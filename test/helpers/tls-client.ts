/**
 * Clients for tlsd's tests: a Node TLS client over a TCP socket the test owns (so it can
 * drop the TCP connection under TLS), a plain TCP client, and `openssl s_client`. Every
 * wait is bounded; every socket and process is destroyed at teardown. Received bytes are
 * all accounted for: `expect` consumes what it matched, `expectEnd` fails on leftovers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';
import type { ExecutionContext } from 'ava';
import { WAIT } from './tls-daemon.js';
import { Waiters } from './waiters.js';

/** The failure of a wait: `<what>: not within <timeout> ms`. */
function notWithin(timeout: number, what: () => string): () => Error {
  return () => new Error(`${what()}: not within ${timeout} ms`);
}

/** A libipc frame: 4-byte big-endian length, then the payload. */
export function frame(payload: Buffer | string): Buffer {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

function hex(bytes: Buffer, max = 48): string {
  const text = bytes.subarray(0, max).toString('hex');
  return bytes.length > max ? `${text}... (${bytes.length} bytes)` : `${text} (${bytes.length} bytes)`;
}

/** Bytes received on a stream, with the stream's ending. */
abstract class Receiver {
  protected pending: Buffer = Buffer.alloc(0);
  /** Every byte received (application bytes, for TLS). */
  received = 0;
  ended = false;
  closed = false;
  error: Error | null = null;
  protected readonly waiters = new Waiters();

  protected onData(chunk: Buffer): void {
    this.received += chunk.length;
    this.pending = Buffer.concat([this.pending, chunk]);
    this.waiters.wake();
  }

  get finished(): boolean {
    return this.ended || this.closed || this.error !== null;
  }

  /** Received bytes not consumed yet. */
  get unconsumed(): Buffer {
    return this.pending;
  }

  protected ending(): string {
    if (this.error) return ` then ${(this.error as NodeJS.ErrnoException).code ?? this.error.message.trim()}`;
    return this.finished ? ' then EOF' : '';
  }

  /** Waits for exactly `bytes` as the next bytes and consumes them. */
  async expect(bytes: Buffer, timeout = WAIT): Promise<void> {
    await this.waiters.until(
      () => this.pending.length >= bytes.length || this.finished,
      timeout,
      notWithin(timeout, () => `expected ${hex(bytes)}, received ${hex(this.pending)}${this.ending()}`),
    );
    const got = this.pending.subarray(0, bytes.length);
    if (!got.equals(bytes)) throw new Error(`expected ${hex(bytes)}, received ${hex(this.pending)}${this.ending()}`);
    this.pending = this.pending.subarray(bytes.length);
  }

  /**
   * Waits for the end of the stream (EOF, reset or TLS error) and fails if bytes arrived
   * that no `expect` consumed: "closed without a byte" on a fresh client.
   */
  async expectEnd(timeout = WAIT): Promise<void> {
    await this.waiters.until(() => this.finished, timeout, notWithin(timeout, () => `expected the end of the stream, received ${hex(this.pending)}`));
    if (this.pending.length > 0) throw new Error(`unexpected bytes before the end: ${hex(this.pending)}`);
  }
}

export interface TlsClientOptions extends Omit<tls.ConnectionOptions, 'socket' | 'host' | 'port'> {
  host?: string;
}

/** A Node TLS client to `host:port` over a TCP socket it owns (`raw`). */
export class TlsClient extends Receiver {
  readonly raw: net.Socket;
  readonly socket: tls.TLSSocket;
  /** The TLS handshake completed on this side. */
  secured = false;
  /** Session tickets/sessions received, last one last. */
  readonly sessions: Buffer[] = [];
  /** `127.0.0.1:PORT` of this client, as tlsd logs it (set once TCP connected). */
  peer = '';

  constructor(t: ExecutionContext, port: number, options: TlsClientOptions = {}) {
    super();
    const host = options.host ?? '127.0.0.1';
    this.raw = net.connect({ host, port });
    this.raw.on('error', () => undefined);
    this.raw.once('connect', () => {
      this.peer = `${this.raw.localAddress}:${this.raw.localPort}`;
    });
    this.socket = tls.connect({ ...options, host, port, socket: this.raw });
    this.socket.on('secureConnect', () => {
      this.secured = true;
      this.waiters.wake();
    });
    this.socket.on('session', (session: Buffer) => {
      this.sessions.push(session);
      this.waiters.wake();
    });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('end', () => {
      this.ended = true;
      this.waiters.wake();
    });
    this.socket.on('error', (err) => {
      this.error = err;
      this.waiters.wake();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.waiters.wake();
    });
    t.teardown(() => {
      this.socket.destroy();
      this.raw.destroy();
    });
  }

  /** Connects and completes the TLS handshake; rejects with the reason otherwise. */
  static async connect(t: ExecutionContext, port: number, options: TlsClientOptions = {}, timeout = WAIT): Promise<TlsClient> {
    const client = new TlsClient(t, port, options);
    await client.secure(timeout);
    return client;
  }

  /** Waits for this side of the handshake to complete. */
  async secure(timeout = WAIT): Promise<void> {
    await this.waiters.until(() => this.secured || this.finished, timeout, notWithin(timeout, () => 'TLS handshake'));
    if (!this.secured) throw new Error(`TLS handshake failed${this.ending()}`);
  }

  /** Waits for a session to resume with (TLS 1.3 sends tickets after the handshake). */
  async session(timeout = WAIT): Promise<Buffer> {
    await this.waiters.until(() => this.sessions.length > 0 || this.finished, timeout, notWithin(timeout, () => 'a TLS session'));
    const session = this.sessions.at(-1);
    if (!session) throw new Error(`no TLS session${this.ending()}`);
    return session;
  }

  write(bytes: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(bytes, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Sends a frame and expects it back unchanged. */
  async echo(payload: Buffer | string, timeout = WAIT): Promise<void> {
    const bytes = frame(payload);
    await this.write(bytes);
    await this.expect(bytes, timeout);
  }

  /** The server certificate this client was shown. */
  get serverCertificate(): tls.PeerCertificate {
    return this.socket.getPeerCertificate();
  }

  /** Closes with close_notify and waits for the socket to close. */
  async close(timeout = WAIT): Promise<void> {
    this.socket.end();
    await this.waiters.until(() => this.closed, timeout, notWithin(timeout, () => 'close'));
  }
}

/** A plain TCP client. */
export class TcpClient extends Receiver {
  readonly socket: net.Socket;

  private constructor(socket: net.Socket) {
    super();
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      this.ended = true;
      this.waiters.wake();
    });
    socket.on('error', (err) => {
      this.error = err;
      this.waiters.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiters.wake();
    });
  }

  private knownPeer: string | null = null;

  /** How the gateway logs this client (`ip:port`); kept once known, as a closed socket forgets it. */
  get peer(): string {
    if (this.knownPeer === null && this.socket.localAddress !== undefined) {
      this.knownPeer = `${this.socket.localAddress}:${this.socket.localPort}`;
    }
    return this.knownPeer ?? 'undefined:undefined';
  }

  static connect(t: ExecutionContext, port: number, timeout = WAIT): Promise<TcpClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      t.teardown(() => {
        socket.destroy();
      });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`TCP connect to port ${port} not within ${timeout} ms`));
      }, timeout);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        const client = new TcpClient(socket);
        void client.peer; // remembered now, while the socket is connected
        resolve(client);
      });
    });
  }

  write(bytes: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(bytes, (err) => (err ? reject(err) : resolve()));
    });
  }
}

/** `openssl s_client` as a child process: stdin in, stdout out. */
export class OpensslClient extends Receiver {
  readonly child: ChildProcess;
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;

  constructor(t: ExecutionContext, args: readonly string[]) {
    super();
    this.child = spawn('openssl', ['s_client', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdin!.on('error', () => undefined);
    this.child.stdout!.on('data', (chunk: Buffer) => this.onData(chunk));
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (text: string) => {
      this.stderr += text;
    });
    this.child.once('error', (err) => {
      this.error = err;
      this.exit ??= { code: null, signal: null };
      this.waiters.wake();
    });
    this.child.once('close', (code, signal) => {
      this.exit = { code, signal };
      this.closed = true;
      this.waiters.wake();
    });
    t.teardown(async () => {
      if (this.exit !== null) return;
      this.child.kill('SIGKILL');
      await this.waitExit().catch(() => undefined);
    });
  }

  write(bytes: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.child.stdin!.write(bytes, (err) => (err ? reject(err) : resolve()));
    });
  }

  async waitExit(timeout = WAIT): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    await this.waiters.until(() => this.exit !== null, timeout, notWithin(timeout, () => `openssl s_client exit; stderr: ${this.stderr}`));
    return this.exit!;
  }

  /** SIGTERM (s_client -quiet ignores stdin EOF) and wait for the exit. */
  async stop(timeout = WAIT): Promise<void> {
    if (this.exit === null) this.child.kill('SIGTERM');
    await this.waitExit(timeout);
  }
}

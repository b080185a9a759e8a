/**
 * The `ws` package as a test client: open (or learn the HTTP status of a refusal),
 * receive messages in order with their type, and learn the close code.
 */
import { WebSocket, type ClientOptions } from 'ws';
import { WAIT } from './ws-procs.js';

/** A received message: its bytes and whether it came as binary or text. */
export interface Received {
  data: Buffer;
  binary: boolean;
}

/** What ended a connection. */
export interface Closed {
  code: number;
  reason: string;
}

/** A connected `ws` client with a queue of received messages and its close code. */
export class WsClient {
  readonly ws: WebSocket;
  readonly received: Received[] = [];
  closed: Closed | null = null;
  error: Error | null = null;
  private readonly waiters = new Set<() => void>();
  private readonly closedPromise: Promise<Closed>;
  private taken = 0;

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      this.received.push({ data, binary: isBinary });
      this.wake();
    });
    ws.on('error', (err) => {
      this.error = err;
    });
    this.closedPromise = new Promise((resolve) => {
      ws.once('close', (code: number, reason: Buffer) => {
        this.closed = { code, reason: reason.toString('utf8') };
        this.wake();
        resolve(this.closed);
      });
    });
  }

  /** The next message not yet taken. */
  next(timeout = WAIT): Promise<Received> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const message = this.received[this.taken];
        if (message) {
          this.taken++;
          done();
          resolve(message);
        } else if (this.closed) {
          done();
          reject(new Error(`closed (${this.closed.code} ${this.closed.reason}) before a message came`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no message within ${timeout} ms`));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Sends `data` and resolves the echo. */
  async echo(data: Buffer | string, options: { binary?: boolean } = {}): Promise<Received> {
    this.ws.send(data, { binary: options.binary ?? typeof data !== 'string' });
    return this.next();
  }

  /** Resolves the close code once the connection is closed; rejects after `timeout` ms. */
  async waitClosed(timeout = WAIT): Promise<Closed> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`WebSocket still open after ${timeout} ms`)), timeout);
    });
    try {
      return await Promise.race([this.closedPromise, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** `127.0.0.1:<local port>` of the TCP connection, as wsd logs `peer` (set once open). */
  peer = '';

  private wake(): void {
    for (const check of [...this.waiters]) check();
  }
}

/** Thrown by {@link openWs} when the server answered the upgrade with another status. */
export class RefusedError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/**
 * Opens a WebSocket to `url`. Rejects with {@link RefusedError} (with `status`) when the
 * server answered the upgrade with an HTTP status, or with the socket error otherwise.
 * The client is terminated at teardown.
 */
export function openWs(
  t: { teardown(fn: () => void): void },
  url: string,
  options: ClientOptions = {},
): Promise<WsClient> {
  const ws = new WebSocket(url, { handshakeTimeout: WAIT, ...options });
  const client = new WsClient(ws);
  t.teardown(() => ws.terminate());
  return new Promise((resolve, reject) => {
    ws.once('open', () => {
      ws.off('unexpected-response', onResponse);
      // `_socket` is ws's own field: the local port names this client in wsd's log lines.
      const socket = (ws as unknown as { _socket?: { localPort?: number } })._socket;
      client.peer = `127.0.0.1:${socket?.localPort ?? 0}`;
      resolve(client);
    });
    ws.once('error', (err) => reject(err));
    function onResponse(req: import('node:http').ClientRequest, res: import('node:http').IncomingMessage): void {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        req.destroy();
        reject(new RefusedError(status, `HTTP ${status}: ${Buffer.concat(chunks).toString('utf8').trim()}`));
      });
      res.on('error', () => reject(new RefusedError(status, `HTTP ${status}`)));
    }
    ws.on('unexpected-response', onResponse);
  });
}

/** Opens a WebSocket that must be refused; resolves the status and the response body. */
export async function refusedStatus(
  t: { teardown(fn: () => void): void },
  url: string,
  options: ClientOptions = {},
): Promise<RefusedError> {
  try {
    await openWs(t, url, options);
  } catch (err) {
    if (err instanceof RefusedError) return err;
    throw err;
  }
  throw new Error(`${url} was not refused`);
}

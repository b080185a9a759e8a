/**
 * A raw TCP client for the WebSocket tests that need what no WebSocket library sends:
 * malformed requests, unnormalised paths, unmasked or hand-fragmented frames, a peer that
 * never answers pings. Frames are built and parsed here (RFC 6455 §5.2).
 */
import net from 'node:net';
import { once } from 'node:events';
import { WAIT } from './ws-procs.js';

/** RFC 6455 §5.2 opcodes. */
export const Opcode = {
  CONTINUATION: 0x0,
  TEXT: 0x1,
  BINARY: 0x2,
  CLOSE: 0x8,
  PING: 0x9,
  PONG: 0xa,
} as const;

/** The key from RFC 6455 §1.3's example: 16 bytes, base64. */
export const SAMPLE_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

/** An opening handshake request for `path` (raw: sent as given); `headers` override or remove (null). */
export function upgradeRequest(path: string, headers: Record<string, string | null> = {}): string {
  const all: Record<string, string | null> = {
    Host: '127.0.0.1',
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': SAMPLE_KEY,
    'Sec-WebSocket-Version': '13',
    ...headers,
  };
  const lines = Object.entries(all)
    .filter((entry): entry is [string, string] => entry[1] !== null)
    .map(([name, value]) => `${name}: ${value}\r\n`);
  return `GET ${path} HTTP/1.1\r\n${lines.join('')}\r\n`;
}

export interface FrameOptions {
  fin?: boolean;
  /** Mask the payload (clients must: RFC 6455 §5.3). Default true. */
  mask?: boolean;
}

/** Encodes one frame. */
export function encodeWsFrame(opcode: number, payload: Buffer, { fin = true, mask = true }: FrameOptions = {}): Buffer {
  const length = payload.length;
  const extended = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const header = Buffer.alloc(2 + extended + (mask ? 4 : 0));
  header[0] = (fin ? 0x80 : 0) | opcode;
  const lengthCode = length < 126 ? length : length < 65536 ? 126 : 127;
  header[1] = (mask ? 0x80 : 0) | lengthCode;
  if (extended === 2) header.writeUInt16BE(length, 2);
  if (extended === 8) header.writeBigUInt64BE(BigInt(length), 2);
  if (!mask) return Buffer.concat([header, payload]);
  const key = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);
  key.copy(header, 2 + extended);
  const masked = Buffer.alloc(length);
  for (let i = 0; i < length; i++) masked[i] = payload[i]! ^ key[i & 3]!;
  return Buffer.concat([header, masked]);
}

/** A frame as received. */
export interface WsFrame {
  fin: boolean;
  opcode: number;
  masked: boolean;
  payload: Buffer;
}

/** Parses one frame at the start of `buffer`: the frame and its size, or null when incomplete. */
export function decodeWsFrame(buffer: Buffer): { frame: WsFrame; size: number } | null {
  if (buffer.length < 2) return null;
  const first = buffer[0]!;
  const second = buffer[1]!;
  let length = second & 0x7f;
  let offset = 2;
  if (length === 126) {
    if (buffer.length < 4) return null;
    length = buffer.readUInt16BE(2);
    offset = 4;
  } else if (length === 127) {
    if (buffer.length < 10) return null;
    length = Number(buffer.readBigUInt64BE(2));
    offset = 10;
  }
  const masked = (second & 0x80) !== 0;
  const keyOffset = offset;
  if (masked) offset += 4;
  if (buffer.length < offset + length) return null;
  let payload = Buffer.from(buffer.subarray(offset, offset + length));
  if (masked) {
    const key = buffer.subarray(keyOffset, keyOffset + 4);
    payload = Buffer.from(payload.map((b, i) => b ^ key[i & 3]!));
  }
  return { frame: { fin: (first & 0x80) !== 0, opcode: first & 0x0f, masked, payload }, size: offset + length };
}

/** The status code and reason of a close frame's payload (1005 when it has none). */
export function closeCodeOf(frame: WsFrame): { code: number; reason: string } {
  if (frame.payload.length < 2) return { code: 1005, reason: '' };
  return { code: frame.payload.readUInt16BE(0), reason: frame.payload.subarray(2).toString('utf8') };
}

/** A parsed HTTP response head. */
export interface ResponseHead {
  status: number;
  statusLine: string;
  headers: Record<string, string>;
}

/** A TCP client that buffers what it receives and reads it as HTTP, then as frames. */
export class RawClient {
  readonly socket: net.Socket;
  private buffer = Buffer.alloc(0);
  private readonly waiters = new Set<() => void>();
  /** Set once the peer ended or the socket closed. */
  ended = false;
  closed = false;
  error: Error | null = null;
  private readonly closedPromise: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    // allowHalfOpen is off: the peer's FIN ends our side too, then 'close' comes.
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', (err) => {
      this.error = err;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Connects to 127.0.0.1:`port`. */
  static async connect(port: number): Promise<RawClient> {
    const socket = net.connect({ host: '127.0.0.1', port });
    const client = new RawClient(socket);
    await once(socket, 'connect');
    client.localPort = socket.localPort!;
    return client;
  }

  /** The local port (kept: a closed socket no longer knows it). */
  localPort = 0;

  /** `host:port` of this end, as wsd logs it under `peer`. */
  get peer(): string {
    return `127.0.0.1:${this.localPort}`;
  }

  /** Bytes received and not yet consumed. */
  get pending(): Buffer {
    return this.buffer;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    for (const check of [...this.waiters]) check();
  }

  /** Waits until `take` returns a value from the buffered bytes (it consumes what it read). */
  private waitUntil<T>(take: () => T | null, what: string, timeout = WAIT): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        let value: T | null;
        try {
          value = take();
        } catch (err) {
          done();
          reject(err as Error);
          return;
        }
        if (value !== null) {
          done();
          resolve(value);
        } else if (this.closed || this.ended) {
          done();
          reject(new Error(`connection ended before ${what}; unread: ${JSON.stringify(this.buffer.toString('latin1'))}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${what} within ${timeout} ms; unread: ${JSON.stringify(this.buffer.toString('latin1'))}`));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Reads an HTTP response head (the body, if any, stays buffered). */
  readHead(timeout = WAIT): Promise<ResponseHead> {
    return this.waitUntil(
      () => {
        const end = this.buffer.indexOf('\r\n\r\n');
        if (end === -1) return null;
        const text = this.buffer.subarray(0, end).toString('latin1');
        this.buffer = this.buffer.subarray(end + 4);
        const [statusLine = '', ...rest] = text.split('\r\n');
        const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
        if (!match) throw new Error(`not an HTTP status line: ${JSON.stringify(statusLine)}`);
        const headers: Record<string, string> = {};
        for (const line of rest) {
          const colon = line.indexOf(':');
          if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
        }
        return { status: Number(match[1]), statusLine, headers };
      },
      'HTTP response head',
      timeout,
    );
  }

  /** Reads `length` bytes (an HTTP body of known length). */
  readBytes(length: number, timeout = WAIT): Promise<Buffer> {
    return this.waitUntil(
      () => {
        if (this.buffer.length < length) return null;
        const bytes = this.buffer.subarray(0, length);
        this.buffer = this.buffer.subarray(length);
        return bytes;
      },
      `${length} bytes`,
      timeout,
    );
  }

  /** Reads the next WebSocket frame. */
  readFrame(timeout = WAIT): Promise<WsFrame> {
    return this.waitUntil(
      () => {
        const decoded = decodeWsFrame(this.buffer);
        if (!decoded) return null;
        this.buffer = this.buffer.subarray(decoded.size);
        return decoded.frame;
      },
      'WebSocket frame',
      timeout,
    );
  }

  /** Reads frames until a close frame, skipping pings (answered when `answerPings`), and returns it. */
  async readClose(timeout = WAIT, answerPings = false): Promise<WsFrame> {
    const deadline = performance.now() + timeout;
    for (let i = 0; i < 1000; i++) {
      const frame = await this.readFrame(Math.max(1, deadline - performance.now()));
      if (frame.opcode === Opcode.CLOSE) return frame;
      if (frame.opcode === Opcode.PING && answerPings) this.write(encodeWsFrame(Opcode.PONG, frame.payload));
    }
    throw new Error('no close frame among the first 1000 frames');
  }

  /** Resolves once the socket is closed (by the peer, or destroyed); rejects after `timeout` ms. */
  async waitClosed(timeout = WAIT): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`connection still open after ${timeout} ms`)), timeout);
    });
    try {
      await Promise.race([this.closedPromise, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Sends an opening handshake for `path` and reads the response head; for a 101 the
   * client is ready for frames.
   */
  async upgrade(path: string, headers: Record<string, string | null> = {}): Promise<ResponseHead> {
    this.write(upgradeRequest(path, headers));
    return this.readHead();
  }
}

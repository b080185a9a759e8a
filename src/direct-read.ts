/**
 * Reading a socket straight into a buffer of its own (net's documented `onread` option),
 * for a service socket whose bytes are written on at once to a byte socket. It skips the
 * Readable path per read (a Buffer object, push, 'data', nextTick): the largest CPU saving
 * measured for Node gateways (PERFORMANCE.md "What helped").
 *
 * Correctness: Node asks for the next read's buffer right after each read, so every
 * socket holds its own buffer (a buffer shared between sockets was overwritten under
 * pending writes: caught by a test). When the write that took a read's bytes did not
 * complete at once (the destination still holds bytes), that write keeps the buffer and
 * the socket gets a new one: a buffer is never read into while a write from it is pending.
 *
 * Cost: one {@link DIRECT_READ_SIZE} buffer per connection while it is open (returned to a
 * small pool when it closes), where the Readable path holds none while idle. Gateways
 * therefore make it an option (`directRead`), off by default.
 *
 * A consumer that copies every byte it keeps before returning (wsd's client endpoint
 * builds each WebSocket frame in a buffer of its own) needs none of that: such readers
 * share one read buffer, process-wide ({@link DirectReader.copying}), so reads cost no
 * allocation and an idle connection holds no buffer.
 */
import type net from 'node:net';

/** Size of a read (bytes): at least the largest frame plus header (PERFORMANCE.md). */
export const DIRECT_READ_SIZE = 128 * 1024;

/** Released buffers kept for new connections (connection churn: PERFORMANCE.md). */
const POOL_LIMIT = 64;
const pool: Buffer[] = [];

/** The read buffer of every copying reader: each read is consumed before the next one starts. */
let sharedBuffer: Buffer | null = null;

/** Where a reader delivers: called synchronously for each read. */
export interface ReadConsumer {
  received(chunk: Buffer): void;
}

/** Reads of one socket, delivered synchronously to a consumer attached later. */
export class DirectReader {
  /** Pass as `onread` to net.connect / net.Socket. */
  readonly onread: { buffer: Buffer | (() => Buffer); callback: (nread: number, buf: Buffer) => boolean };
  private buffer: Buffer | null = null;
  /** Where the bytes go; null until the switch starts (bytes are then kept as copies). */
  private consumer: ReadConsumer | null = null;
  /** The socket the consumer writes the bytes to; while it holds bytes after a read, the buffer is left to it. */
  private sink: net.Socket | null = null;
  /** Copies of what was read before the consumer was attached. */
  private early: Buffer[] | null = null;
  private readonly shared: boolean;

  /**
   * A reader into the one shared buffer: its consumer must copy what it keeps of a chunk
   * before returning (the next read, of any socket, overwrites it).
   */
  static copying(): DirectReader {
    return new DirectReader(true);
  }

  constructor(shared = false) {
    this.shared = shared;
    if (shared) {
      this.onread = {
        buffer: (sharedBuffer ??= Buffer.allocUnsafe(DIRECT_READ_SIZE)),
        callback: (nread: number, buf: Buffer) => {
          const chunk = buf.subarray(0, nread);
          if (this.consumer === null) (this.early ??= []).push(Buffer.from(chunk));
          else this.consumer.received(chunk);
          return true;
        },
      };
      return;
    }
    this.onread = {
      buffer: () => (this.buffer ??= pool.pop() ?? Buffer.allocUnsafe(DIRECT_READ_SIZE)),
      callback: (nread: number, buf: Buffer) => {
        const chunk = buf.subarray(0, nread);
        if (this.consumer === null) {
          (this.early ??= []).push(Buffer.from(chunk));
          return true;
        }
        this.consumer.received(chunk);
        // A pending write references the buffer: the next read gets another one.
        if (this.sink === null || this.sink.writableLength > 0) this.buffer = null;
        return true;
      },
    };
  }

  /**
   * Starts delivering to `consumer`, which writes what it keeps to `sink` (or anything else
   * with `sink` null: the buffer is then never reused after a read).
   */
  attach(consumer: ReadConsumer, sink: net.Socket | null): void {
    this.consumer = consumer;
    this.sink = sink;
    const early = this.early;
    this.early = null;
    for (const chunk of early ?? []) consumer.received(chunk);
  }

  /** Call once the socket is closed: its buffer goes back to the pool. */
  release(): void {
    if (this.shared) return;
    const idle = this.buffer !== null && (this.sink === null || this.sink.writableLength === 0);
    if (idle && pool.length < POOL_LIMIT) pool.push(this.buffer!);
    this.buffer = null;
  }
}

/**
 * Reading a socket straight into one process-wide buffer (net's documented `onread`
 * option), for a service socket whose bytes are written on at once to a byte socket.
 * It skips the whole Readable path per read (a Buffer, push, 'data', nextTick), the
 * largest CPU saving measured for Node gateways (PERFORMANCE.md "What helped").
 *
 * The buffer is shared by every such socket of the process: a read's bytes are passed on
 * synchronously, and when the write that took them did not complete at once (the
 * destination still holds bytes), that write keeps the buffer and later reads get a new
 * one. So no buffer is ever read into while a write from it is pending (the trap that
 * corrupted streams in the prototypes), and idle connections hold no read buffer at all.
 */
import type net from 'node:net';

/** Size of a read (bytes): larger than the largest frame plus header (PERFORMANCE.md). */
export const DIRECT_READ_SIZE = 128 * 1024;

let shared = Buffer.allocUnsafe(DIRECT_READ_SIZE);

function sharedBuffer(): Buffer {
  return shared;
}

/** Reads of one socket, delivered synchronously to a consumer attached later. */
export class DirectReader {
  /** Pass as `onread` to net.connect / net.Socket. */
  readonly onread: { buffer: () => Buffer; callback: (nread: number, buf: Buffer) => boolean };
  /** Where the bytes go; null until the switch starts (bytes are then kept as copies). */
  private consumer: ((chunk: Buffer) => void) | null = null;
  /** The socket the consumer writes the bytes to; when it still holds bytes after the call, the buffer is left to it. */
  private sink: net.Socket | null = null;
  private early: Buffer[] = [];

  constructor() {
    this.onread = {
      buffer: sharedBuffer,
      callback: (nread: number, buf: Buffer) => {
        const chunk = buf.subarray(0, nread);
        if (this.consumer === null) {
          this.early.push(Buffer.from(chunk));
          return true;
        }
        this.consumer(chunk);
        if (this.sink === null || this.sink.writableLength > 0) shared = Buffer.allocUnsafe(DIRECT_READ_SIZE);
        return true;
      },
    };
  }

  /**
   * Starts delivering to `consumer`, which writes what it keeps to `sink` (or anything else
   * with `sink` null: the buffer is then never reused after a read).
   */
  attach(consumer: (chunk: Buffer) => void, sink: net.Socket | null): void {
    this.consumer = consumer;
    this.sink = sink;
    const early = this.early;
    this.early = [];
    for (const chunk of early) consumer(chunk);
  }
}

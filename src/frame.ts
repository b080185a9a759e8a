/**
 * libipc framing: a 4-byte big-endian unsigned payload length, then the payload
 * (PROTOCOL.md §1). No type, version or other header.
 *
 * Two parsers live here:
 * - {@link FrameDecoder} cuts a byte stream into payloads (services, WebSocket legs).
 * - {@link FrameTracker} only follows frame boundaries in a byte stream that is forwarded
 *   untouched (TCP/TLS legs of a switch): no copy, just counting.
 * Neither imports net: they take bytes and give bytes.
 */
import { ErrorCode, IpcError, ipcError } from './errors.js';

/** Bytes of the length header. */
export const HEADER_SIZE = 4;

/**
 * The original's largest payload: its 100,000-byte message buffer minus the header,
 * minus the 4 bytes it keeps aside (PROTOCOL.md §1: 99,992 is the largest it accepts).
 */
export const DEFAULT_MAX_PAYLOAD = 99_992;

/** Returns a new buffer holding the frame of `payload` (header then payload). */
export function encodeFrame(payload: Uint8Array | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const frame = Buffer.allocUnsafe(HEADER_SIZE + body.length);
  frame.writeUInt32BE(body.length, 0);
  frame.set(body, HEADER_SIZE);
  return frame;
}

/** Returns the 4-byte header for a payload of `length` bytes. */
export function encodeHeader(length: number): Buffer {
  const header = Buffer.allocUnsafe(HEADER_SIZE);
  header.writeUInt32BE(length, 0);
  return header;
}

function tooLarge(length: number, maxPayload: number): IpcError {
  return ipcError(
    ErrorCode.PAYLOAD_TOO_LARGE,
    `frame length ${length} exceeds the limit of ${maxPayload} bytes`,
  );
}

function truncated(what: string): IpcError {
  return ipcError(ErrorCode.TRUNCATED_FRAME, `stream ended inside a frame (${what})`);
}

const GET_LENGTH = 0;
const GET_PAYLOAD = 1;

/**
 * Streaming decoder: feed it chunks as they arrive, get whole payloads back.
 * Frames may be split anywhere across chunks and several may share one chunk.
 * The length is checked against `maxPayload` as soon as the header is complete,
 * before any payload byte is buffered.
 */
export class FrameDecoder {
  readonly maxPayload: number;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private state = GET_LENGTH;
  private payloadLength = 0;
  private failed: IpcError | null = null;
  private failureThrown = false;

  /** @param maxPayload largest accepted payload in bytes (default 99,992). */
  constructor(maxPayload = DEFAULT_MAX_PAYLOAD) {
    this.maxPayload = maxPayload;
  }

  /** Bytes held back waiting for the rest of a frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /** The error that stopped decoding, if any (see {@link push}). */
  get error(): IpcError | null {
    return this.failed;
  }

  /**
   * Adds a chunk and returns every payload it completes, in order. A payload is a view
   * into the chunk when it sits in one chunk, a copy when it spans several.
   * When a header over the limit follows complete frames in the same chunk, those frames
   * are returned and {@link error} is set; the next call throws.
   * @throws IpcError `IPC_ERR_PAYLOAD_TOO_LARGE`; the decoder stays failed afterwards.
   */
  push(chunk: Buffer): Buffer[] {
    if (this.failed) {
      this.failureThrown = true;
      throw this.failed;
    }
    const out: Buffer[] = [];
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    for (;;) {
      if (this.state === GET_LENGTH) {
        if (this.buffered < HEADER_SIZE) break;
        // Unsigned read: lengths of 2^31 and more must not slip under the limit.
        const length = this.consume(HEADER_SIZE).readUInt32BE(0);
        if (length > this.maxPayload) {
          this.failed = tooLarge(length, this.maxPayload);
          this.chunks = [];
          this.buffered = 0;
          if (out.length > 0) return out;
          this.failureThrown = true;
          throw this.failed;
        }
        this.payloadLength = length;
        this.state = GET_PAYLOAD;
      }
      if (this.buffered < this.payloadLength) break;
      out.push(this.consume(this.payloadLength));
      this.state = GET_LENGTH;
    }
    return out;
  }

  /**
   * Gives back the bytes read but not yet returned as payloads (a partial frame, header
   * included), and resets the decoder: for handing a stream over to something else.
   */
  takeBuffered(): Buffer[] {
    const out = this.state === GET_PAYLOAD ? [encodeHeader(this.payloadLength), ...this.chunks] : this.chunks;
    this.chunks = [];
    this.buffered = 0;
    this.state = GET_LENGTH;
    this.payloadLength = 0;
    return out;
  }

  /**
   * Call at end of stream.
   * @throws IpcError `IPC_ERR_TRUNCATED_FRAME` when a frame was started but not finished;
   *   the limit error of {@link push} if it was only reported through {@link error}.
   */
  end(): void {
    if (this.failed) {
      if (this.failureThrown) return;
      this.failureThrown = true;
      throw this.failed;
    }
    if (this.state === GET_PAYLOAD) {
      throw truncated(`${this.buffered} of ${this.payloadLength} payload bytes`);
    }
    if (this.buffered > 0) throw truncated(`${this.buffered} of ${HEADER_SIZE} header bytes`);
  }

  /** Takes `n` buffered bytes; a view when they sit in the first chunk, else a copy. */
  private consume(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (n === 0 || first === undefined) return Buffer.alloc(0);
    if (n === first.length) {
      this.chunks.shift();
      return first;
    }
    if (n < first.length) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let offset = 0;
    while (offset < n) {
      const chunk = this.chunks[0]!;
      const take = Math.min(chunk.length, n - offset);
      chunk.copy(out, offset, 0, take);
      offset += take;
      if (take === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(take);
    }
    return out;
  }
}

/**
 * Follows frame boundaries in a byte stream that is forwarded unchanged, without copying
 * payloads: it keeps at most 3 header bytes aside across chunks and counts the payload
 * bytes still to pass. Used by byte legs of a switch to enforce maxPayload and count
 * messages at no measurable cost (PERFORMANCE.md).
 */
export class FrameTracker {
  readonly maxPayload: number;
  /** Complete frames seen so far. */
  frames = 0;
  /** When {@link track} fails: the error, and the chunk offset where the bad header starts. */
  error: IpcError | null = null;
  errorOffset = 0;
  private headerHave = 0;
  private headerValue = 0;
  private payloadLeft = 0;

  constructor(maxPayload = DEFAULT_MAX_PAYLOAD) {
    this.maxPayload = maxPayload;
  }

  /** True when the stream stopped exactly at a frame boundary. */
  get atBoundary(): boolean {
    return this.headerHave === 0 && this.payloadLeft === 0;
  }

  /**
   * Advances over `chunk`. Returns true when every byte of it may be forwarded; false
   * when a header announced more than maxPayload: then {@link error} is set and
   * `chunk.subarray(0, errorOffset)` is the part made of acceptable bytes.
   */
  track(chunk: Buffer): boolean {
    let pos = 0;
    const end = chunk.length;
    while (pos < end) {
      if (this.payloadLeft > 0) {
        const step = Math.min(this.payloadLeft, end - pos);
        this.payloadLeft -= step;
        pos += step;
        if (this.payloadLeft === 0) this.frames++;
        continue;
      }
      // Reading a header, possibly continued from the previous chunk.
      const headerStart = pos - this.headerHave;
      // `* 256 + byte` instead of `<< 8`: a signed shift would turn 2^31+ negative.
      while (this.headerHave < HEADER_SIZE && pos < end) {
        this.headerValue = this.headerValue * 256 + chunk[pos]!;
        this.headerHave++;
        pos++;
      }
      if (this.headerHave < HEADER_SIZE) break;
      const length = this.headerValue;
      this.headerHave = 0;
      this.headerValue = 0;
      if (length > this.maxPayload) {
        this.error = tooLarge(length, this.maxPayload);
        this.errorOffset = Math.max(0, headerStart);
        return false;
      }
      if (length === 0) this.frames++;
      else this.payloadLeft = length;
    }
    return true;
  }

  /** The error to report when the stream ends here, or null at a frame boundary. */
  endError(): IpcError | null {
    if (this.payloadLeft > 0) return truncated(`${this.payloadLeft} payload bytes missing`);
    if (this.headerHave > 0) return truncated(`${this.headerHave} of ${HEADER_SIZE} header bytes`);
    return null;
  }
}

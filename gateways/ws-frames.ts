/**
 * RFC 6455 frames for the server side of a switched WebSocket, after ws's opening
 * handshake (docs/architecture.md "wsd's frame path" says why this is not ws's own).
 *
 * {@link WsFrameParser} reads what a client sends: masked frames (§5.3), control frames
 * (ping, pong, close with its code and UTF-8 reason: §5.5), fragmented messages (§5.4),
 * UTF-8 validation of text messages (§8.1), the payload limit on whole messages. Each
 * complete data message comes out as a libipc frame (4-byte length, then the payload):
 * the payload is unmasked straight into it, the one copy per message.
 * Violations carry ws's error codes and messages (`WS_ERR_*`, docs/errors.md), and the
 * close code to send (1002, 1007, 1009), so logs read as they did with ws's receiver.
 *
 * The writers build the server's unmasked frames.
 */
import { constants as bufferConstants, isUtf8 } from 'node:buffer';
import { createRequire } from 'node:module';
import { HEADER_SIZE } from '../src/frame.js';

/** The largest payload a libipc frame built in one Buffer can carry here. */
export const MAX_MESSAGE = bufferConstants.MAX_LENGTH - HEADER_SIZE - 10;

/** RFC 6455 §5.2 opcodes. */
export const WsOpcode = {
  CONTINUATION: 0x0,
  TEXT: 0x1,
  BINARY: 0x2,
  CLOSE: 0x8,
  PING: 0x9,
  PONG: 0xa,
} as const;

/** The close code reported for a close frame without a code (§7.1.5). */
export const NO_STATUS_RECEIVED = 1005;

/** A protocol violation by the peer: ws's error message and `code`, and the close code to answer with. */
export class WsFrameError extends Error {
  readonly code: string;
  readonly closeCode: number;
  constructor(message: string, code: string, closeCode: number) {
    super(message);
    this.name = 'WsFrameError';
    this.code = code;
    this.closeCode = closeCode;
  }
}

function violation(message: string, code: string, closeCode = 1002): WsFrameError {
  return new WsFrameError(`Invalid WebSocket frame: ${message}`, code, closeCode);
}

/** §7.4: codes a peer may send in a close frame (ws's isValidStatusCode). */
export function isValidCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

/** What the parser hands over, synchronously, while it reads a chunk. */
export interface WsFrameSink {
  /** A complete data message as a libipc frame (length header, then the payload). */
  onMessage(frame: Buffer): void;
  onPing(payload: Buffer): void;
  onPong(payload: Buffer): void;
  /** A close frame: its code ({@link NO_STATUS_RECEIVED} when it had none) and reason. */
  onClose(code: number, reason: Buffer): void;
}

// bufferutil (an optional dependency) unmasks long payloads faster than a JS loop; ws's
// own switch, WS_NO_BUFFER_UTIL, turns it off here too.
type MaskFn = (source: Buffer, mask: Buffer, output: Buffer, offset: number, length: number) => void;
const nativeMask: MaskFn | null = (() => {
  if (process.env['WS_NO_BUFFER_UTIL']) return null;
  try {
    return (createRequire(import.meta.url)('bufferutil') as { mask: MaskFn }).mask;
  } catch {
    return null;
  }
})();
/** Below this the JS loop is cheaper than the call into the addon (ws uses 48). */
const NATIVE_MASK_MIN = 48;
/** The mask rotated to a payload offset, for the addon: used synchronously, so one is enough. */
const rotatedMask = Buffer.alloc(4);

const HEADER = 0;
const DATA = 1;
/** A close frame was read, or a violation: nothing more is read. */
const DONE = 2;

/** The longest frame header: 2 bytes, a 64-bit length, the mask. */
const MAX_HEADER = 14;

/**
 * Reads client frames (see the module comment). Holds no buffer between messages: a
 * header split across reads is kept in a few bytes, a message in the making in its frame.
 */
export class WsFrameParser {
  private readonly maxPayload: number;
  private state = HEADER;
  /** Bytes of a header that a read cut short. */
  private partial: Buffer | null = null;
  private fin = false;
  private opcode = 0;
  /** The opcode of a fragmented message in progress, else 0. */
  private fragmented = 0;
  /** Payload bytes of the current message so far (its frames' lengths). */
  private messageLength = 0;
  private mask0 = 0;
  private mask1 = 0;
  private mask2 = 0;
  private mask3 = 0;
  /** Where the current frame's payload goes, the next byte's offset in it, the first payload byte's. */
  private target: Buffer | null = null;
  private targetPos = 0;
  private payloadStart = 0;
  /** Payload bytes of the current frame still to read, and read so far (the mask's phase). */
  private payloadLeft = 0;
  private payloadDone = 0;
  /** The current frame is unmasked in the chunk it came in. */
  private targetInPlace = false;
  /** Fragments of a message in progress (unmasked payloads), joined at its last frame. */
  private fragments: Buffer[] | null = null;
  /** Whether the chunks given to push() are the parser's to change (see chooseTarget). */
  private readonly inPlace: boolean;

  /**
   * @param maxPayload largest message (all its fragments) in bytes: more is a 1009 violation.
   * @param inPlace the chunks given to {@link push} are the parser's to change (a socket's
   *   reads): messages are unmasked in them. Otherwise chunks are only read.
   */
  constructor(maxPayload: number, inPlace = false) {
    // A Buffer holds at most MAX_LENGTH bytes (2^32 on Node 20): a larger message (header
    // included) is refused as too large, never allocated (allocUnsafe would throw).
    this.maxPayload = Math.min(maxPayload, MAX_MESSAGE);
    this.inPlace = inPlace;
  }

  /** True once a close frame or a violation ended the input. */
  get done(): boolean {
    return this.state === DONE;
  }

  /**
   * Reads `chunk`, handing complete messages and control frames to `sink` as they
   * complete. Returns the violation that stopped reading (after what came before it was
   * handed over), or null. Nothing of `chunk` is kept after the call, unless it is the
   * parser's to change (`inPlace`): then a message may be a view into it.
   */
  push(chunk: Buffer, sink: WsFrameSink): WsFrameError | null {
    let pos = 0;
    const end = chunk.length;
    while (pos < end && this.state !== DONE) {
      if (this.state === HEADER) {
        let source = chunk;
        let at = pos;
        const kept = this.partial;
        if (kept !== null) {
          source = Buffer.concat([kept, chunk.subarray(pos, pos + Math.min(MAX_HEADER - kept.length, end - pos))]);
          at = 0;
        }
        const read = this.readHeader(source, at);
        if (read instanceof WsFrameError) return this.fail(read);
        if (read === 0) {
          // Incomplete: every byte there was is kept (a header is at most 14 bytes).
          this.partial = kept !== null ? source : Buffer.from(chunk.subarray(pos));
          return null;
        }
        pos += kept !== null ? read - kept.length : read;
        this.partial = null;
        this.chooseTarget(chunk, pos, kept === null && end - pos >= this.payloadLeft);
        if (this.payloadLeft === 0) {
          const err = this.frameComplete(sink);
          if (err !== null) return this.fail(err);
        }
        continue;
      }
      const n = Math.min(this.payloadLeft, end - pos);
      this.unmask(chunk, pos, n);
      pos += n;
      this.payloadLeft -= n;
      if (this.payloadLeft === 0) {
        const err = this.frameComplete(sink);
        if (err !== null) return this.fail(err);
      }
    }
    return null;
  }

  private fail(err: WsFrameError): WsFrameError {
    this.state = DONE;
    this.target = null;
    this.targetInPlace = false;
    this.fragments = null;
    this.partial = null;
    return err;
  }

  /**
   * Reads a frame header at `at`: its length in bytes, 0 when `source` ends first, or the
   * violation. The checks and their order are ws's receiver's (RSV, opcode, control frame
   * rules, mask, length); nothing changes until the whole header is there.
   */
  private readHeader(source: Buffer, at: number): number | WsFrameError {
    const avail = source.length - at;
    if (avail < 2) return 0;
    const b0 = source[at]!;
    const b1 = source[at + 1]!;
    if ((b0 & 0x30) !== 0) return violation('RSV2 and RSV3 must be clear', 'WS_ERR_UNEXPECTED_RSV_2_3');
    // No extension is negotiated (permessage-deflate is off): RSV1 is never set.
    if ((b0 & 0x40) !== 0) return violation('RSV1 must be clear', 'WS_ERR_UNEXPECTED_RSV_1');
    const fin = (b0 & 0x80) !== 0;
    let opcode = b0 & 0x0f;
    let length = b1 & 0x7f;
    if (opcode === WsOpcode.CONTINUATION) {
      if (this.fragmented === 0) return violation('invalid opcode 0', 'WS_ERR_INVALID_OPCODE');
      opcode = this.fragmented;
    } else if (opcode === WsOpcode.TEXT || opcode === WsOpcode.BINARY) {
      if (this.fragmented !== 0) return violation(`invalid opcode ${opcode}`, 'WS_ERR_INVALID_OPCODE');
    } else if (opcode >= WsOpcode.CLOSE && opcode <= WsOpcode.PONG) {
      if (!fin) return violation('FIN must be set', 'WS_ERR_EXPECTED_FIN');
      if (length > 125 || (opcode === WsOpcode.CLOSE && length === 1)) {
        return violation(`invalid payload length ${length}`, 'WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH');
      }
    } else {
      return violation(`invalid opcode ${opcode}`, 'WS_ERR_INVALID_OPCODE');
    }
    if ((b1 & 0x80) === 0) return violation('MASK must be set', 'WS_ERR_EXPECTED_MASK');
    let size = 2;
    if (length === 126) {
      if (avail < 4) return 0;
      length = source.readUInt16BE(at + 2);
      size = 4;
    } else if (length === 127) {
      if (avail < 10) return 0;
      const high = source.readUInt32BE(at + 2);
      if (high > 2 ** 21 - 1) {
        return new WsFrameError('Unsupported WebSocket frame: payload length > 2^53 - 1', 'WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH', 1009);
      }
      length = high * 2 ** 32 + source.readUInt32BE(at + 6);
      size = 10;
    }
    // The limit is on whole messages (fragments included), checked before any payload byte.
    if (opcode < WsOpcode.CLOSE && this.messageLength + length > this.maxPayload) {
      return new WsFrameError('Max payload size exceeded', 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH', 1009);
    }
    if (avail < size + 4) return 0;
    this.mask0 = source[at + size]!;
    this.mask1 = source[at + size + 1]!;
    this.mask2 = source[at + size + 2]!;
    this.mask3 = source[at + size + 3]!;
    this.fin = fin;
    this.opcode = opcode;
    this.payloadLeft = length;
    this.payloadDone = 0;
    if (!fin && this.fragmented === 0 && opcode < WsOpcode.CLOSE) this.fragmented = opcode;
    if (opcode < WsOpcode.CLOSE) this.messageLength += length;
    return size + 4;
  }

  /**
   * Where the payload of the frame whose header was just read goes. A whole message in
   * one frame, its header and payload in the chunk at hand (the usual case), is unmasked
   * in place and its libipc header written over the 4 mask bytes just before it: the
   * chunk (a read's own buffer) becomes the frame, no allocation, no copy. Otherwise the
   * payload is unmasked into a buffer of its own: the libipc frame of a message in one
   * frame, or one fragment, or a control frame's payload.
   */
  private chooseTarget(chunk: Buffer, payloadAt: number, inChunk: boolean): void {
    const length = this.payloadLeft;
    const opcode = this.opcode;
    if (opcode >= WsOpcode.CLOSE) {
      this.target = Buffer.allocUnsafe(length);
      this.payloadStart = 0;
    } else if (this.fragmented !== 0) {
      this.target = Buffer.allocUnsafe(length);
      this.payloadStart = 0;
    } else if (inChunk && this.inPlace) {
      this.target = chunk;
      this.payloadStart = payloadAt;
      this.targetInPlace = true;
    } else {
      this.target = Buffer.allocUnsafe(HEADER_SIZE + length);
      this.target.writeUInt32BE(length, 0);
      this.payloadStart = HEADER_SIZE;
    }
    this.targetPos = this.payloadStart;
    this.state = DATA;
  }

  /** Unmasks `n` bytes of `source` from `at` into the current frame's payload. */
  private unmask(source: Buffer, at: number, n: number): void {
    const target = this.target!;
    let pos = this.targetPos;
    let phase = this.payloadDone & 3;
    if (n >= NATIVE_MASK_MIN && nativeMask !== null) {
      const m = [this.mask0, this.mask1, this.mask2, this.mask3];
      for (let i = 0; i < 4; i++) rotatedMask[i] = m[(phase + i) & 3]!;
      nativeMask(source.subarray(at, at + n), rotatedMask, target, pos, n);
    } else {
      const m0 = this.mask0;
      const m1 = this.mask1;
      const m2 = this.mask2;
      const m3 = this.mask3;
      const stop = at + n;
      for (let i = at; i < stop; i++) {
        target[pos++] = source[i]! ^ (phase === 0 ? m0 : phase === 1 ? m1 : phase === 2 ? m2 : m3);
        phase = (phase + 1) & 3;
      }
    }
    this.targetPos += n;
    this.payloadDone += n;
  }

  /** The current frame's payload is complete: hand over what it completes. */
  private frameComplete(sink: WsFrameSink): WsFrameError | null {
    const payload = this.target!;
    this.target = null;
    this.state = HEADER;
    const opcode = this.opcode;
    if (opcode >= WsOpcode.CLOSE) return this.control(opcode, payload, sink);
    if (!this.fin) {
      // An empty fragment adds nothing: kept, a stream of them would grow the list (and
      // the heap) without ever reaching the message limit.
      if (payload.length > 0) (this.fragments ??= []).push(payload);
      return null;
    }
    let frame = payload;
    if (this.targetInPlace) {
      // The libipc header goes over the mask, just before the payload.
      this.targetInPlace = false;
      frame = payload.subarray(this.payloadStart - HEADER_SIZE, this.payloadStart + this.messageLength);
      frame.writeUInt32BE(this.messageLength, 0);
    } else if (this.fragmented !== 0) {
      frame = joinFrame(this.fragments, payload, this.messageLength);
      this.fragments = null;
      this.fragmented = 0;
    }
    this.messageLength = 0;
    if (opcode === WsOpcode.TEXT && !isUtf8(frame.subarray(HEADER_SIZE))) {
      return violation('invalid UTF-8 sequence', 'WS_ERR_INVALID_UTF8', 1007);
    }
    sink.onMessage(frame);
    return null;
  }

  private control(opcode: number, payload: Buffer, sink: WsFrameSink): WsFrameError | null {
    if (opcode === WsOpcode.PING) {
      sink.onPing(payload);
      return null;
    }
    if (opcode === WsOpcode.PONG) {
      sink.onPong(payload);
      return null;
    }
    if (payload.length === 0) {
      this.state = DONE;
      sink.onClose(NO_STATUS_RECEIVED, payload);
      return null;
    }
    const code = payload.readUInt16BE(0);
    if (!isValidCloseCode(code)) return violation(`invalid status code ${code}`, 'WS_ERR_INVALID_CLOSE_CODE');
    const reason = payload.subarray(2);
    if (!isUtf8(reason)) return violation('invalid UTF-8 sequence', 'WS_ERR_INVALID_UTF8', 1007);
    this.state = DONE;
    sink.onClose(code, reason);
    return null;
  }
}

/** The libipc frame of a fragmented message: header, then every fragment's payload. */
function joinFrame(fragments: Buffer[] | null, last: Buffer, length: number): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_SIZE + length);
  frame.writeUInt32BE(length, 0);
  let offset = HEADER_SIZE;
  for (const part of fragments ?? []) {
    frame.set(part, offset);
    offset += part.length;
  }
  frame.set(last, offset);
  return frame;
}

/** Bytes of an unmasked server frame header for a payload of `length` bytes. */
export function wsHeaderSize(length: number): number {
  return length < 126 ? 2 : length < 65536 ? 4 : 10;
}

/** Writes an unmasked, final frame header at the start of `frame` (sized by {@link wsHeaderSize}). */
export function writeWsHeader(frame: Buffer, opcode: number, length: number): void {
  frame[0] = 0x80 | opcode;
  if (length < 126) {
    frame[1] = length;
  } else if (length < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    frame.writeUInt32BE(length >>> 0, 6);
  }
}

/** A whole unmasked frame carrying `payload` (control frames: at most 125 bytes). */
export function wsFrame(opcode: number, payload: Uint8Array): Buffer {
  const size = wsHeaderSize(payload.length);
  const frame = Buffer.allocUnsafe(size + payload.length);
  writeWsHeader(frame, opcode, payload.length);
  frame.set(payload, size);
  return frame;
}

/** A close frame: the code and a UTF-8 reason (§5.5.1), or no body for {@link NO_STATUS_RECEIVED}. */
export function wsCloseFrame(code: number, reason: string | Buffer = ''): Buffer {
  if (code === NO_STATUS_RECEIVED) return wsFrame(WsOpcode.CLOSE, Buffer.alloc(0));
  const text = typeof reason === 'string' ? Buffer.from(reason) : reason;
  const body = Buffer.allocUnsafe(2 + Math.min(text.length, 123));
  body.writeUInt16BE(code, 0);
  text.copy(body, 2, 0, body.length - 2);
  return wsFrame(WsOpcode.CLOSE, body);
}

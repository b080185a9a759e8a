/**
 * wsd's client endpoint: a switched WebSocket read and written by our own frame path
 * (gateways/ws-frames.ts) on the socket ws upgraded, without ws's WebSocket, Receiver
 * and Sender (docs/architecture.md "wsd's frame path": CPU per message and idle memory).
 * It behaves as {@link WebSocketEndpoint} over ws did: one message = one libipc frame,
 * the same close codes (1001 service closed or shutdown, 1009 too large, 1011 service
 * failed; 1002/1007/1009 for a client's violation, with ws's error codes), the closing
 * handshake with a grace period, pings answered, backpressure both ways.
 */
import net from 'node:net';
import { isUtf8 } from 'node:buffer';
import { HEADER_SIZE } from '../src/frame.js';
import { Endpoint, Outcome, type Forward, type Switch, type SwitchResult } from '../src/switch.js';
import { ErrorCode, IpcError, ipcError } from '../src/errors.js';
import { CloseCode, closeCodeOf } from './ws-endpoint.js';
import { MAX_MESSAGE, WsFrameParser, WsOpcode, wsCloseFrame, wsFrame, wsHeaderSize, writeWsHeader, type WsFrameError, type WsFrameSink } from './ws-frames.js';
import type { ConnectionInfo } from './lifecycle.js';

/** Time a closing handshake may take before the socket is cut (ms), as with ws. */
const CLOSE_GRACE_MS = 2000;

/** An empty ping: what the liveness sweep sends. */
const PING = wsFrame(WsOpcode.PING, Buffer.alloc(0));

/**
 * Where replies are built when a whole frame is at hand and nothing is queued on the
 * client socket: written at once, the kernel takes the bytes during the write call, and
 * the buffer is free again (a write that leaves bytes pending keeps it: a new one is
 * made). No allocation per reply, and no buffer per connection. Not for TLS sockets:
 * their writes complete later (the record is written after the call), every time.
 */
let scratch: Buffer | null = null;
const SCRATCH_SIZE = 64 * 1024;

/** The parser's sink during {@link WsFrameEndpoint.in}: set for the call, so no closure per connection. */
let forwarding: Forward | null = null;

export class WsFrameEndpoint extends Endpoint implements WsFrameSink {
  readonly socket: net.Socket;
  /** The connection's log fields (shared with its teardown line), for the ping sweep's log. */
  readonly info: ConnectionInfo;
  private readonly parser: WsFrameParser;
  private readonly maxPayload: number;
  private readonly text: boolean;
  /** A plain net.Socket (not TLS, not another stream): its writes may use the scratch buffer. */
  private readonly plain: boolean;
  private received = 0;
  /** Whether the client answered the last ping (the sweep's flag). */
  answered = true;
  /** Paused by backpressure: a paused client cannot be read, pongs included. */
  paused = false;
  /** Set by the gateway: the set of live endpoints the ping sweep walks. */
  sweep: Set<WsFrameEndpoint> | null = null;
  private closeSent = false;
  private closeReceived = false;
  /** The peer broke the protocol, or its input ended: nothing more will be read. */
  private inputOver = false;
  private graceTimer: NodeJS.Timeout | null = null;
  // The service's byte stream, cut into frames: the libipc header so far, then the
  // WebSocket frame being filled (its header first), the payload's offset in it.
  private headerHave = 0;
  private headerValue = 0;
  private outFrame: Buffer | null = null;
  private outPos = 0;
  private outStart = 0;
  private outError: IpcError | null = null;

  constructor(socket: net.Socket, maxPayload: number, text: boolean, info: ConnectionInfo) {
    super('client');
    this.socket = socket;
    this.info = info;
    // A socket's reads are its own buffers, ours to change: messages are unmasked in them
    // (WsFrameParser). Not so for any other stream an application's server might hand over.
    const isSocket = socket instanceof net.Socket;
    this.parser = new WsFrameParser(maxPayload, isSocket);
    this.maxPayload = Math.min(maxPayload, MAX_MESSAGE); // what one Buffer can hold (ws-frames.ts)
    this.text = text;
    this.plain = isSocket && !(socket as { encrypted?: boolean }).encrypted;
  }

  get messagesIn(): number {
    return this.received;
  }

  get peer(): string | undefined {
    return this.info.peer;
  }

  in(chunk: Buffer, forward: Forward): SwitchResult {
    if (this.parser.done) return Outcome.IGNORE;
    forwarding = forward;
    const err = this.parser.push(chunk, this);
    forwarding = null;
    if (err === null) return Outcome.MESSAGE;
    this.protocolError(err);
    return err;
  }

  /** @internal A message from the client, as a libipc frame: on to the service. */
  onMessage(frame: Buffer): void {
    this.received++;
    this.bytesIn += frame.length - HEADER_SIZE;
    forwarding!(frame);
  }

  /** @internal */
  onPing(payload: Buffer): void {
    if (!this.closeSent) this.write(wsFrame(WsOpcode.PONG, payload));
  }

  /** @internal */
  onPong(): void {
    this.answered = true;
  }

  /** @internal The client's close frame: answered with its code (§5.5.1), then our FIN. */
  onClose(code: number, reason: Buffer): void {
    this.closeReceived = true;
    this.inputOver = true;
    if (!this.closeSent) {
      this.closeSent = true;
      this.write(wsCloseFrame(code, reason));
    }
    if (!this.socket.destroyed) this.socket.end();
    this.startGrace();
  }

  /** A violation: the close code that fits, then our FIN (as ws does); the switch is told by the caller. */
  private protocolError(err: WsFrameError): void {
    this.inputOver = true;
    if (!this.closeSent) {
      this.closeSent = true;
      this.write(wsCloseFrame(err.closeCode));
    }
    if (!this.socket.destroyed) this.socket.end();
    this.startGrace();
  }

  private write(frame: Buffer): void {
    if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.write(frame);
  }

  out(bytes: Buffer): SwitchResult {
    if (this.outError !== null) return this.outError;
    let pos = 0;
    const end = bytes.length;
    let messages = 0;
    while (pos < end) {
      let frame = this.outFrame;
      if (frame === null) {
        // `* 256 + byte`: a signed shift would turn lengths of 2^31 and more negative.
        while (this.headerHave < HEADER_SIZE && pos < end) {
          this.headerValue = this.headerValue * 256 + bytes[pos++]!;
          this.headerHave++;
        }
        if (this.headerHave < HEADER_SIZE) break;
        const length = this.headerValue;
        this.headerHave = 0;
        this.headerValue = 0;
        if (length > this.maxPayload) {
          this.outError = ipcError(ErrorCode.PAYLOAD_TOO_LARGE, `frame length ${length} exceeds the limit of ${this.maxPayload} bytes`);
          return this.outError;
        }
        const start = wsHeaderSize(length);
        if (this.plain && end - pos >= length && this.socket.writableLength === 0) {
          // The whole frame is here and the socket holds nothing: built in the scratch buffer.
          const size = start + length;
          let buffer = scratch;
          if (buffer === null || buffer.length < size) buffer = scratch = Buffer.allocUnsafe(Math.max(size, SCRATCH_SIZE));
          const whole = buffer.subarray(0, size);
          bytes.copy(whole, start, pos, pos + length);
          pos += length;
          this.sendMessage(whole, start);
          // Bytes left pending reference the buffer: the next reply gets another one.
          if (this.socket.writableLength > 0) scratch = null;
          messages++;
          continue;
        }
        this.outStart = start;
        frame = this.outFrame = Buffer.allocUnsafe(start + length);
        this.outPos = start;
      }
      // Copied out: `bytes` may be a read buffer that is read into again after this call.
      const n = Math.min(frame.length - this.outPos, end - pos);
      bytes.copy(frame, this.outPos, pos, pos + n);
      pos += n;
      this.outPos += n;
      if (this.outPos === frame.length) {
        this.outFrame = null;
        this.sendMessage(frame, this.outStart);
        messages++;
      }
    }
    return messages === 0 ? Outcome.IGNORE : Outcome.MESSAGE;
  }

  private sendMessage(frame: Buffer, start: number): void {
    const length = frame.length - start;
    const asText = this.text && isUtf8(frame.subarray(start));
    writeWsHeader(frame, asText ? WsOpcode.TEXT : WsOpcode.BINARY, length);
    // After a close frame nothing more may be sent (§5.5.1); only what is sent is counted
    // (a service streaming into a closing connection must not look busy to the idle sweep).
    if (this.closeSent) return;
    this.bytesOut += length;
    this.write(frame);
  }

  endInput(): SwitchResult {
    return Outcome.CLOSING;
  }

  get needsDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    this.paused = false;
    if (!this.inputOver) this.socket.resume();
  }

  /** The liveness sweep's ping. */
  ping(): void {
    if (!this.closeSent) this.write(PING);
  }

  /** Cuts the connection now (a dead peer). */
  terminate(): void {
    this.socket.destroy();
  }

  /** The other side ended cleanly: say so with 1001 (going away). */
  endOutput(): void {
    this.closeWith(CloseCode.GOING_AWAY, 'service closed');
  }

  destroy(err?: Error): void {
    const [code, reason] = closeCodeOf(err, 'service closed');
    this.closeWith(code, reason);
  }

  /** What is queued goes before the close frame: finishing is closing with the code. */
  finish(err?: Error): void {
    this.destroy(err);
  }

  /** Our close frame, then the client's answer (or the grace period) before the TCP close. */
  private closeWith(code: number, reason: string): void {
    if (this.socket.destroyed) return;
    if (!this.closeSent) {
      this.closeSent = true;
      this.write(wsCloseFrame(code, reason));
    }
    // The client's close already came (or it can send nothing more): our FIN follows.
    if (this.closeReceived || this.inputOver) this.socket.end();
    this.startGrace();
  }

  /** A peer that never completes the closing handshake is cut after a grace period. */
  private startGrace(): void {
    if (this.graceTimer !== null || this.socket.destroyed) return;
    const socket = this.socket;
    this.graceTimer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
    this.graceTimer.unref();
  }

  start(owner: Switch): void {
    this.owner = owner;
    const socket = this.socket as BoundSocket;
    socket[kEndpoint] = this;
    socket.on('data', wsOnData);
    socket.on('end', wsOnEnd);
    socket.on('drain', wsOnDrain);
    socket.on('error', wsOnError);
    socket.on('close', wsOnClose);
    this.sweep?.add(this);
    socket.resume();
  }

  /** @internal */
  onData(chunk: Buffer): void {
    this.owner!.input(this, chunk);
  }

  /** @internal */
  onDrain(): void {
    this.owner!.drained(this);
  }

  /** @internal The client's FIN: without a close frame before it, the connection was lost. */
  onEnd(): void {
    this.inputOver = true;
    if (this.socket.destroyed) return;
    this.socket.end();
    // A client that stops reading (a zero window) would keep our end from flushing and
    // the connection, its switch and its service connection, forever.
    this.startGrace();
  }

  /** @internal */
  onSocketClose(): void {
    this.sweep?.delete(this);
    this.sweep = null;
    if (this.graceTimer !== null) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    const owner = this.owner!;
    // A closed WebSocket can take no reply: not a half-close, the switch ends now (the
    // service still gets what was already sent to it).
    if (this.closeReceived) owner.transportClosed(this);
    // No close frame came: the peer reset or cut the connection, maybe mid-frame.
    else owner.fail(this, ipcError(ErrorCode.CONNECTION_LOST, 'client connection lost without a closing handshake'));
  }
}

// Shared listeners (no closures per connection): the socket carries its endpoint.
const kEndpoint = Symbol('wsFrameEndpoint');
type BoundSocket = net.Socket & { [kEndpoint]: WsFrameEndpoint };

function wsOnData(this: BoundSocket, chunk: Buffer): void {
  this[kEndpoint].onData(chunk);
}

function wsOnEnd(this: BoundSocket): void {
  this[kEndpoint].onEnd();
}

function wsOnDrain(this: BoundSocket): void {
  this[kEndpoint].onDrain();
}

function wsOnError(): void {
  // The 'close' that follows reports the loss (as with ws: a socket error is a lost connection).
}

function wsOnClose(this: BoundSocket): void {
  this[kEndpoint].onSocketClose();
}

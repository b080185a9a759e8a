/**
 * A switch endpoint over a ws WebSocket: one WebSocket message is one libipc message. The
 * outbound `ws`/`wss` services use it for the remote gateway (the client side); wsd's own
 * clients are read and written by WsFrameEndpoint (ws-frame-endpoint.ts).
 * `in` frames each received message (binary or text: the payload is the message bytes);
 * `out` cuts the service's byte stream into frames and sends each payload as one message.
 * Close codes tell the client why (RFC 6455 §7.4.1): 1001 when the service closed,
 * 1011 when it failed, 1009 for an oversized message (raised by ws itself and by `out`).
 */
import type net from 'node:net';
import { isUtf8 } from 'node:buffer';
import type { WebSocket } from 'ws';
import { FrameDecoder, encodeFrame } from '../src/frame.js';
import { Endpoint, Outcome, type Forward, type Switch, type SwitchResult } from '../src/switch.js';
import { ErrorCode, IpcError, ipcError } from '../src/errors.js';

/** Close codes used by the gateway. */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
} as const;

/**
 * The close code and reason a WebSocket endpoint sends when its switch ends with `err`
 * (none: the other side closed, said by `closed`): too large -> 1009, shutdown -> 1001,
 * any other failure -> 1011.
 */
export function closeCodeOf(err: Error | undefined, closed: string): [number, string] {
  if (err === undefined) return [CloseCode.GOING_AWAY, closed];
  if (err instanceof IpcError && err.code === ErrorCode.PAYLOAD_TOO_LARGE) return [CloseCode.MESSAGE_TOO_BIG, 'message too big'];
  if (err instanceof IpcError && err.code === ErrorCode.SHUTDOWN) return [CloseCode.GOING_AWAY, 'gateway shutting down'];
  return [CloseCode.INTERNAL_ERROR, 'service failed'];
}

/** The close code ws reports when no close frame was received (RFC 6455 §7.1.5). */
const ABNORMAL_CLOSURE = 1006;

/** Time a closing handshake may take before the socket is cut (ms). */
const CLOSE_GRACE_MS = 2000;

export class WebSocketEndpoint extends Endpoint {
  readonly ws: WebSocket;
  /** The socket under the WebSocket: where write backpressure shows. */
  private readonly socket: net.Socket;
  private readonly decoder: FrameDecoder;
  private readonly text: boolean;
  private received = 0;
  private readonly peerAddress: string | undefined;

  /**
   * @param text send replies as text messages (valid UTF-8 only; others go as binary).
   */
  constructor(ws: WebSocket, socket: net.Socket, maxPayload: number, text: boolean, peer: string | undefined, role = 'client') {
    super(role);
    this.ws = ws;
    this.socket = socket;
    this.decoder = new FrameDecoder(maxPayload);
    this.text = text;
    this.peerAddress = peer;
    // Until the switch starts, messages, an error and a close are kept (a remote may
    // speak, or break the protocol, right after its 101).
    ws.on('message', this.keepEarly);
    ws.on('error', this.keepEarlyError);
    ws.on('close', this.keepEarlyClose);
  }

  private early: Buffer[] = [];
  private earlyError: Error | null = null;
  private earlyClose = false;
  private readonly keepEarly = (data: Buffer) => {
    this.early.push(data);
  };
  private readonly keepEarlyError = (err: Error) => {
    this.earlyError ??= err;
  };
  private readonly keepEarlyClose = () => {
    this.earlyClose = true;
  };

  get messagesIn(): number {
    return this.received;
  }

  get peer(): string | undefined {
    return this.peerAddress;
  }

  in(message: Buffer, forward: Forward): SwitchResult {
    this.received++;
    // One copy into a header+payload buffer: one write to the service per message.
    forward(encodeFrame(message));
    return Outcome.MESSAGE;
  }

  out(bytes: Buffer): SwitchResult {
    let payloads: Buffer[];
    try {
      payloads = this.decoder.push(bytes);
    } catch (err) {
      return err as Error;
    }
    for (const payload of payloads) {
      this.bytesOut += payload.length;
      const asText = this.text && isUtf8(payload);
      this.ws.send(payload, { binary: !asText });
    }
    // Messages before an oversize header were sent above; the error closes the switch.
    if (this.decoder.error) return this.decoder.error;
    return payloads.length === 0 ? Outcome.IGNORE : Outcome.MESSAGE;
  }

  endInput(): SwitchResult {
    return Outcome.CLOSING;
  }

  get needsDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  /** The other side ended cleanly: say so with 1001 (going away). */
  endOutput(): void {
    this.closeWith(CloseCode.GOING_AWAY, this.role === 'client' ? 'service closed' : 'peer closed');
  }

  destroy(err?: Error): void {
    const [code, reason] = closeCodeOf(err, this.role === 'client' ? 'service closed' : 'peer closed');
    this.closeWith(code, reason);
  }

  /** ws sends what is queued before its close frame: finishing is closing with the code. */
  finish(err?: Error): void {
    this.destroy(err);
  }

  private closeWith(code: number, reason: string): void {
    const ws = this.ws;
    if (ws.readyState === ws.CLOSED) return;
    if (ws.readyState === ws.OPEN) ws.close(code, reason);
    // A peer that never answers the close frame is cut after a grace period.
    const timer = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
    timer.unref();
    ws.once('close', () => clearTimeout(timer));
  }

  start(owner: Switch): void {
    this.owner = owner;
    const endpoint = this;
    const ws = this.ws;
    ws.off('message', this.keepEarly);
    ws.off('error', this.keepEarlyError);
    ws.off('close', this.keepEarlyClose);
    const early = this.early;
    this.early = [];
    ws.on('message', function wsOnMessage(data: Buffer) {
      endpoint.bytesIn += data.length;
      owner.input(endpoint, data);
    });
    ws.on('close', function wsOnClose(code: number) {
      // No close frame came (1006): the peer reset or cut the connection, maybe mid-frame.
      if (code === ABNORMAL_CLOSURE) {
        owner.fail(endpoint, ipcError(ErrorCode.CONNECTION_LOST, `${endpoint.role} connection lost without a closing handshake`));
        return;
      }
      // A closed WebSocket can take no reply: not a half-close, the switch ends now (the
      // service still gets what was already sent to it).
      owner.transportClosed(endpoint);
    });
    ws.on('error', function wsOnError(err: Error) {
      // ws has already sent the close code that fits (1002, 1007, 1009) and will close.
      owner.fail(endpoint, err);
    });
    this.socket.on('drain', function wsSocketOnDrain() {
      owner.drained(endpoint);
    });
    for (const data of early) {
      endpoint.bytesIn += data.length;
      owner.input(endpoint, data);
    }
    if (this.earlyError) owner.fail(endpoint, this.earlyError);
    else if (this.earlyClose) owner.transportClosed(endpoint);
  }
}

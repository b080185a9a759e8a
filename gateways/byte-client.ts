/**
 * The life of a byte-stream client (TCP, or TLS once decrypted): the libipc service-name
 * handshake when the client names its target, the service connection, the raw `ok`, and
 * the switch. Shared by tcpd and tlsd.
 *
 * The handshake (PROTOCOL.md §3): the client's first bytes are the raw service name, no
 * frame and no terminator; the gateway answers raw `ok` once connected to the service,
 * or closes without a byte. The original takes its whole first read as the name; we take
 * the first read up to the first NUL byte, which is where a frame header that shares the
 * segment begins (a valid name never holds NUL), and keep those bytes for the service.
 */
import type net from 'node:net';
import { ErrorCode, ipcError } from '../src/errors.js';
import { SocketEndpoint } from '../src/switch.js';
import { DirectReader } from '../src/direct-read.js';
import type { ConnectionInfo, GatewayCore } from './gateway.js';

const OK = Buffer.from('ok');

/**
 * Serves an accepted client socket until it is switched or refused. `deadline` is the
 * `performance.now()` by which every handshake must be over (TLS included, for tlsd).
 */
export function serveByteClient(core: GatewayCore, socket: net.Socket, info: ConnectionInfo, deadline: number): void {
  const { options } = core;
  let settled = false;
  let upstream: net.Socket | null = null;
  let timer: NodeJS.Timeout | null = null;

  const pending = {
    close(reason: string, err?: Error) {
      refuse(err ?? ipcError(ErrorCode.SHUTDOWN, reason));
    },
  };
  const untrack = core.track(pending);

  function finishHandshake(): boolean {
    if (settled) return false;
    settled = true;
    if (timer) clearTimeout(timer);
    socket.off('data', onHandshakeData);
    socket.off('end', onHandshakeEnd);
    socket.off('error', onHandshakeError);
    untrack();
    return true;
  }

  function refuse(err: Error, extra: Record<string, unknown> = {}): void {
    if (!finishHandshake()) return;
    upstream?.destroy();
    // Refusal is a close without a byte: what the original's clients expect.
    socket.destroy();
    core.refuse(info, err, extra);
  }

  function onHandshakeError(err: Error): void {
    refuse(err);
  }

  function onHandshakeEnd(): void {
    refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client closed before naming a service'));
  }

  function onHandshakeData(chunk: Buffer): void {
    socket.pause();
    socket.off('data', onHandshakeData);
    const nul = chunk.indexOf(0);
    const nameBytes = nul === -1 ? chunk : chunk.subarray(0, nul);
    if (nameBytes.length > options.maxNameLength) {
      refuse(ipcError(ErrorCode.INVALID_SERVICE_NAME, `service name longer than ${options.maxNameLength} bytes`));
      return;
    }
    // latin1 keeps one char per byte, so every byte is checked by the validator.
    const requested = nameBytes.toString('latin1');
    const target = core.selectTarget(requested);
    if (target instanceof Error) {
      refuse(target, { service: requested });
      return;
    }
    if (nul !== -1) socket.unshift(chunk.subarray(nul));
    connect(target, true);
  }

  function connect(service: string, answerOk: boolean): void {
    const reader = options.directRead ? new DirectReader() : undefined;
    core.connectTarget(service, reader).then(
      (connected) => {
        upstream = connected;
        if (settled) {
          connected.destroy();
          return;
        }
        if (answerOk) socket.write(OK);
        finishHandshake();
        const client = new SocketEndpoint('client', socket, options.maxPayload);
        core.bridge(info, service, client, core.serviceEndpoint(connected, reader));
      },
      (err: Error) => refuse(err, { service }),
    );
  }

  // Every socket gets an error listener the moment it exists (STYLE.md).
  socket.on('error', onHandshakeError);
  if (options.service !== undefined) {
    // Fixed target: no client handshake to wait for, and a Unix connect completes or
    // fails at once: no timer (per-connection setup is Node's weak spot: PERFORMANCE.md).
    connect(options.service, false);
    return;
  }
  timer = setTimeout(() => {
    refuse(ipcError(ErrorCode.HANDSHAKE_TIMEOUT, `no handshake within ${options.handshakeTimeout} ms`));
  }, Math.max(0, deadline - performance.now()));
  socket.on('data', onHandshakeData);
  socket.on('end', onHandshakeEnd);
}

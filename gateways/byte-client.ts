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
import { Handshake } from './handshake.js';

const OK = Buffer.from('ok');

/**
 * Serves an accepted client socket until it is switched or refused. `deadline` is the
 * `performance.now()` by which every handshake must be over (TLS included, for tlsd).
 */
export function serveByteClient(core: GatewayCore, socket: net.Socket, info: ConnectionInfo, deadline: number): void {
  const { options } = core;
  let upstream: net.Socket | null = null;
  const handshake = new Handshake(core, info, () => {
    upstream?.destroy();
    socket.destroy();
  });
  const refuse = (err: Error, extra?: Record<string, unknown>) => handshake.refuse(err, extra);

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
        if (!handshake.settle()) {
          connected.destroy();
          return;
        }
        socket.off('data', onHandshakeData);
        socket.off('end', onHandshakeEnd);
        socket.off('error', onHandshakeError);
        if (answerOk) socket.write(OK);
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
  handshake.expireAt(deadline, 'name handshake');
  socket.on('data', onHandshakeData);
  socket.on('end', onHandshakeEnd);
}

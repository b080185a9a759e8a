/**
 * The last step of a byte-stream client's pipeline (TCP, or TLS once decrypted): the
 * libipc service-name handshake when the client names its target, the service
 * connection, the raw `ok`, and the hand-over to the switch. Shared by tcpd and tlsd.
 *
 * The handshake (PROTOCOL.md §3): the client's first bytes are the raw service name, no
 * frame and no terminator; the gateway answers raw `ok` once connected to the service,
 * or closes without a byte. The original takes its whole first read as the name; we take
 * the first read up to the first NUL byte, which is where a frame header that shares the
 * segment begins (a valid name never holds NUL), and keep those bytes for the service.
 * A name split over several reads is therefore refused, as by the original, with a code.
 *
 * A FIN from the client once its target is known (the fixed one, or a name it sent) is a
 * half-close, not a refusal: it is forwarded to the service once switched.
 */
import type net from 'node:net';
import tls from 'node:tls';
import { ErrorCode, ipcError } from '../src/errors.js';
import { SocketEndpoint } from '../src/switch.js';
import { DirectReader } from '../src/direct-read.js';
import type { GatewayCore, ServeStep } from './gateway.js';
import { asHandshakeError, type PendingConnection } from './lifecycle.js';

const OK = Buffer.from('ok');

/** The name handshake (or none, for a fixed target), then the switch. */
export function nameHandshake(core: GatewayCore): ServeStep {
  return (socket, pending) => serveByteClient(core, socket, pending);
}

function serveByteClient(core: GatewayCore, socket: net.Socket, pending: PendingConnection): void {
  const { options } = core;
  let named = false;

  const onError = (err: Error) => pending.refuse(asHandshakeError(err));
  const onClose = () => pending.refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client closed during the handshake'));
  const onEnd = () => {
    // Once the target is known, a FIN is a half-close: the switch forwards it.
    if (!named) pending.refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client closed before naming a service'));
  };
  const onName = (chunk: Buffer) => {
    socket.pause();
    socket.off('data', onName);
    const nul = chunk.indexOf(0);
    const nameBytes = nul === -1 ? chunk : chunk.subarray(0, nul);
    if (nameBytes.length > options.maxNameLength) {
      pending.refuse(ipcError(ErrorCode.INVALID_SERVICE_NAME, `service name longer than ${options.maxNameLength} bytes`));
      return;
    }
    // latin1 keeps one char per byte, so every byte is checked by the validator.
    const requested = nameBytes.toString('latin1');
    const target = core.selectTarget(requested);
    if (target instanceof Error) {
      pending.refuse(target, { service: requested });
      return;
    }
    named = true;
    if (nul !== -1) socket.unshift(chunk.subarray(nul));
    connect(target, true);
  };

  // The native data plane takes plain sockets only (tcpd; tlsd's bytes need TLS in JS).
  const native = core.dataPlane !== null && !(socket instanceof tls.TLSSocket);

  function connect(service: string, answerOk: boolean): void {
    if (native) {
      // Handed over after the event loop's poll phase that accepted or read the client,
      // as the JS service socket's 'connect' event did: handed over inside it (at once, or
      // in a nextTick), a client's later bytes sometimes never reached the data plane
      // under concurrent load (dataplane.test.ts, 1-2 of 11 tests a run; the mechanism in
      // libuv is not pinned down). setImmediate costs no measurable CPU per connection.
      setImmediate(connectNative, service, answerOk);
      return;
    }
    const reader = options.directRead ? new DirectReader() : undefined;
    core.connectTarget(service, pending, reader).then(
      (upstream) => {
        if (upstream === null) return; // refused meanwhile: connectTarget closed it
        socket.off('error', onError);
        socket.off('close', onClose);
        socket.off('end', onEnd);
        if (answerOk) socket.write(OK);
        const client = new SocketEndpoint('client', socket, options.maxPayload);
        core.bridge(pending, service, client, core.serviceEndpoint(upstream, reader));
      },
      (err: Error) => pending.refuse(err, { service }),
    );
  }

  // The native plane: the addon connects the service at once (no JS socket for it, no
  // promise), and the connection is handed over in the same call.
  function connectNative(service: string, answerOk: boolean): void {
    if (pending.settled) return; // refused while waiting (client gone, deadline, drain)
    let fd: number;
    try {
      fd = core.connectTargetFd(service);
    } catch (err) {
      pending.refuse(err as Error, { service });
      return;
    }
    socket.off('error', onError);
    socket.off('close', onClose);
    socket.off('end', onEnd);
    // The `ok` goes out first from the data plane (nothing queued in JS to flush).
    core.bridgeNative(pending, service, socket, fd, answerOk ? OK : undefined);
  }

  socket.on('error', onError);
  socket.on('close', onClose);
  socket.on('end', onEnd);
  if (options.service !== undefined) {
    // Fixed target: no client handshake; the Unix connect completes or fails at once.
    named = true;
    pending.stage = 'service connection';
    connect(options.service, false);
    return;
  }
  pending.stage = 'name handshake';
  socket.on('data', onName);
  // A TLS step may have paused the socket.
  socket.resume();
}

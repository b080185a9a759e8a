/**
 * The first steps of every gateway's pipeline, once per connection: the PROXY header
 * (`--accept-proxy`), then per-IP admission on the client address it gave (or the TCP
 * peer's). Both run before TLS, the name handshake or HTTP: the header comes before the
 * ClientHello, and a client over its per-IP limit costs no handshake.
 *
 * Who must send a header: with --accept-proxy, a peer in --trusted-proxies (and any peer
 * of a `unix:` listener: the socket's file mode already decides who may connect) must
 * start with one; its connection is refused (IPC_ERR_PROXY_HEADER_INVALID) otherwise. An
 * untrusted peer is served as without --accept-proxy, unless it sends a header
 * (IPC_ERR_PROXY_NOT_TRUSTED): its first bytes are read to tell, so on such a port a
 * fixed-target client that waits for its service to speak first must send a byte first.
 * Every byte read is under the connection's one deadline; bytes after the header go on to
 * the next step.
 */
import type net from 'node:net';
import { ErrorCode, ipcError } from '../src/errors.js';
import type { GatewayCore, ServeStep } from './gateway.js';
import { asHandshakeError, type PendingConnection } from './lifecycle.js';
import { parseProxyHeader, type ProxyHeader } from './proxy-protocol.js';
import { formatPeer, unmapIpv4 } from './client-address.js';

/** The pipeline in front of `serve`: [PROXY header] -> per-IP admission -> serve. */
export function clientAddressSteps(core: GatewayCore, serve: ServeStep): ServeStep {
  const admitted = perIpStep(core, serve);
  return core.options.acceptProxy ? proxyStep(core, admitted) : admitted;
}

/**
 * Per-IP admission on the client address known so far. wsd defers it to the upgrade for
 * a trusted peer when it reads forwarding headers (the address is in them).
 */
function perIpStep(core: GatewayCore, next: ServeStep): ServeStep {
  const { options } = core;
  if (core.perIp === null) return next;
  const defers = options.kind === 'ws' && options.trustForwarded;
  return (socket, pending) => {
    if (defers && options.trustedProxies.has(pending.clientAddress)) {
      next(socket, pending);
      return;
    }
    const refusal = core.admitAddress(pending);
    if (refusal !== null) pending.refuse(refusal);
    else next(socket, pending);
  };
}

function proxyStep(core: GatewayCore, next: ServeStep): ServeStep {
  return (socket, pending) => readProxyHeader(core, socket, pending, next);
}

function readProxyHeader(core: GatewayCore, socket: net.Socket, pending: PendingConnection, next: ServeStep): void {
  // A peer of a unix: listener has no address: the socket file's mode chose who connects.
  // Decided by the listener, not by a missing address (a reset TCP peer has none either).
  const unixPeer = pending.labels.listener.startsWith('unix:');
  const trusted = unixPeer || core.options.trustedProxies.has(socket.remoteAddress);
  pending.stage = 'PROXY header';
  let received: Buffer = Buffer.alloc(0);

  const done = () => {
    socket.off('data', onData);
    socket.off('error', onError);
    socket.off('close', onClose);
    socket.off('end', onEnd);
    socket.pause();
  };
  const onError = (err: Error) => pending.refuse(asHandshakeError(err));
  const onClose = () => pending.refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client closed during the PROXY header'));
  // Closed with part of a header sent: the header is what is wrong (a truncated v1 line).
  const onEnd = () =>
    pending.refuse(
      received.length > 0 && trusted
        ? ipcError(ErrorCode.PROXY_HEADER_INVALID, `PROXY header truncated: ${received.length} bytes, then the client closed`)
        : ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client closed during the PROXY header'),
    );
  const onData = (chunk: Buffer) => {
    received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
    const parsed = parseProxyHeader(received);
    if (parsed.state === 'more') return;
    done();
    if (!trusted && parsed.state !== 'none') {
      pending.refuse(ipcError(ErrorCode.PROXY_NOT_TRUSTED, `PROXY header from ${socket.remoteAddress}, which is not in --trusted-proxies`));
      return;
    }
    if (parsed.state === 'invalid') {
      pending.refuse(ipcError(ErrorCode.PROXY_HEADER_INVALID, `malformed PROXY header: ${parsed.reason}`));
      return;
    }
    if (parsed.state === 'none') {
      if (trusted) {
        pending.refuse(ipcError(ErrorCode.PROXY_HEADER_INVALID, 'no PROXY header from a trusted peer (--accept-proxy)'));
        return;
      }
      socket.unshift(received);
    } else {
      applyHeader(pending, parsed.header);
      if (received.length > parsed.header.length) socket.unshift(received.subarray(parsed.header.length));
    }
    pending.stage = 'handshake';
    next(socket, pending);
  };
  socket.on('data', onData);
  socket.on('error', onError);
  socket.on('close', onClose);
  socket.on('end', onEnd);
}

/**
 * The client address of a header replaces the TCP peer's: `info.peer` (logs) and
 * `clientAddress` (per-IP limits) become the header's source, `info.proxiedBy` keeps the
 * TCP peer. A header without an IP (LOCAL, UNKNOWN, UNSPEC, UNIX) keeps the TCP peer and
 * says so in `info.proxy`.
 */
function applyHeader(pending: PendingConnection, header: ProxyHeader): void {
  const { info } = pending;
  if (header.kind === 'proxy' && header.source !== undefined) {
    info['proxiedBy'] = info.peer;
    const address = unmapIpv4(header.source.address);
    info.peer = formatPeer(address, header.source.port);
    pending.clientAddress = address;
    return;
  }
  info['proxy'] = header.kind;
  if (header.kind === 'unix') info['proxyPath'] = header.unixDestination;
}

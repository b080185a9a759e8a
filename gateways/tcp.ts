/**
 * tcpd's inbound side: TCP clients bridged to local services, frames passed unchanged.
 * The pipeline is one step: the name handshake (or none, for a fixed target).
 */
import { Gateway, GatewayCore } from './gateway.js';
import { nameHandshake } from './byte-client.js';
import { normalizeGatewayOptions, type GatewayInput, type GatewayOptions } from './options.js';

/** Creates a TCP gateway (tcpd) from flag-named options; nothing starts before listen(). */
export function createTcpGateway(input: GatewayInput): Gateway {
  return tcpGateway(normalizeGatewayOptions('tcp', input));
}

/** A TCP gateway from normalised options. */
export function tcpGateway(options: GatewayOptions): Gateway {
  const core = new GatewayCore(options);
  return new Gateway(core, 'tcp', nameHandshake(core));
}

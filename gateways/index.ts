/**
 * The package's main entry: the libipc core (src/, transport-free) and the gateways as a
 * library. Options are named after the daemons' flags in camelCase (`--max-payload` ->
 * `maxPayload`) and go through the same normaliser as the command lines.
 *
 *   import { createTcpGateway } from 'libipc-gateways';
 *   const gateway = createTcpGateway({ listen: ['127.0.0.1:8998'], allow: ['pong'] });
 *   await gateway.listen();
 */
export * from '../src/index.js';
export { createTcpGateway } from './tcp.js';
export { createTlsGateway, type TlsGateway } from './tls.js';
export { createWsGateway, type WsGateway } from './ws.js';
export { createIpcd, Ipcd, type IpcdOptions } from './ipcd.js';
export { Gateway } from './gateway.js';
export { OPTION_SPECS, OptionsError, normalizeGatewayOptions, type GatewayInput, type GatewayKind, type GatewayOptions } from './options.js';
export type { ListenAddress } from './listen.js';

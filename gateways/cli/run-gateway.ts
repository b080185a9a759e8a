/**
 * What tcpd, tlsd and wsd share as processes: flags from the options table, the logger,
 * the metrics and the admin listener, start, and stop (drain: /readyz says 503 first,
 * then the gateway drains, then the admin listener closes). With `onReload`, SIGHUP
 * calls it (tlsd, wsd: TLS files); without, SIGHUP stops the daemon as the original's.
 */
import { Command } from 'commander';
import type { Gateway } from '../gateway.js';
import type { GatewayKind, GatewayOptions } from '../options.js';
import type { Logger } from '../../src/log.js';
import { GatewayMetrics } from '../metrics.js';
import { addGatewayOptions, gatewayOptionsFrom, type GatewayCliOptions } from './gateway-options.js';
import { DaemonAdmin } from './admin.js';
import { daemonLogger, fail, stopOnSignals } from './common.js';

export async function runGatewayDaemon<G extends Gateway>(
  name: string,
  kind: GatewayKind,
  description: string,
  build: (options: GatewayOptions) => G,
  onReload?: (gateway: G, logger: Logger) => void,
): Promise<void> {
  const opts = addGatewayOptions(new Command(name).description(description), kind).parse().opts<GatewayCliOptions>();
  const logger = daemonLogger(name, opts.logLevel);
  let gateway: G | undefined;
  let admin: DaemonAdmin | undefined;
  const stop = async () => {
    admin?.drain();
    await gateway?.close();
    await admin?.close();
  };
  if (onReload) {
    stopOnSignals(logger, stop, ['SIGINT', 'SIGTERM']);
    process.on('SIGHUP', () => gateway && onReload(gateway, logger));
  } else {
    stopOnSignals(logger, stop);
  }
  try {
    const metrics = new GatewayMetrics();
    const options = gatewayOptionsFrom(kind, opts, logger, process.env, metrics);
    // Checked (the address parsed) before anything listens.
    admin = new DaemonAdmin(name, opts.admin, logger, { rundir: options.rundir, gateways: () => (gateway ? [gateway] : []) }, { registry: metrics });
    gateway = build(options);
    await gateway.listen();
    await admin.start();
  } catch (err) {
    gateway?.destroy();
    await admin?.close();
    fail(logger, err, `${name}: cannot start`);
  }
}

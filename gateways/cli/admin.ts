/**
 * `--admin ADDRESS` of the daemons: the admin listener (gateways/admin.ts) with the
 * process's metrics, and the readiness of its gateways. The metrics registry exists even
 * without `--admin` (counting costs one update per connection), so turning the listener
 * on changes nothing else.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { AdminServer, registrySource, type MetricsSource } from '../admin.js';
import { HealthChecks, type HealthTarget } from '../health.js';
import { GatewayMetrics } from '../metrics.js';
import { parseListenAddress } from '../listen.js';
import type { Logger } from '../../src/log.js';
import { packageRoot } from './common.js';

export const ADMIN_HELP = 'admin HTTP listener: /metrics (Prometheus), /healthz, /readyz, status page; HOST:PORT, [V6]:PORT or unix:/path (default: none)';

export function addAdminOption(command: Command): Command {
  return command.option('--admin <address>', ADMIN_HELP);
}

export class DaemonAdmin {
  readonly metrics: GatewayMetrics;
  private readonly server: AdminServer | null;
  private draining = false;

  /**
   * @param address the `--admin` value (undefined: no listener).
   * @throws TypeError for an address that does not parse (before anything starts).
   */
  constructor(
    name: string,
    address: string | undefined,
    logger: Logger,
    subject: { rundir: string; gateways(): readonly HealthTarget[] },
    metrics: { registry: GatewayMetrics; source?: MetricsSource } = { registry: new GatewayMetrics() },
  ) {
    this.metrics = metrics.registry;
    if (address === undefined) {
      this.server = null;
      return;
    }
    let listen;
    try {
      listen = parseListenAddress(address);
    } catch (err) {
      throw new TypeError(`--admin: ${(err as Error).message}`);
    }
    const health = new HealthChecks({ rundir: subject.rundir, gateways: subject.gateways, draining: () => this.draining });
    this.server = new AdminServer({
      listen,
      metrics: metrics.source ?? registrySource(this.metrics.registry),
      health,
      logger,
      name,
      pageDir: path.join(packageRoot(), 'web', 'admin'),
    });
  }

  async start(): Promise<void> {
    await this.server?.listen();
  }

  /** From now on /readyz answers 503 (draining): balancers stop sending clients. */
  drain(): void {
    this.draining = true;
  }

  async close(): Promise<void> {
    await this.server?.close();
  }
}

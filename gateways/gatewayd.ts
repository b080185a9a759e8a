/**
 * gatewayd: one process serving every gateway of a configuration file (gateways/config.ts),
 * their outbound services and optionally ipcd, reloaded live.
 *
 * Reload: the new file is checked whole first (a bad one is refused, the old configuration
 * keeps serving). New gateways are built (TLS files loaded and checked) before anything
 * changes; then each takes over the listening sockets of the old ones whose address it
 * keeps (never closed and reopened: no client is refused during a reload), binds the
 * others, and serves new connections with its new settings. An old gateway that handed
 * a socket over keeps its connections until they end; one whose addresses are all gone
 * stops accepting and drains within drain-timeout. rundir, workers, ipcd and outbound
 * need a restart: a reload that changes them says so and keeps them.
 */
import { Ipcd } from './ipcd.js';
import { Gateway, listenKey } from './gateway.js';
import { tcpGateway } from './tcp.js';
import { tlsGateway } from './tls.js';
import { wsGateway } from './ws.js';
import { loadConfig, type GatewaydConfig } from './config.js';
import type { GatewayOptions } from './options.js';
import type { Logger } from '../src/log.js';
import type net from 'node:net';
import { GatewayMetrics } from './metrics.js';

/** A gateway of any kind from its normalised options. @throws Error when TLS files fail a check. */
export function buildGateway(options: GatewayOptions): Gateway {
  if (options.kind === 'tls') return tlsGateway(options);
  if (options.kind === 'ws') return wsGateway(options);
  return tcpGateway(options);
}

/**
 * What one Gatewayd serves: everything (one process), or its part in a cluster
 * (gateways/cluster.ts): the gateways in each worker, the outbound services and ipcd once
 * in the primary.
 */
export type GatewaydPart = 'all' | 'gateways' | 'services';

export class Gatewayd {
  private config: GatewaydConfig;
  private readonly logger: Logger;
  private readonly part: GatewaydPart;
  private gateways: Gateway[] = [];
  private outbound: Gateway[] = [];
  private ipcd: Ipcd | null = null;
  private reloading: Promise<void> = Promise.resolve();
  /** Where every gateway counts its connections, and reloads are counted. */
  readonly metrics: GatewayMetrics;

  constructor(config: GatewaydConfig, logger: Logger, part: GatewaydPart = 'all', metrics = new GatewayMetrics({ defaultMetrics: false })) {
    this.config = config;
    this.logger = logger;
    this.part = part;
    this.metrics = metrics;
  }

  /** Reloads are counted by the process that decides them: not by workers (their primary does). */
  private countReload(result: 'ok' | 'refused' | 'partial'): void {
    if (this.part !== 'gateways') this.metrics.reload(result);
  }

  private build(options: GatewayOptions): Gateway {
    return buildGateway({ ...options, metrics: this.metrics });
  }

  /** Every gateway and outbound service it runs (for readiness). */
  get all(): readonly Gateway[] {
    return [...this.outbound, ...this.gateways];
  }

  /** Every gateway (for TLS reloads on SIGHUP and tests). */
  get running(): readonly Gateway[] {
    return this.gateways;
  }

  /**
   * Builds and starts its part. `inherit`: listening sockets to take instead of binding
   * (systemd's, by listen key: gateways/systemd.ts); the ones taken leave the map.
   */
  async start(inherit?: Map<string, net.Server>): Promise<void> {
    const { config, part } = this;
    this.gateways = part === 'services' ? [] : config.gateways.map((o) => this.build(o));
    this.outbound = part === 'gateways' ? [] : config.outbound.map((o) => this.build(o));
    try {
      for (const g of [...this.outbound, ...this.gateways]) await g.listen(inherit);
      if (config.ipcd && part !== 'gateways') {
        this.ipcd = new Ipcd({ rundir: config.rundir, ...config.ipcd, logger: this.logger, metrics: this.metrics });
        await this.ipcd.start();
      }
    } catch (err) {
      for (const g of [...this.outbound, ...this.gateways]) g.destroy();
      await this.ipcd?.close();
      throw err;
    }
    const started = { all: 'gatewayd started', gateways: 'worker started', services: 'services started' }[part];
    this.logger.info({ file: config.file, gateways: this.gateways.length, outbound: this.outbound.length, ipcd: !!this.ipcd }, started);
  }

  /**
   * Reloads the file (or what `load` returns: a cluster worker gets the text its primary
   * checked); reloads are serialised (a SIGHUP storm runs them one after another).
   */
  reload(load: () => GatewaydConfig = () => loadConfig(this.config.file, this.logger)): Promise<void> {
    this.reloading = this.reloading.then(() => this.reloadOnce(load));
    return this.reloading;
  }

  private async reloadOnce(load: () => GatewaydConfig): Promise<void> {
    // Stopping: a reload would bind addresses nobody drains (and adopt closed listeners).
    if (this.closing) {
      this.logger.info('reload ignored: stopping');
      return;
    }
    let next: GatewaydConfig;
    let built: Gateway[];
    try {
      next = load();
      built = next.gateways.map((o) => this.build(o));
    } catch (err) {
      this.logger.error({ reason: (err as Error).message }, 'reload refused: keeping the configuration in use');
      this.countReload('refused');
      return;
    }
    const needsRestart = restartOnlyChanges(this.config, next);

    const oldKeys = new Set(this.gateways.flatMap((g) => g.core.options.listen.map(listenKey)));
    const newKeys = new Set(next.gateways.flatMap((g) => g.listen.map(listenKey)));
    const pool = new Map<string, net.Server>();
    const handedBy = new Map<Gateway, Map<string, net.Server>>();
    for (const old of this.gateways) {
      const keeps = old.core.options.listen.some((a) => newKeys.has(listenKey(a)));
      if (!keeps) continue;
      const handed = old.release();
      handedBy.set(old, handed);
      for (const [key, server] of handed) pool.set(key, server);
    }
    const started: Gateway[] = [];
    let failed = 0;
    for (const gateway of built) {
      try {
        await gateway.listen(pool);
        started.push(gateway);
      } catch (err) {
        failed++;
        this.logger.error({ reason: (err as Error).message, listen: gateway.core.options.listen.map(listenKey) }, 'reload: a gateway could not start');
      }
    }
    // Sockets nobody took (addresses gone with a gateway that also kept others) close now.
    for (const server of pool.values()) server.close();
    const removed = this.gateways.filter((g) => !handedBy.has(g));
    for (const g of removed) void g.close();
    this.gateways = started;
    this.countReload(failed > 0 ? 'partial' : 'ok');
    this.config = { ...next, rundir: this.config.rundir, workers: this.config.workers, drainTimeout: this.config.drainTimeout, admin: this.config.admin, ipcd: this.config.ipcd, outbound: this.config.outbound };
    this.logger.info(
      {
        added: [...newKeys].filter((k) => !oldKeys.has(k)),
        removed: [...oldKeys].filter((k) => !newKeys.has(k)),
        kept: [...newKeys].filter((k) => oldKeys.has(k)),
        gateways: started.length,
        ...(needsRestart.length ? { needsRestart } : {}),
      },
      needsRestart.length ? `reloaded; ${needsRestart.join(', ')} changed and need a restart (kept as they were)` : 'reloaded',
    );
  }

  /** Stops accepting everywhere; connections finish within drain-timeout. */
  private closing = false;

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.gateways, ...this.outbound].map((g) => g.close()));
    await this.ipcd?.close();
  }
}

/** What `next` changes that only a restart applies (a reload says so and keeps them). */
export function restartOnlyChanges(current: GatewaydConfig, next: GatewaydConfig): string[] {
  const changed: string[] = (['rundir', 'workers', 'drainTimeout', 'admin'] as const).filter((k) => next[k] !== current[k]);
  if (JSON.stringify(next.ipcd) !== JSON.stringify(current.ipcd)) changed.push('ipcd');
  if (JSON.stringify(next.outbound.map(outboundKey)) !== JSON.stringify(current.outbound.map(outboundKey))) changed.push('outbound');
  return changed;
}

function outboundKey(o: GatewayOptions): string {
  return `${o.outboundNames.join(',')}|${o.outboundSchemes.join(',')}|${o.outboundCa ?? ''}|${o.sendProxyV2}`;
}

export { loadConfig };

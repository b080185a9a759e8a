#!/usr/bin/env node
/**
 * gatewayd: every gateway of one configuration file in one process (see gatewayd.example.yaml).
 *   gatewayd --config gatewayd.yaml            serve; SIGHUP reloads the file, SIGTERM drains
 *   gatewayd --check --config gatewayd.yaml    check the file and exit 0 or 1 (as haproxy -c)
 *   gatewayd --config gatewayd.yaml --watch-config   also reload when the file changes
 * Under systemd (systemd/gatewayd.service): sd_notify READY/RELOADING/STOPPING, and the
 * listening sockets of gatewayd.socket (LISTEN_FDS), see gateways/gatewayd-systemd.ts.
 */
import { Command } from 'commander';
import { Gatewayd, loadConfig } from '../gatewayd.js';
import cluster from 'node:cluster';
import { ServiceManagerLink } from '../gatewayd-systemd.js';
import { watchConfig, type ConfigWatcher } from '../watch-config.js';
import { clusterWanted, runCluster, type ClusterPrimary } from '../cluster.js';
import { clusterMetricsSource } from '../cluster-metrics.js';
import { listenKey } from '../gateway.js';
import { notify } from '../../src/sd-notify.js';
import { daemonLogger, fail, stopOnSignals } from './common.js';
import { DaemonAdmin } from './admin.js';
import { GatewayMetrics } from '../metrics.js';
import type { HealthTarget } from '../health.js';

const program = new Command('gatewayd')
  .description('libipc gateways (tcp, tls, ws), their outbound services and ipcd, from one configuration file')
  .requiredOption('--config <file>', 'YAML configuration file')
  .option('--check', 'check the configuration and exit (0: valid, 1: refused, with the reason)')
  .option('--log-level <level>', 'pino level (default: the file\'s log-level, else info)')
  .option('--watch-config', 'reload when the configuration file changes (as SIGHUP does; a broken file is refused)')
  .parse();
const opts = program.opts<{ config: string; check?: boolean; logLevel?: string; watchConfig?: boolean }>();

if (opts.check) {
  try {
    const config = loadConfig(opts.config);
    process.stdout.write(`${opts.config}: valid (${config.gateways.length} gateways, ${config.outbound.length} outbound services, ipcd ${config.ipcd ? 'on' : 'off'})\n`);
    process.exit(0);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  }
}

const fileLevel = (() => {
  try {
    return loadConfig(opts.config).logLevel;
  } catch {
    return undefined; // reported below, through the logger
  }
})();
const logger = daemonLogger('gatewayd', opts.logLevel ?? fileLevel);

if (clusterWanted(opts.config)) {
  if (cluster.isWorker) await runCluster(opts.config, logger);
  else await runPrimary();
} else {
  await runOneProcess();
}

/** workers: 1: one process, as stunnel or HAProxy without nbthread. */
async function runOneProcess(): Promise<void> {
  let daemon: Gatewayd | undefined;
  let admin: DaemonAdmin | undefined;
  let manager: ServiceManagerLink | undefined;
  let watcher: ConfigWatcher | undefined;
  let stopping = false;
  stopOnSignals(
    logger,
    async () => {
      // No reload from here on: it would serve addresses the drain does not wait for.
      stopping = true;
      watcher?.close();
      admin?.drain();
      await manager?.stopping();
      await daemon?.close();
      await admin?.close();
    },
    ['SIGINT', 'SIGTERM'],
  );
  // A SIGHUP while starting reloads once started (the file may have changed after it was read).
  let serving = false;
  let reloadWhenServing = false;
  process.on('SIGHUP', () => {
    if (stopping) return void logger.info('SIGHUP ignored: stopping');
    logger.info('SIGHUP: reloading the configuration');
    if (serving) void manager!.reload(daemon!);
    else reloadWhenServing = true;
  });
  try {
    manager = new ServiceManagerLink(logger);
    const config = loadConfig(opts.config, logger);
    const metrics = new GatewayMetrics();
    admin = new DaemonAdmin('gatewayd', config.admin, logger, { rundir: config.rundir, gateways: () => daemon?.all ?? [] }, { registry: metrics });
    daemon = new Gatewayd(config, logger, 'all', metrics);
    await daemon.start(manager.pool(config));
    await admin.start();
  } catch (err) {
    manager?.abandon();
    await admin?.close();
    fail(logger, err, 'gatewayd: cannot start');
  }
  serving = true;
  await manager.ready(daemon);
  if (reloadWhenServing && !stopping) void manager.reload(daemon);
  if (opts.watchConfig && !stopping) watcher = watchConfig(opts.config, () => void manager.reload(daemon), logger);
}

/**
 * workers > 1: the primary (gateways/cluster.ts) supervises the workers and serves the
 * outbound services, ipcd and the admin listener, whose metrics add up every worker's.
 */
async function runPrimary(): Promise<void> {
  let primary: ClusterPrimary | null = null;
  let admin: DaemonAdmin | undefined;
  const metrics = new GatewayMetrics();
  try {
    const manager = new ServiceManagerLink(logger);
    const config = loadConfig(opts.config, logger);
    if (manager.pool(config) !== undefined) {
      manager.abandon();
      throw new Error('systemd socket activation (LISTEN_FDS) with workers above 1 is not supported yet: use workers: 1, or let gatewayd bind its addresses');
    }
    admin = new DaemonAdmin(
      'gatewayd',
      config.admin,
      logger,
      { rundir: config.rundir, gateways: () => (primary ? workerTargets(primary) : []) },
      { registry: metrics, source: clusterMetricsSource(metrics.registry, () => primary?.state().processes ?? [], logger) },
    );
    primary = await runCluster(opts.config, logger, {
      metrics,
      onReady: () => void notify(`READY=1\nSTATUS=serving with ${config.workers} workers`),
      onReloading: () => void notify(`RELOADING=1\nMONOTONIC_USEC=${process.hrtime.bigint() / 1000n}\nSTATUS=reloading the configuration`),
      onReloaded: (result) => {
        metrics.reload(result);
        void notify('READY=1\nSTATUS=serving');
      },
      onStopping: () => {
        admin?.drain();
        void notify('STOPPING=1\nSTATUS=draining connections');
      },
    });
    await admin.start();
  } catch (err) {
    await admin?.close();
    fail(logger, err, 'gatewayd: cannot start');
  }
  if (opts.watchConfig) watchConfig(opts.config, () => primary?.reload(), logger);
}

/** Readiness of the workers' gateways as the primary sees them. */
function workerTargets(primary: ClusterPrimary): HealthTarget[] {
  const { config, serving, services } = primary.state();
  // The workers share the listening sockets: served while one of them serves (a worker
  // being restarted does not take the whole node out of a balancer's rotation).
  const bound = serving > 0;
  const ofWorkers = config.gateways.map((options) => ({
    core: { options },
    listeners: options.listen.map((address) => ({
      transport: options.kind === 'ws' && options.tls ? 'wss' : options.kind,
      listener: listenKey(address),
      bound,
    })),
  }));
  return [...services, ...ofWorkers];
}

#!/usr/bin/env node
/**
 * gatewayd: every gateway of one configuration file in one process (see gatewayd.example.yaml).
 *   gatewayd --config gatewayd.yaml            serve; SIGHUP reloads the file, SIGTERM drains
 *   gatewayd --check --config gatewayd.yaml    check the file and exit 0 or 1 (as haproxy -c)
 */
import { Command } from 'commander';
import { Gatewayd, loadConfig } from '../gatewayd.js';
import { clusterWanted, runCluster } from '../cluster.js';
import { daemonLogger, fail, stopOnSignals } from './common.js';

const program = new Command('gatewayd')
  .description('libipc gateways (tcp, tls, ws), their outbound services and ipcd, from one configuration file')
  .requiredOption('--config <file>', 'YAML configuration file')
  .option('--check', 'check the configuration and exit (0: valid, 1: refused, with the reason)')
  .option('--log-level <level>', 'pino level (default: the file\'s log-level, else info)')
  .parse();
const opts = program.opts<{ config: string; check?: boolean; logLevel?: string }>();

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
  // workers > 1 (and every worker process): gateways/cluster.ts does signals and all.
  await runCluster(opts.config, logger).catch((err: unknown) => fail(logger, err, 'gatewayd: cannot start'));
} else {
  let daemon: Gatewayd | undefined;
  stopOnSignals(logger, async () => daemon?.close(), ['SIGINT', 'SIGTERM']);
  process.on('SIGHUP', () => {
    logger.info('SIGHUP: reloading the configuration');
    void daemon?.reload();
  });
  try {
    daemon = new Gatewayd(loadConfig(opts.config, logger), logger);
    await daemon.start();
  } catch (err) {
    fail(logger, err, 'gatewayd: cannot start');
  }
}

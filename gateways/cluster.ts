/**
 * gatewayd with `workers: N` above 1: N worker processes (node:cluster) run the gateways
 * and share their listening sockets; the primary serves the outbound Unix services and
 * ipcd once, and supervises.
 *
 * Why node:cluster: Node 20 ignores `reusePort`, so N processes cannot each bind the same
 * port. With cluster's round-robin (SCHED_RR, set here unless NODE_CLUSTER_SCHED_POLICY says
 * otherwise) the primary owns each
 * listening socket, accepts, and passes every connection to the next worker over the
 * IPC channel; a worker's `net.Server.listen` goes through the primary, so the gateway
 * code is the same as in one process (reload hand-over of listening sockets included).
 *
 * The primary: checks the file, serves the outbound services and ipcd (a Gatewayd of
 * part `services`), forks N workers and sends each the text of the file it checked, so
 * every worker runs the same configuration even when the file changes on disk meanwhile.
 * A worker that dies is logged and restarted after a backoff that doubles with every
 * quick death (a crash loop does not spin). SIGHUP: the primary checks the file (TLS files
 * included) and refuses a bad one with one log line; otherwise every worker reloads that
 * text. SIGTERM/SIGINT: every worker drains within drain-timeout and exits, the
 * primary closes its services and exits 0; a worker still running after drain-timeout +
 * KILL_MARGIN_MS is killed.
 *
 * A worker: a Gatewayd of part `gateways`; it drains on the primary's `stop`, on SIGTERM
 * and on SIGINT (systemd and a terminal signal the whole group), ignores SIGHUP (the
 * primary reloads it), and exits when the primary is gone (node:cluster does that).
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '../src/log.js';
import { loadConfig, parseConfig, readConfigText, restartOnlyKeys, type GatewaydConfig } from './config.js';
import { Gatewayd, buildGateway, restartOnlyChanges } from './gatewayd.js';
import { listenKey, type Gateway } from './gateway.js';
import { GatewayMetrics } from './metrics.js';
import { answerMetricRequests } from './cluster-metrics.js';
import { clearStaleSocket } from './listeners.js';
import type { GatewayOptions } from './options.js';

/** First restart delay of a worker that died; doubled for every quick death after it. */
export const RESTART_BACKOFF_MIN_MS = 100;
export const RESTART_BACKOFF_MAX_MS = 10_000;
/** A worker that served this long before dying restarts after the minimum delay again. */
const STABLE_AFTER_MS = 10_000;
/** Time a worker gets beyond drain-timeout to exit before it is killed. */
export const KILL_MARGIN_MS = 2000;
/** The worker's index (0..N-1) in its environment: its slot, kept across restarts. */
const WORKER_ENV = 'GATEWAYD_WORKER';

/** Primary to worker. */
type ToWorker =
  | { type: 'config'; text: string; keep: Record<string, unknown> }
  | { type: 'reload'; text: string; generation: number }
  | { type: 'stop' };

/** Worker to primary. */
type ToPrimary =
  | { type: 'hello' }
  | { type: 'ready' }
  | { type: 'failed'; reason: string }
  | { type: 'reloaded'; generation: number };

/**
 * What systemd (or another supervisor) is told, by the primary only: ready once every
 * worker serves, reloading and reloaded around a forwarded reload, stopping at SIGTERM.
 */
export interface ClusterHooks {
  onReady?(): void;
  onReloading?(): void;
  /** A reload ended: forwarded to every worker (`ok`), or the file refused (`refused`). */
  onReloaded?(result: 'ok' | 'refused'): void;
  onStopping?(): void;
  /** Where the primary's own services (outbound, ipcd) count; workers count in their own. */
  metrics?: GatewayMetrics;
}

/** True in a cluster worker, and in a primary whose file asks for more than one worker. */
export function clusterWanted(file: string): boolean {
  if (cluster.isWorker) return true;
  try {
    return loadConfig(file).workers > 1;
  } catch {
    return false; // the one-process path reports the error
  }
}

/**
 * Runs this process's part: the primary (resolves once every worker serves; rejects when
 * the configuration or a first worker fails, after stopping the others) or a worker.
 */
export async function runCluster(file: string, logger: Logger, hooks: ClusterHooks = {}): Promise<ClusterPrimary | null> {
  if (cluster.isWorker) {
    runWorker(file, logger);
    return null;
  }
  const primary = new ClusterPrimary(file, logger, hooks);
  await primary.start();
  return primary;
}

/** One worker position: its process changes at restarts, its index does not. */
interface Slot {
  index: number;
  worker: Worker | null;
  /** Resolves when `worker` exited. */
  exited: Promise<void>;
  /** The worker got its configuration (so it must get reloads too). */
  configured: boolean;
  readyAt: number | null;
  /** Quick deaths in a row, for the backoff. */
  failures: number;
  restartTimer: NodeJS.Timeout | null;
  /** Reload generations this worker has not acknowledged yet. */
  pendingReloads: Set<number>;
}

export class ClusterPrimary {
  private readonly file: string;
  private readonly logger: Logger;
  private readonly hooks: ClusterHooks;
  private config!: GatewaydConfig;
  /** The file's text as last checked: what a worker (re)starting or reloading gets. */
  private text = '';
  private keep: Record<string, unknown> = {};
  private services: Gatewayd | null = null;
  private slots: Slot[] = [];
  private started = false;
  private stopping = false;
  private generation = 0;

  constructor(file: string, logger: Logger, hooks: ClusterHooks) {
    this.file = file;
    this.logger = logger;
    this.hooks = hooks;
  }

  async start(): Promise<void> {
    // Signals first: until a handler is installed, a signal kills the primary with no cleanup.
    process.on('SIGTERM', this.onStopSignal);
    process.on('SIGINT', this.onStopSignal);
    process.on('SIGHUP', () => this.reload());
    this.text = readConfigText(this.file);
    this.config = parseConfig(this.file, this.text, this.logger);
    this.keep = restartOnlyKeys(this.config, this.text);
    // TLS files read and checked once here: a bad one fails the start with one message.
    this.config.gateways.forEach(buildGateway);
    await clearStaleSockets(this.config.gateways);
    this.services = new Gatewayd(this.config, this.logger, 'services', this.hooks.metrics);
    await this.services.start();
    if (this.stopping) return; // a stop signal came meanwhile: stop() closes the services and exits

    // Round-robin unless the operator chose otherwise (NODE_CLUSTER_SCHED_POLICY=none:
    // every worker accepts from the shared socket itself, no hand-off, and the kernel's
    // wake-ups decide the spread, unevenly on Linux: why round-robin is the default).
    if (process.env['NODE_CLUSTER_SCHED_POLICY'] === undefined) cluster.schedulingPolicy = cluster.SCHED_RR;
    cluster.setupPrimary({ silent: false });
    this.slots = Array.from({ length: this.config.workers }, (_, index) => newSlot(index));
    try {
      await Promise.all(this.slots.map((slot) => this.fork(slot)));
    } catch (err) {
      if (this.stopping) return; // a stop signal came during the start: stop() exits
      for (const slot of this.slots) slot.worker?.process.kill('SIGKILL');
      await this.services.close();
      throw err;
    }
    this.started = true;
    this.logger.info(
      {
        file: this.file,
        workers: this.slots.length,
        workerPids: this.slots.map((s) => s.worker?.process.pid),
        gateways: this.config.gateways.length,
        outbound: this.config.outbound.length,
        ipcd: !!this.config.ipcd,
      },
      'gatewayd started',
    );
    this.hooks.onReady?.();
    this.markRunning();
  }

  /** Forks the worker of `slot`; resolves once it serves, rejects if it fails or dies first. */
  private fork(slot: Slot): Promise<void> {
    const worker = cluster.fork({ [WORKER_ENV]: String(slot.index) });
    slot.worker = worker;
    slot.configured = false;
    slot.readyAt = null;
    slot.pendingReloads.clear();
    slot.exited = new Promise((resolve) => worker.once('exit', () => resolve()));
    const pid = worker.process.pid;
    return new Promise<void>((resolve, reject) => {
      worker.on('error', (err) => this.logger.warn({ worker: slot.index, workerPid: pid, err }, 'worker channel error'));
      worker.on('message', (m: ToPrimary) => {
        if (m.type === 'hello') {
          // Stopping: a `stop` sent before the worker listened was lost; this one is not.
          if (this.stopping) return send(worker, { type: 'stop' });
          slot.configured = true;
          send(worker, { type: 'config', text: this.text, keep: this.keep });
        } else if (m.type === 'ready') {
          slot.readyAt = performance.now();
          resolve();
        } else if (m.type === 'failed') {
          this.logger.error({ worker: slot.index, workerPid: pid, reason: m.reason }, 'worker could not start');
          reject(new Error(`worker ${slot.index} could not start: ${m.reason}`));
        } else if (m.type === 'reloaded') {
          this.acknowledge(slot, m.generation);
        }
      });
      worker.once('exit', (code, signal) => {
        reject(new Error(`worker ${slot.index} (pid ${pid}) exited before serving (code ${code}, signal ${signal})`));
        this.onExit(slot, worker, code, signal);
      });
    });
  }

  private onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return;
    slot.worker = null;
    for (const generation of [...slot.pendingReloads]) this.acknowledge(slot, generation);
    const fields = { worker: slot.index, workerPid: worker.process.pid, code, signal };
    if (this.stopping) {
      this.logger.info(fields, 'worker stopped');
      return;
    }
    if (!this.started) return; // the start fails with this worker's error
    const served = slot.readyAt === null ? 0 : performance.now() - slot.readyAt;
    if (served >= STABLE_AFTER_MS) slot.failures = 0;
    const delay = Math.min(RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_MIN_MS * 2 ** slot.failures);
    slot.failures += 1;
    this.logger.error({ ...fields, restartInMs: delay }, 'worker died: restarting it');
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      if (this.stopping) return;
      this.fork(slot).then(
        () => this.logger.info({ worker: slot.index, workerPid: slot.worker?.process.pid }, 'worker restarted'),
        () => undefined, // logged by the message or exit handlers; the next exit restarts it again
      );
    }, delay);
  }

  /**
   * SIGHUP: checks the file once here (TLS files and certificates included), so a bad
   * one is refused with one line instead of one per worker; then every worker reloads
   * the text checked. Keys only a restart changes are kept, and said. Serialised, as
   * the one-process reload (a SIGHUP storm runs them one after another).
   */
  reload(): void {
    this.reloading = this.reloading.then(() => this.running).then(() => this.reloadOnce());
  }

  private reloading: Promise<void> = Promise.resolve();
  /** Set by `running`'s executor (declared first: a later field initializer would overwrite it). */
  private markRunning: () => void = () => undefined;
  /** Resolves once every first worker serves (a SIGHUP during the start waits for it). */
  private running: Promise<void> = new Promise((resolve) => (this.markRunning = resolve));

  private async reloadOnce(): Promise<void> {
    if (this.stopping) return;
    this.hooks.onReloading?.();
    let text: string;
    let next: GatewaydConfig;
    try {
      text = readConfigText(this.file);
      next = parseConfig(this.file, text, this.logger);
      const kept = parseConfig(this.file, text, this.logger, this.keep);
      // What the workers will build, built and dropped (nothing starts in a constructor).
      kept.gateways.forEach(buildGateway);
      // Stale files of added unix: addresses go before any worker binds (workers do not probe).
      const current = new Set(this.config.gateways.flatMap((g) => g.listen.map(listenKey)));
      await clearStaleSockets(kept.gateways.map((g) => ({ ...g, listen: g.listen.filter((a) => !current.has(listenKey(a))) })));
    } catch (err) {
      this.logger.error({ reason: (err as Error).message }, 'reload refused: keeping the configuration in use');
      this.hooks.onReloaded?.('refused');
      return;
    }
    const needsRestart = restartOnlyChanges(this.config, next);
    this.text = text;
    this.config = { ...next, rundir: this.config.rundir, workers: this.config.workers, drainTimeout: this.config.drainTimeout, admin: this.config.admin, ipcd: this.config.ipcd, outbound: this.config.outbound };
    const generation = ++this.generation;
    const reached: number[] = [];
    for (const slot of this.slots) {
      if (slot.worker === null || !slot.configured) continue; // a worker still starting gets the new text
      slot.pendingReloads.add(generation);
      send(slot.worker, { type: 'reload', text, generation });
      reached.push(slot.index);
    }
    this.logger.info(
      { generation, workers: reached, ...(needsRestart.length ? { needsRestart } : {}) },
      needsRestart.length ? `reloading every worker; ${needsRestart.join(', ')} changed and need a restart (kept as they were)` : 'reloading every worker',
    );
    this.settleIfDone(generation);
  }

  private acknowledge(slot: Slot, generation: number): void {
    if (!slot.pendingReloads.delete(generation)) return;
    this.settleIfDone(generation);
  }

  /** Logs `reloaded every worker` once no live worker still reloads `generation`. */
  private settleIfDone(generation: number): void {
    if (this.slots.some((s) => s.pendingReloads.has(generation))) return;
    this.logger.info({ generation }, 'reloaded every worker');
    if (generation === this.generation) this.hooks.onReloaded?.('ok');
  }

  /** For the admin listener: what runs, and how many workers serve. */
  state(): ClusterState {
    const live = this.slots.filter((s) => s.worker !== null && s.readyAt !== null);
    return {
      config: this.config,
      serving: live.length,
      workers: this.slots.length,
      services: this.services?.all ?? [],
      processes: live.map((s) => s.worker!),
    };
  }

  private readonly onStopSignal = (signal: NodeJS.Signals): void => {
    if (this.stopping) {
      this.logger.warn({ signal }, 'second signal: exiting now');
      for (const slot of this.slots) slot.worker?.process.kill('SIGKILL');
      process.exit(1);
    }
    this.logger.info({ signal }, 'stopping');
    this.stop().then(
      () => {
        this.logger.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        this.logger.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };

  /** Every worker drains (killed after drain-timeout + margin), the services close. */
  private async stop(): Promise<void> {
    this.stopping = true;
    this.hooks.onStopping?.();
    const live = this.slots.filter((s) => s.worker !== null);
    for (const slot of this.slots) {
      if (slot.restartTimer !== null) clearTimeout(slot.restartTimer);
      slot.restartTimer = null;
    }
    for (const slot of live) send(slot.worker!, { type: 'stop' });
    const drainTimeout = this.config?.drainTimeout ?? 0;
    const killer = setTimeout(() => {
      for (const slot of live) {
        if (slot.worker === null) continue;
        this.logger.warn({ worker: slot.index, workerPid: slot.worker.process.pid, drainTimeout }, 'worker still running after drain-timeout: killing it');
        slot.worker.process.kill('SIGKILL');
      }
    }, drainTimeout + KILL_MARGIN_MS);
    try {
      await Promise.all([...live.map((s) => s.exited), this.services?.close()]);
    } finally {
      clearTimeout(killer);
    }
  }
}

export interface ClusterState {
  /** The configuration the workers run (as last checked). */
  config: GatewaydConfig;
  /** Workers serving now, of `workers` configured. */
  serving: number;
  workers: number;
  /** The primary's own part: outbound services (and ipcd). */
  services: readonly Gateway[];
  /** Live worker processes (for metrics). */
  processes: readonly Worker[];
}

function newSlot(index: number): Slot {
  return { index, worker: null, exited: Promise.resolve(), configured: false, readyAt: null, failures: 0, restartTimer: null, pendingReloads: new Set() };
}

/** Sends to a worker; one whose channel is gone is being handled by its exit. */
function send(worker: Worker, message: ToWorker): void {
  if (!worker.isConnected()) return;
  try {
    worker.send(message);
  } catch {
    // closed meanwhile: its exit handler runs
  }
}

/** Removes socket files of `unix:` listen addresses left by a dead process; a live one is refused. */
async function clearStaleSockets(gateways: readonly GatewayOptions[]): Promise<void> {
  for (const g of gateways) {
    for (const a of g.listen) if (a.path !== undefined) await clearStaleSocket(a.path);
  }
}

/** A worker: runs the gateways of the text its primary sends, reloads and stops on its word. */
function runWorker(file: string, rootLogger: Logger): void {
  const index = Number(process.env[WORKER_ENV] ?? cluster.worker?.id ?? 0);
  const logger = rootLogger.child({ worker: index });
  // Counted here, added up by the primary at scrape time (gateways/cluster-metrics.ts).
  const metrics = new GatewayMetrics();
  answerMetricRequests(metrics.registry);
  let daemon: Gatewayd | null = null;
  let keep: Record<string, unknown> = {};
  let started: Promise<void> = Promise.resolve();
  let stopping = false;
  const toPrimary = (message: ToPrimary, then?: () => void): void => {
    if (!process.connected) return; // the primary is gone: node:cluster exits this worker
    process.send!(message, undefined, {}, () => then?.());
  };

  const stop = (by: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ by }, 'worker stopping');
    started
      .then(() => daemon?.close())
      .then(
        () => {
          logger.info('worker stopped');
          process.exit(0);
        },
        (err: unknown) => {
          logger.error({ err }, 'error while stopping');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // The default action would kill the worker: a hangup of the whole group reaches it too.
  process.on('SIGHUP', () => logger.debug('SIGHUP ignored: the primary reloads every worker'));

  process.on('message', (m: ToWorker) => {
    if (m.type === 'config') {
      keep = m.keep;
      try {
        daemon = new Gatewayd(parseConfig(file, m.text, logger, keep), logger, 'gateways', metrics);
      } catch (err) {
        toPrimary({ type: 'failed', reason: (err as Error).message }, () => process.exit(1));
        return;
      }
      const d = daemon;
      started = d.start().then(
        () => toPrimary({ type: 'ready' }),
        (err: unknown) => {
          logger.fatal({ err }, 'worker cannot start');
          toPrimary({ type: 'failed', reason: (err as Error).message }, () => process.exit(1));
          return new Promise<void>(() => undefined); // exiting
        },
      );
    } else if (m.type === 'reload') {
      const d = daemon;
      if (d === null || stopping) return;
      void started
        .then(() => d.reload(() => parseConfig(file, m.text, logger, keep)))
        .then(() => toPrimary({ type: 'reloaded', generation: m.generation }));
    } else if (m.type === 'stop') {
      stop('primary');
    }
  });
  toPrimary({ type: 'hello' });
}

/**
 * Readiness of a process's gateways, for `/readyz` and the status page.
 *
 * Ready means: every configured listener is bound, the process is not draining, and
 * every service a gateway can reach by name (its fixed target, every name of an explicit
 * allow-list) answers a connect probe in `$RUNDIR`. With `--allow '*'` there is no list
 * to probe: the run directory must be usable. Per-service health comes from `$RUNDIR`
 * itself, which no TCP load balancer can see: a connect to the service's socket, closed
 * at once (what HAProxy's `check` does to a TCP server).
 *
 * Probes are cached: at most one per service socket per second, however often the
 * balancer asks, so `/readyz` polled hard costs the services nothing.
 */
import net from 'node:net';
import { checkRundir, servicePath } from '../src/rundir.js';
import type { GatewayOptions } from './options.js';

/** One probe's verdict. */
export interface ServiceHealth {
  service: string;
  up: boolean;
  /** Why it is down (`no socket`, `nobody listening`, `no answer within 1000 ms`...). */
  reason?: string;
}

export interface ListenerHealth {
  transport: string;
  listener: string;
  bound: boolean;
}

export interface Readiness {
  ready: boolean;
  draining: boolean;
  rundir: { path: string; usable: boolean; reason?: string };
  listeners: ListenerHealth[];
  services: ServiceHealth[];
}

/**
 * What readiness needs of a gateway: its listeners, and the services it reaches by name.
 * A {@link Gateway} is one; with workers, the primary describes its workers' gateways so.
 */
export interface HealthTarget {
  readonly listeners: ListenerHealth[];
  readonly core: { readonly options: Pick<GatewayOptions, 'service' | 'allow'> };
}

/** What is probed: the gateways of the process, and its run directory. */
export interface HealthSubject {
  rundir: string;
  gateways(): readonly HealthTarget[];
  /** True once the process stops: a balancer should send no new client. */
  draining(): boolean;
}

const PROBE_TIMEOUT_MS = 1000;

export class HealthChecks {
  private readonly subject: HealthSubject;
  private readonly cacheMs: number;
  /** Last probe per socket path: its time and result (a promise, so concurrent asks share it). */
  private readonly probes = new Map<string, { at: number; result: Promise<ServiceHealth> }>();

  constructor(subject: HealthSubject, cacheMs = 1000) {
    this.subject = subject;
    this.cacheMs = cacheMs;
  }

  async readiness(): Promise<Readiness> {
    const { subject } = this;
    const rundir = rundirHealth(subject.rundir);
    const listeners: ListenerHealth[] = [];
    const names = new Set<string>();
    for (const gateway of subject.gateways()) {
      listeners.push(...gateway.listeners);
      const { service, allow } = gateway.core.options;
      if (service !== undefined) names.add(service);
      else if (allow !== '*') for (const name of allow) names.add(name);
    }
    const services = await Promise.all([...names].sort().map((name) => this.probe(name)));
    const draining = subject.draining();
    const ready = !draining && rundir.usable && listeners.every((l) => l.bound) && services.every((s) => s.up);
    return { ready, draining, rundir, listeners, services };
  }

  /** The cached verdict for `name`, probing again when it is older than the cache period. */
  probe(name: string): Promise<ServiceHealth> {
    let socketPath: string;
    try {
      socketPath = servicePath(name, this.subject.rundir);
    } catch (err) {
      return Promise.resolve({ service: name, up: false, reason: (err as Error).message });
    }
    const now = performance.now();
    const cached = this.probes.get(socketPath);
    if (cached && now - cached.at < this.cacheMs) return cached.result;
    const result = connectProbe(name, socketPath);
    this.probes.set(socketPath, { at: now, result });
    // The cache holds only configured names (bounded by the configuration); names dropped
    // by a reload are pruned here.
    if (this.probes.size > 4096) this.probes.clear();
    return result;
  }
}

function rundirHealth(rundir: string): Readiness['rundir'] {
  try {
    checkRundir(rundir);
    return { path: rundir, usable: true };
  } catch (err) {
    return { path: rundir, usable: false, reason: (err as Error).message };
  }
}

/** Connects the service's socket and closes at once: up when the connect succeeds. */
function connectProbe(service: string, socketPath: string): Promise<ServiceHealth> {
  return new Promise((resolve) => {
    const socket = net.connect({ path: socketPath });
    const done = (health: ServiceHealth) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(health);
    };
    const timer = setTimeout(() => done({ service, up: false, reason: `no answer within ${PROBE_TIMEOUT_MS} ms` }), PROBE_TIMEOUT_MS);
    socket.once('connect', () => done({ service, up: true }));
    socket.once('error', (err: NodeJS.ErrnoException) => done({ service, up: false, reason: probeFailure(err) }));
  });
}

function probeFailure(err: NodeJS.ErrnoException): string {
  if (err.code === 'ENOENT') return 'no socket in the run directory (service not running)';
  if (err.code === 'ECONNREFUSED') return 'stale socket: nobody listening (service died?)';
  if (err.code === 'EACCES') return 'permission denied on the socket';
  if (err.code === 'EAGAIN') return 'service backlog full';
  return `connect failed (${err.code ?? err.message})`;
}

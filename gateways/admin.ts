/**
 * The admin listener (`--admin HOST:PORT` or `unix:/path`): a small HTTP server apart
 * from the data listeners, for load balancers, Prometheus and people.
 *
 *   GET /metrics       Prometheus text format (prom-client)
 *   GET /healthz       200 while the process serves (liveness)
 *   GET /readyz        200 when every listener is bound and every configured service
 *                      answers a probe; else 503 with a JSON body naming what fails
 *   GET /status.json   listeners and services with their counters and health
 *   GET /              the status page (web/admin/), which refreshes from /status.json
 *
 * Anything else is 404, a method other than GET or HEAD 405. The server is bounded as a
 * data listener is (connection count, header and request timeouts): it is reachable by
 * whoever reaches its address, so it must not be a way to exhaust the process.
 */
import http from 'node:http';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { MetricObjectWithValues, MetricValue, Registry } from 'prom-client';
import type { Logger } from '../src/log.js';
import { bindAll } from './listeners.js';
import type { ListenAddress } from './listen.js';
import type { HealthChecks, Readiness } from './health.js';
import { buildStatus } from './status.js';

/** Where the metrics come from: one registry, or (workers) every worker's, aggregated. */
export interface MetricsSource {
  readonly contentType: string;
  text(): Promise<string>;
  json(): Promise<MetricObjectWithValues<MetricValue<string>>[]>;
}

export function registrySource(registry: Registry): MetricsSource {
  return {
    contentType: registry.contentType,
    text: () => registry.metrics(),
    json: () => registry.getMetricsAsJSON() as Promise<MetricObjectWithValues<MetricValue<string>>[]>,
  };
}

export interface AdminOptions {
  listen: ListenAddress;
  metrics: MetricsSource;
  health: HealthChecks;
  logger: Logger;
  /** The daemon's name, for the status page title. */
  name: string;
  /** Directory of the status page (index.html, status.js, status.css). */
  pageDir: string;
}

/** Admin connections at once, and from one address: beyond, a connection is closed at once. */
const MAX_ADMIN_CONNECTIONS = 64;
const MAX_ADMIN_CONNECTIONS_PER_ADDRESS = 8;
/** A connection with nothing going on this long is closed (keep-alive included). */
const ADMIN_IDLE_MS = 5000;
const STATIC_FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/status.js': { file: 'status.js', type: 'text/javascript; charset=utf-8' },
  '/status.css': { file: 'status.css', type: 'text/css; charset=utf-8' },
};

export class AdminServer {
  private readonly options: AdminOptions;
  private readonly server: http.Server;
  private readonly page = new Map<string, { body: Buffer; type: string }>();
  private readonly startedAt = Date.now();
  private bound: net.Server | null = null;

  constructor(options: AdminOptions) {
    this.options = options;
    for (const [route, { file, type }] of Object.entries(STATIC_FILES)) {
      this.page.set(route, { body: readFileSync(path.join(options.pageDir, file)), type });
    }
    // connectionsCheckingInterval: the header and request timeouts are enforced within a
    // second, not Node's default 30 s (a slow client holds a slot only that long).
    this.server = http.createServer({ headersTimeout: 5000, requestTimeout: 10_000, keepAliveTimeout: 5000, connectionsCheckingInterval: 1000 }, (req, res) => {
      this.route(req, res).catch((err: Error) => {
        options.logger.error({ err, path: req.url }, 'admin request failed');
        if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
        else res.destroy();
      });
    });
    this.server.maxConnections = MAX_ADMIN_CONNECTIONS;
    this.server.setTimeout(ADMIN_IDLE_MS, (socket: net.Socket) => socket.destroy());
    this.server.on('clientError', (_err, socket) => socket.destroy());
    // One address cannot take every slot (the balancer's health checks must get through).
    const perAddress = new Map<string, number>();
    this.server.on('connection', (socket: net.Socket) => {
      const address = socket.remoteAddress ?? 'unix';
      const count = (perAddress.get(address) ?? 0) + 1;
      if (count > MAX_ADMIN_CONNECTIONS_PER_ADDRESS && address !== 'unix') {
        socket.destroy();
        return;
      }
      perAddress.set(address, count);
      socket.once('close', () => {
        const left = (perAddress.get(address) ?? 1) - 1;
        if (left <= 0) perAddress.delete(address);
        else perAddress.set(address, left);
      });
    });
  }

  /** The bound address (a `host:port` AddressInfo, or a Unix path). */
  get address(): net.AddressInfo | string | null {
    return this.bound?.address() ?? null;
  }

  async listen(): Promise<void> {
    const { logger } = this.options;
    const [server] = await bindAll([this.options.listen], () => this.server, { backlog: 128, logger, transport: 'admin' });
    this.bound = server!;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.bound) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const known = url.pathname in STATIC_FILES || ['/metrics', '/healthz', '/readyz', '/status.json'].includes(url.pathname);
    if (!known) return send(res, 404, 'text/plain; charset=utf-8', `no such path: ${url.pathname} (see /, /metrics, /healthz, /readyz, /status.json)\n`);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return send(res, 405, 'text/plain; charset=utf-8', `method ${req.method} not allowed: GET or HEAD\n`);
    }
    const { metrics, health } = this.options;
    switch (url.pathname) {
      case '/metrics':
        return send(res, 200, metrics.contentType, await metrics.text());
      case '/healthz':
        return sendJson(res, 200, { status: 'ok' });
      case '/readyz': {
        const readiness = await health.readiness();
        return sendJson(res, readiness.ready ? 200 : 503, readinessBody(readiness));
      }
      case '/status.json': {
        const [values, readiness] = await Promise.all([metrics.json(), health.readiness()]);
        return sendJson(res, 200, buildStatus(this.options.name, this.startedAt, values, readiness));
      }
      default: {
        const file = this.page.get(url.pathname)!;
        res.setHeader('content-security-policy', "default-src 'self'");
        return send(res, 200, file.type, file.body);
      }
    }
  }
}

/** /readyz's body: the verdict, and each failing part with why. */
function readinessBody(r: Readiness): Record<string, unknown> {
  const failing = [
    ...(r.draining ? [{ what: 'process', reason: 'draining (stopping)' }] : []),
    ...(r.rundir.usable ? [] : [{ what: 'rundir', path: r.rundir.path, reason: r.rundir.reason }]),
    ...r.listeners.filter((l) => !l.bound).map((l) => ({ what: 'listener', listener: l.listener, reason: 'not bound' })),
    ...r.services.filter((s) => !s.up).map((s) => ({ what: 'service', service: s.service, reason: s.reason })),
  ];
  return { status: r.ready ? 'ready' : 'not ready', failing, services: r.services, listeners: r.listeners };
}

function send(res: http.ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.statusCode = status;
  res.setHeader('content-type', type);
  res.setHeader('cache-control', 'no-store');
  res.setHeader('x-content-type-options', 'nosniff');
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function sendJson(res: http.ServerResponse, status: number, value: unknown): void {
  send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(value)}\n`);
}

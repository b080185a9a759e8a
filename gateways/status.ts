/**
 * `/status.json`: the status page's data, one row per listener and per service, built
 * from the metric values (so that with workers it is the aggregated figures, the same
 * numbers `/metrics` shows) and the readiness verdict. Rates are left to the page, which
 * divides the change between two polls by the time between them.
 */
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { Readiness } from './health.js';

export interface ListenerStatus {
  transport: string;
  listener: string;
  /** up, down (configured, not bound), or closed (gone with a reload: its totals stay). */
  state: 'up' | 'down' | 'closed';
  open: number;
  connections: number;
  refusals: Record<string, number>;
  bytesIn: number;
  bytesOut: number;
  messagesIn: number;
  messagesOut: number;
}

export interface ServiceStatus {
  service: string;
  health: 'up' | 'down' | 'unchecked';
  reason?: string;
  open: number;
  connections: number;
  bytesIn: number;
  bytesOut: number;
  messagesIn: number;
  messagesOut: number;
}

export interface Status {
  name: string;
  pid: number;
  uptimeSeconds: number;
  time: number;
  ready: boolean;
  draining: boolean;
  listeners: ListenerStatus[];
  services: ServiceStatus[];
  lookups: Record<string, number>;
}

type Values = MetricObjectWithValues<MetricValue<string>>[];

export function buildStatus(name: string, startedAt: number, metrics: Values, readiness: Readiness): Status {
  const byName = new Map(metrics.map((m) => [m.name, m.values]));
  const values = (metric: string) => byName.get(metric) ?? [];
  const listeners = new Map<string, ListenerStatus>();
  const listenerOf = (labels: Partial<Record<string, string | number>>): ListenerStatus => {
    const transport = String(labels['transport'] ?? '');
    const listener = String(labels['listener'] ?? '');
    const key = `${transport} ${listener}`;
    let row = listeners.get(key);
    if (!row) {
      row = { transport, listener, state: 'closed', open: 0, connections: 0, refusals: {}, bytesIn: 0, bytesOut: 0, messagesIn: 0, messagesOut: 0 };
      listeners.set(key, row);
    }
    return row;
  };
  const services = new Map<string, ServiceStatus>();
  const serviceOf = (service: string): ServiceStatus => {
    let row = services.get(service);
    if (!row) {
      row = { service, health: 'unchecked', open: 0, connections: 0, bytesIn: 0, bytesOut: 0, messagesIn: 0, messagesOut: 0 };
      services.set(service, row);
    }
    return row;
  };

  for (const v of values('libipc_connections_open')) listenerOf(v.labels).open += v.value;
  for (const v of values('libipc_connections_total')) listenerOf(v.labels).connections += v.value;
  for (const v of values('libipc_refusals_total')) {
    const row = listenerOf(v.labels);
    const code = String(v.labels['code']);
    row.refusals[code] = (row.refusals[code] ?? 0) + v.value;
  }
  for (const [metric, field] of [
    ['libipc_bytes_total', 'bytes'],
    ['libipc_messages_total', 'messages'],
  ] as const) {
    for (const v of values(metric)) {
      const direction = v.labels['direction'] === 'in' ? 'In' : 'Out';
      listenerOf(v.labels)[`${field}${direction}`] += v.value;
      serviceOf(String(v.labels['service']))[`${field}${direction}`] += v.value;
    }
  }
  for (const v of values('libipc_service_connections_open')) serviceOf(String(v.labels['service'])).open += v.value;
  for (const v of values('libipc_service_connections_total')) serviceOf(String(v.labels['service'])).connections += v.value;

  for (const l of readiness.listeners) listenerOf({ transport: l.transport, listener: l.listener }).state = l.bound ? 'up' : 'down';
  for (const s of readiness.services) {
    const row = serviceOf(s.service);
    row.health = s.up ? 'up' : 'down';
    if (s.reason !== undefined) row.reason = s.reason;
  }
  const lookups: Record<string, number> = {};
  for (const v of values('libipc_lookups_total')) lookups[String(v.labels['result'])] = v.value;

  const byKey = <T extends object>(rows: Iterable<T>, key: (t: T) => string) => [...rows].sort((a, b) => key(a).localeCompare(key(b)));
  return {
    name,
    pid: process.pid,
    uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
    time: Date.now(),
    ready: readiness.ready,
    draining: readiness.draining,
    listeners: byKey(listeners.values(), (l) => `${l.transport} ${l.listener}`),
    services: byKey(services.values(), (s) => s.service),
    lookups,
  };
}

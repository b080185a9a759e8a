/**
 * Prometheus metrics of a process's gateways (prom-client), read by the admin listener's
 * `/metrics` and `/status.json`.
 *
 * Nothing here runs per message: every event is counted once per connection (accept,
 * refusal, hand-over, end). Bytes and messages are the switch's own counters (which the
 * data path keeps anyway, for the teardown log line): summed into `closed` when a switch
 * ends, and read from the live switches at scrape time, so a scrape sees a connection
 * that is still open.
 *
 * Labels: `transport` (tcp, tls, ws, wss, unix for outbound, ipcd), `listener` (the
 * configured address), `service`. A client never controls label values: `service` is
 * set only on switched connections, whose service had a socket in `$RUNDIR` (a name that
 * is not served is refused before any label carries it), and refusals carry their code,
 * never the name asked for.
 */
import client, { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { BridgedSwitch as Switch, SwitchSummary } from '../src/switch.js';

/** Where a connection came in: the labels every per-connection metric carries. */
export interface ListenerLabels {
  readonly transport: string;
  readonly listener: string;
}

/** Handshake durations: accept to switch, in seconds (TLS and HTTP upgrades included). */
const HANDSHAKE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

const LINT_FAILING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

type Traffic = { bytesIn: number; bytesOut: number; messagesIn: number; messagesOut: number };
type LiveSwitch = { sw: Switch; labels: ListenerLabels; service: string };

export class GatewayMetrics {
  readonly registry: Registry;
  private readonly accepted: Counter<'transport' | 'listener'>;
  private readonly refusals: Counter<'transport' | 'listener' | 'code'>;
  private readonly handshakes: Histogram<'transport' | 'listener'>;
  private readonly tls: Counter<'listener' | 'result'>;
  private readonly reloads: Counter<'result'>;
  private readonly lookups: Counter<'result'>;
  private readonly switchedTotal: Counter<'transport' | 'listener' | 'service'>;
  /** Traffic of ended switches, by transport, listener and service. */
  private readonly closed = new Map<string, { labels: ListenerLabels; service: string; traffic: Traffic }>();
  /** Switches still open, for scrape-time sums and the open-connection gauge. */
  private readonly live = new Set<LiveSwitch>();
  private readonly liveBySwitch = new Map<Switch, LiveSwitch>();
  /** Connections in their handshakes, by listener (counted at admit, released once). */
  private readonly handshaking = new Map<string, { labels: ListenerLabels; count: number }>();
  /** Listeners that exist, so a scrape shows them at zero before their first client. */
  private readonly listeners = new Map<string, ListenerLabels>();

  /**
   * @param registry where the metrics go (default: a new one; the admin listener serves it).
   * @param defaultMetrics also collect prom-client's process metrics (CPU, memory, fds, event loop).
   */
  constructor(options: { registry?: Registry; defaultMetrics?: boolean } = {}) {
    this.registry = options.registry ?? new Registry();
    const registers = [this.registry];
    if (options.defaultMetrics ?? true) {
      client.collectDefaultMetrics({ register: this.registry });
      // Gauges named like counters, which `promtool check metrics` refuses; their totals
      // are the sums of nodejs_active_{handles,requests,resources} by type.
      for (const name of LINT_FAILING_DEFAULTS) this.registry.removeSingleMetric(name);
    }
    this.accepted = new Counter({
      name: 'libipc_connections_total',
      help: 'Client connections accepted (refused ones included)',
      labelNames: ['transport', 'listener'] as const,
      registers,
    });
    this.refusals = new Counter({
      name: 'libipc_refusals_total',
      help: 'Client connections refused before their switch, by error code (docs/errors.md)',
      labelNames: ['transport', 'listener', 'code'] as const,
      registers,
    });
    this.handshakes = new Histogram({
      name: 'libipc_handshake_duration_seconds',
      help: 'Time from accept to the switch (PROXY header, TLS, name or HTTP upgrade, service connect)',
      labelNames: ['transport', 'listener'] as const,
      buckets: HANDSHAKE_BUCKETS,
      registers,
    });
    this.tls = new Counter({
      name: 'libipc_tls_handshakes_total',
      help: 'TLS handshakes by result (ok, failed, refused: client identity not allowed)',
      labelNames: ['listener', 'result'] as const,
      registers,
    });
    this.reloads = new Counter({
      name: 'libipc_reloads_total',
      help: 'Configuration reloads by result (ok, refused: the file was rejected, partial: a gateway could not start)',
      labelNames: ['result'] as const,
      registers,
    });
    this.lookups = new Counter({
      name: 'libipc_lookups_total',
      help: 'ipcd lookups by result (ok, or the error code of the refusal)',
      labelNames: ['result'] as const,
      registers,
    });
    this.switchedTotal = new Counter({
      name: 'libipc_service_connections_total',
      help: 'Client connections switched to a service',
      labelNames: ['transport', 'listener', 'service'] as const,
      registers,
    });
    const self = this;
    new Gauge({
      name: 'libipc_service_connections_open',
      help: 'Switched client connections open now, by service',
      labelNames: ['transport', 'listener', 'service'] as const,
      registers,
      collect() {
        this.reset();
        for (const c of self.closed.values()) this.set({ ...c.labels, service: c.service }, 0);
        for (const { labels, service } of self.live) this.inc({ ...labels, service }, 1);
      },
    });
    new Gauge({
      name: 'libipc_connections_open',
      help: 'Client connections open now (in their handshakes or switched)',
      labelNames: ['transport', 'listener'] as const,
      registers,
      collect() {
        this.reset();
        for (const labels of self.listeners.values()) this.set({ ...labels }, 0);
        for (const { labels, count } of self.handshaking.values()) this.inc({ ...labels }, count);
        for (const { labels } of self.live) this.inc({ ...labels }, 1);
      },
    });
    const traffic = (name: string, help: string, fields: [keyof Traffic, keyof Traffic]) =>
      new Counter({
        name,
        help,
        labelNames: ['transport', 'listener', 'service', 'direction'] as const,
        registers,
        collect() {
          // Counters rebuilt from totals that only grow: closed switches plus live ones.
          this.reset();
          const add = (labels: ListenerLabels, service: string, t: Traffic) => {
            this.inc({ ...labels, service, direction: 'in' }, t[fields[0]]);
            this.inc({ ...labels, service, direction: 'out' }, t[fields[1]]);
          };
          for (const c of self.closed.values()) add(c.labels, c.service, c.traffic);
          for (const l of self.live) add(l.labels, l.service, trafficOf(l.sw));
        },
      });
    traffic('libipc_bytes_total', 'Bytes of libipc frames (headers included): in = from clients, out = to clients', ['bytesIn', 'bytesOut']);
    traffic('libipc_messages_total', 'libipc messages: in = from clients to services, out = from services to clients', ['messagesIn', 'messagesOut']);
  }

  /** A listener that exists (shown at zero until its first client). */
  listenerUp(labels: ListenerLabels): void {
    this.listeners.set(labelKey(labels), labels);
  }

  /** A client was accepted by `labels`'s listener (before admission). */
  connectionAccepted(labels: ListenerLabels): void {
    this.accepted.inc({ transport: labels.transport, listener: labels.listener });
  }

  /** A client was admitted and is in its handshakes; `handshakeEnded` follows once. */
  handshakeStarted(labels: ListenerLabels): void {
    const key = labelKey(labels);
    const entry = this.handshaking.get(key);
    if (entry) entry.count++;
    else this.handshaking.set(key, { labels, count: 1 });
  }

  handshakeEnded(labels: ListenerLabels): void {
    const entry = this.handshaking.get(labelKey(labels));
    if (entry && entry.count > 0) entry.count--;
  }

  refused(labels: ListenerLabels, code: string): void {
    this.refusals.inc({ transport: labels.transport, listener: labels.listener, code });
  }

  tlsHandshake(labels: ListenerLabels, result: 'ok' | 'failed' | 'refused'): void {
    this.tls.inc({ listener: labels.listener, result });
  }

  /** A pending connection became a switch to `service`, `seconds` after accept. */
  switched(sw: Switch, labels: ListenerLabels, service: string, seconds: number): void {
    this.handshakes.observe({ transport: labels.transport, listener: labels.listener }, seconds);
    this.switchedTotal.inc({ transport: labels.transport, listener: labels.listener, service });
    const live = { sw, labels, service };
    this.live.add(live);
    this.liveBySwitch.set(sw, live);
  }

  /** A switch ended: its traffic moves from the live set to the totals. */
  switchEnded(sw: Switch, summary: SwitchSummary): void {
    const live = this.liveBySwitch.get(sw);
    if (!live) return;
    this.liveBySwitch.delete(sw);
    this.live.delete(live);
    const key = `${labelKey(live.labels)}\0${live.service}`;
    let entry = this.closed.get(key);
    if (!entry) {
      entry = { labels: live.labels, service: live.service, traffic: { bytesIn: 0, bytesOut: 0, messagesIn: 0, messagesOut: 0 } };
      this.closed.set(key, entry);
    }
    entry.traffic.bytesIn += summary.bytesIn;
    entry.traffic.bytesOut += summary.bytesOut;
    entry.traffic.messagesIn += summary.messagesIn;
    entry.traffic.messagesOut += summary.messagesOut;
  }

  reload(result: 'ok' | 'refused' | 'partial'): void {
    this.reloads.inc({ result });
  }

  lookup(result: string): void {
    this.lookups.inc({ result });
  }
}

function trafficOf(sw: Switch): Traffic {
  return {
    bytesIn: sw.client.bytesIn,
    bytesOut: sw.client.bytesOut,
    messagesIn: sw.client.messagesIn,
    messagesOut: sw.service.messagesIn,
  };
}

function labelKey(labels: ListenerLabels): string {
  return `${labels.transport}\0${labels.listener}`;
}

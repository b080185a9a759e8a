/**
 * Metrics with workers: each worker counts in its own registry; the primary (which holds
 * the admin listener, the outbound services and ipcd) asks every live worker for its
 * values over the cluster IPC channel at scrape time and adds them to its own with
 * prom-client's aggregation (counters and our gauges summed; process metrics by their
 * own rule). A worker that does not answer within the timeout is not waited for (a scrape
 * must not hang on a stuck worker): its last answer stands in for it.
 *
 * Counters must never go down: the counters and histograms of a worker that is gone (it
 * died and was restarted, or was stopped) stay in the sum as its last answer gave them,
 * while its gauges (open connections) leave with it.
 */
import type { Worker } from 'node:cluster';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue, type Registry } from 'prom-client';
import type { MetricsSource } from './admin.js';
import type { Logger } from '../src/log.js';

type Values = MetricObjectWithValues<MetricValue<string>>[];

const REQUEST = 'libipc:metrics?';
const RESPONSE = 'libipc:metrics!';

/** Worker side: answers the primary's metric requests with `registry`'s values. */
export function answerMetricRequests(registry: Registry): void {
  process.on('message', (message: { type?: string; id?: number }) => {
    if (message?.type !== REQUEST) return;
    void registry.getMetricsAsJSON().then((values) => process.send?.({ type: RESPONSE, id: message.id, values }));
  });
}

/** Primary side: the metrics of `own` plus those of every worker `workers()` returns. */
export function clusterMetricsSource(own: Registry, workers: () => readonly Worker[], logger: Logger, timeoutMs = 2000): MetricsSource {
  let nextId = 1;
  /** Each worker's last answer, by pid. */
  const last = new Map<number, Values>();
  /** The counters and histograms of workers that are gone, as their last answers gave them. */
  let retired: Values[] = [];
  const ask = (worker: Worker): Promise<Values | null> =>
    new Promise((resolve) => {
      const id = nextId++;
      const onMessage = (message: { type?: string; id?: number; values?: Values }) => {
        if (message?.type !== RESPONSE || message.id !== id) return;
        done(message.values ?? null);
      };
      const done = (values: Values | null) => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('exit', onExit);
        resolve(values);
      };
      const onExit = () => done(null);
      const timer = setTimeout(() => {
        logger.warn({ worker: worker.process.pid }, 'metrics: a worker did not answer in time; its last answer stands in');
        done(null);
      }, timeoutMs);
      worker.on('message', onMessage);
      worker.once('exit', onExit);
      try {
        worker.send({ type: REQUEST, id });
      } catch {
        done(null);
      }
    });
  const aggregated = async (): Promise<Registry> => {
    const live = workers().filter((w) => w.isConnected());
    const answers = await Promise.all(live.map(ask));
    const livePids = new Set<number>();
    live.forEach((worker, i) => {
      const pid = worker.process.pid!;
      livePids.add(pid);
      if (answers[i]) last.set(pid, answers[i]!);
    });
    for (const [pid, values] of last) {
      if (livePids.has(pid)) continue;
      last.delete(pid);
      retired.push(values.filter((m) => ['counter', 'histogram'].includes(String(m.type))) as Values);
    }
    if (retired.length > 8) retired = [(await AggregatorRegistry.aggregate(retired as Aggregatable).getMetricsAsJSON()) as Values];
    const all = [(await own.getMetricsAsJSON()) as Values, ...last.values(), ...retired];
    return AggregatorRegistry.aggregate(all as Aggregatable);
  };
  return {
    contentType: own.contentType,
    text: async () => (await aggregated()).metrics(),
    json: async () => (await (await aggregated()).getMetricsAsJSON()) as Values,
  };
}

type Aggregatable = Parameters<typeof AggregatorRegistry.aggregate>[0];

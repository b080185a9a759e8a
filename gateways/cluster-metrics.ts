/**
 * Metrics with workers: each worker counts in its own registry; the primary (which holds
 * the admin listener, the outbound services and ipcd) asks every live worker for its
 * values over the cluster IPC channel at scrape time and adds them to its own with
 * prom-client's aggregation (counters and our gauges summed; process metrics by their
 * own rule). A worker that does not answer within the timeout is left out of that scrape
 * (logged), never waited for: a scrape must not hang on a stuck worker.
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
        logger.warn({ worker: worker.process.pid }, 'metrics: a worker did not answer in time; left out of this scrape');
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
    const parts = await Promise.all(workers().filter((w) => w.isConnected()).map(ask));
    const all = [(await own.getMetricsAsJSON()) as Values, ...parts.filter((p): p is Values => p !== null)];
    return AggregatorRegistry.aggregate(all as Parameters<typeof AggregatorRegistry.aggregate>[0]);
  };
  return {
    contentType: own.contentType,
    text: async () => (await aggregated()).metrics(),
    json: async () => (await (await aggregated()).getMetricsAsJSON()) as Values,
  };
}

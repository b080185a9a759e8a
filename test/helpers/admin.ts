/**
 * Reading a daemon's admin listener in tests: its port from the `listening` line, a
 * scrape of /metrics, and one sample's value by exact labels (Prometheus text format).
 */
import type { Daemon } from './daemon.js';

/** The admin listener's port, once the daemon logged it. */
export async function adminPort(daemon: Daemon): Promise<number> {
  const line = await daemon.log.waitFor((l) => l.msg === 'listening' && l['transport'] === 'admin', 15_000, 'admin listening');
  return line['port'] as number;
}

export async function scrape(port: number, host = '127.0.0.1'): Promise<string> {
  const res = await fetch(`http://${host}:${port}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics: HTTP ${res.status}`);
  return res.text();
}

/** Every sample line of the text: `name{labels} value`, parsed. */
export function seriesOf(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[key!] = value!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the sample `name` whose labels are exactly `labels`; undefined when absent. */
export function metricValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  const wanted = Object.entries(labels).sort().join('\n');
  const found = seriesOf(text).find((s) => s.name === name && Object.entries(s.labels).sort().join('\n') === wanted);
  return found?.value;
}

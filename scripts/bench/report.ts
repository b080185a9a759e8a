/**
 * From runs to the table: medians over rounds per workload and target, throughput as a
 * ratio to the direct Unix socket, and each gateway's CPU per message as a ratio to its
 * anchor's (the naive Node pipe for tcpd) taken in the same run.
 */
import type { TargetSpec } from './targets.js';
import type { IpcbenchResult, RunOutcome, Workload } from './workloads.js';

/** The issue's floor: a gateway's CPU per message within 10 % of the naive Node pipe's. */
export const CPU_FLOOR = 1.1;

export interface Run {
  workload: Workload;
  target: TargetSpec;
  round: number;
  outcome: RunOutcome;
  /** Cores other processes used during the run (null when unknown). */
  background: number | null;
}

export interface Row {
  workload: string;
  title: string;
  target: string;
  role: TargetSpec['role'];
  rounds: number;
  unit: string;
  /** Median throughput over the rounds with a result. */
  rate: number | null;
  /** rate / the baseline's rate. */
  vsBaseline: number | null;
  /** Median CPU µs per message (per connection in connect mode) of the target's process. */
  cpu: number | null;
  cpuMin: number | null;
  cpuMax: number | null;
  /** cpu / the anchor's cpu (gateways only), and the anchor's name. */
  cpuVs: number | null;
  cpuVsName: string | null;
  /** Median p50 and p99 latency, µs (rr: round trip; connect: connect to verified echo). */
  p50: number | null;
  p99: number | null;
  errors: { verify: number; length: number; other: number };
  /** Highest background load (cores used by other processes) over the rounds. */
  background: number | null;
  /** Runs that did not produce a usable result, with why. */
  failures: string[];
}

export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

function rateOf(r: IpcbenchResult, w: Workload): number | undefined {
  return r[w.metric];
}

/** One row per workload and target, in the order given. */
export function summarize(runs: readonly Run[], workloads: readonly Workload[], targets: readonly TargetSpec[]): Row[] {
  const rows: Row[] = [];
  const baseline = targets.find((t) => t.role === 'baseline');
  for (const w of workloads) {
    const byTarget = new Map<string, Row>();
    for (const t of targets) {
      const mine = runs.filter((r) => r.workload.id === w.id && r.target.name === t.name);
      if (mine.length === 0) continue;
      const results = mine.map((r) => r.outcome.result).filter((r): r is IpcbenchResult => r !== null);
      const rates = results.map((r) => rateOf(r, w)).filter((x): x is number => typeof x === 'number');
      const cpus = results.map((r) => r.cpu?.pids[0]?.us_per_msg).filter((x): x is number => typeof x === 'number');
      const lat = results.map((r) => (w.mode === 'connect' ? r.cycle_us : r.lat_us)).filter((x) => x !== undefined);
      const errors = { verify: 0, length: 0, other: 0 };
      for (const r of results) {
        errors.verify += r.errors['verify'] ?? 0;
        errors.length += r.errors['length'] ?? 0;
        errors.other += r.errors_total - (r.errors['verify'] ?? 0) - (r.errors['length'] ?? 0);
      }
      const row: Row = {
        workload: w.id,
        title: w.title,
        target: t.name,
        role: t.role,
        rounds: mine.length,
        unit: w.unit,
        rate: median(rates),
        vsBaseline: null,
        cpu: median(cpus),
        cpuMin: cpus.length ? Math.min(...cpus) : null,
        cpuMax: cpus.length ? Math.max(...cpus) : null,
        cpuVs: null,
        cpuVsName: t.cpuVs ?? null,
        p50: median(lat.map((l) => l.p50)),
        p99: median(lat.map((l) => l.p99)),
        errors,
        background: mine.some((r) => r.background !== null)
          ? Math.max(...mine.map((r) => r.background ?? 0))
          : null,
        failures: mine.filter((r) => r.outcome.failure !== null).map((r) => `round ${r.round}: ${r.outcome.failure}`),
      };
      byTarget.set(t.name, row);
      rows.push(row);
    }
    const base = baseline ? byTarget.get(baseline.name) : undefined;
    for (const row of byTarget.values()) {
      if (base?.rate && row.rate !== null) row.vsBaseline = row.rate / base.rate;
      const anchor = row.cpuVsName ? byTarget.get(row.cpuVsName) : undefined;
      if (anchor?.cpu && row.cpu !== null) row.cpuVs = row.cpu / anchor.cpu;
    }
  }
  return rows;
}

function fmtRate(v: number | null, unit: string): string {
  return v === null ? '-' : `${Math.round(v).toLocaleString('en-US')} ${unit}`;
}

function fmt(v: number | null, digits: number): string {
  return v === null ? '-' : v.toFixed(digits);
}

function fmtCpu(row: Row): string {
  if (row.cpu === null) return '-';
  const digits = row.cpu >= 100 ? 0 : 1;
  const range = row.rounds > 1 && row.cpuMin !== null && row.cpuMax !== null && row.cpuMin !== row.cpuMax
    ? ` (${row.cpuMin.toFixed(digits)}-${row.cpuMax.toFixed(digits)})`
    : '';
  return `${row.cpu.toFixed(digits)}${range}`;
}

function fmtCpuVs(row: Row): string {
  if (row.cpuVs === null) return row.role === 'gateway' ? `- (no ${row.cpuVsName ?? 'anchor'})` : '';
  return `${row.cpuVs.toFixed(2)} ${row.cpuVs <= CPU_FLOOR ? 'ok' : 'OVER'}`;
}

function fmtErrors(row: Row): string {
  const { verify, length, other } = row.errors;
  const parts: string[] = [];
  if (verify) parts.push(`verify ${verify}`);
  if (length) parts.push(`length ${length}`);
  if (other) parts.push(`other ${other}`);
  if (row.failures.length) parts.push(`${row.failures.length} failed run(s)`);
  return parts.length ? parts.join(', ') : '0';
}

/** A Markdown table (readable in a terminal, pastes into docs/benchmarks.md). */
export function table(rows: readonly Row[]): string {
  const header = ['workload', 'target', 'throughput', 'vs unix', 'CPU µs/msg (range)', 'CPU vs anchor', 'p50 µs', 'p99 µs', 'bg', 'errors'];
  const lines: string[][] = [];
  let last = '';
  for (const row of rows) {
    lines.push([
      row.workload === last ? '' : row.title,
      row.target,
      fmtRate(row.rate, row.unit),
      fmt(row.vsBaseline, 2),
      row.role === 'baseline' ? `${fmtCpu(row)} echod` : fmtCpu(row),
      fmtCpuVs(row),
      fmt(row.p50, 0),
      fmt(row.p99, 0),
      fmt(row.background, 2),
      fmtErrors(row),
    ]);
    last = row.workload;
  }
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const right = new Set([2, 3, 4, 6, 7, 8]);
  const cell = (s: string, i: number) => (right.has(i) ? s.padStart(widths[i]!) : s.padEnd(widths[i]!));
  const out = [
    `| ${header.map(cell).join(' | ')} |`,
    `|${widths.map((w, i) => (right.has(i) ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`,
    ...lines.map((l) => `| ${l.map(cell).join(' | ')} |`),
  ];
  return out.join('\n');
}

/** One line per gateway: its CPU ratios and whether the floor holds. */
export function floorSummary(rows: readonly Row[]): string[] {
  const out: string[] = [];
  const gateways = [...new Set(rows.filter((r) => r.role === 'gateway').map((r) => r.target))];
  for (const g of gateways) {
    const mine = rows.filter((r) => r.target === g && r.cpuVs !== null);
    if (mine.length === 0) continue;
    const met = mine.filter((r) => r.cpuVs! <= CPU_FLOOR).length;
    const list = mine.map((r) => `${r.workload} ${r.cpuVs!.toFixed(2)}`).join(', ');
    out.push(
      `${g}: CPU per message / ${mine[0]!.cpuVsName}'s: ${list} -> within ${CPU_FLOOR.toFixed(2)}x in ${met}/${mine.length} workloads`,
    );
  }
  return out;
}

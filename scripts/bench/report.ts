/**
 * From runs to the table: medians over rounds per workload and target, throughput as a
 * ratio to the baseline (the direct Unix socket; for the chain, the same Node client
 * straight to the Unix socket), and each gateway's CPU per message as a ratio to its
 * anchor's (the naive Node pipe for tcpd and wsd, the naive TLS pipe for tlsd) taken in
 * the same run, and to its peer's (HAProxy for tcpd and tlsd, websockify for wsd); the
 * idle workload's memory per held connection in a table of its own; the issue's table (one
 * row per workload, one column per proxy); then summary lines (floors, peers, wsd vs
 * websockify, the chain's CPU by process).
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
  /** Why the target did not run at all (say, not installed), else null. */
  note: string | null;
  /** Chain: median CPU µs per message of each process (ipcd, tcpd A, tcpd B, echod). */
  cpuParts: { name: string; us: number }[] | null;
  /** Idle: the target's memory per held connection (medians over the rounds), else null. */
  mem: IdleMemory | null;
  /** The peer (HAProxy, websockify) and cpu / its cpu (idle: RSS per connection / its). */
  peerName: string | null;
  peerRatio: number | null;
}

export interface IdleMemory {
  /** Bytes per connection: (held - before) / opened, VmRSS and Pss of the process tree. */
  rssPerConn: number;
  rssMin: number;
  rssMax: number;
  pssPerConn: number | null;
  /** Process tree RSS before opening and after the hold, kB. */
  baseRssKb: number | null;
  heldRssKb: number | null;
  /** Connections still echoing after the hold (median), and seconds to open them. */
  stillOk: number | null;
  openS: number | null;
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

/** The CPU figure of a result: the chain's sum over its gateways, else the first pid's. */
export function cpuFigure(r: IpcbenchResult): number | undefined {
  return r.cpu?.figure_us_per_msg ?? r.cpu?.pids[0]?.us_per_msg;
}

/** One row per workload and target, in the order given. */
export function summarize(runs: readonly Run[], workloads: readonly Workload[], targets: readonly TargetSpec[]): Row[] {
  const rows: Row[] = [];
  for (const w of workloads) {
    const byTarget = new Map<string, Row>();
    for (const t of targets) {
      const mine = runs.filter((r) => r.workload.id === w.id && r.target.name === t.name);
      if (mine.length === 0) continue;
      const results = mine.map((r) => r.outcome.result).filter((r): r is IpcbenchResult => r !== null);
      const rates = results.map((r) => rateOf(r, w)).filter((x): x is number => typeof x === 'number');
      const cpus = results.map(cpuFigure).filter((x): x is number => typeof x === 'number');
      const lat = results.map((r) => (w.mode === 'connect' || w.mode === 'lookup' ? r.cycle_us : r.lat_us)).filter((x) => x !== undefined);
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
        note: mine.find((r) => r.outcome.status === 'unavailable')?.outcome.stderr ?? null,
        cpuParts: cpuParts(results),
        mem: w.mode === 'idle' ? idleMemory(results) : null,
        peerName: t.peer ?? null,
        peerRatio: null,
      };
      byTarget.set(t.name, row);
      rows.push(row);
    }
    for (const row of byTarget.values()) {
      const spec = targets.find((t) => t.name === row.target)!;
      const base = byTarget.get(spec.role === 'baseline' ? spec.name : (spec.baseline ?? 'unix'));
      if (base?.rate && row.rate !== null) row.vsBaseline = row.rate / base.rate;
      const anchor = row.cpuVsName ? byTarget.get(row.cpuVsName) : undefined;
      if (anchor?.cpu && row.cpu !== null) row.cpuVs = row.cpu / anchor.cpu;
      const peer = row.peerName ? byTarget.get(row.peerName) : undefined;
      if (peer?.cpu && row.cpu !== null) row.peerRatio = row.cpu / peer.cpu;
      if (peer?.mem?.rssPerConn && row.mem) row.peerRatio = row.mem.rssPerConn / peer.mem.rssPerConn;
    }
  }
  return rows;
}

function idleMemory(results: readonly IpcbenchResult[]): IdleMemory | null {
  const num = (xs: (number | undefined)[]) => xs.filter((x): x is number => typeof x === 'number');
  const rss = num(results.map((r) => r.rss_per_conn_bytes));
  if (rss.length === 0) return null;
  return {
    rssPerConn: median(rss)!,
    rssMin: Math.min(...rss),
    rssMax: Math.max(...rss),
    pssPerConn: median(num(results.map((r) => r.pss_per_conn_bytes))),
    baseRssKb: median(num(results.map((r) => r.mem?.base.rss_kb))),
    heldRssKb: median(num(results.map((r) => r.mem?.held.rss_kb))),
    stillOk: median(num(results.map((r) => r.still_echo_ok))),
    openS: median(num(results.map((r) => r.open_s))),
  };
}

/** Median CPU per message of each named process (chain lines name theirs), or null. */
function cpuParts(results: readonly IpcbenchResult[]): Row['cpuParts'] {
  const names = results[0]?.cpu?.pids.map((p) => p.name).filter((n): n is string => typeof n === 'string') ?? [];
  if (names.length === 0) return null;
  return names.map((name) => ({
    name,
    us: median(results.map((r) => r.cpu?.pids.find((p) => p.name === name)?.us_per_msg).filter((x): x is number => typeof x === 'number')) ?? 0,
  }));
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
  if (row.cpuVs === null) return row.role === 'gateway' && row.cpuVsName ? `- (no ${row.cpuVsName})` : '';
  return `${row.cpuVs.toFixed(2)} ${row.cpuVs <= CPU_FLOOR ? 'ok' : 'OVER'}`;
}

function fmtErrors(row: Row): string {
  const { verify, length, other } = row.errors;
  const parts: string[] = [];
  if (verify) parts.push(`verify ${verify}`);
  if (length) parts.push(`length ${length}`);
  if (other) parts.push(`other ${other}`);
  if (row.failures.length) parts.push(`${row.failures.length} failed run(s)`);
  if (row.note) return `not run: ${row.note}`;
  return parts.length ? parts.join(', ') : '0';
}

/** A Markdown table (readable in a terminal, pastes into docs/benchmarks.md). */
export function table(rows: readonly Row[]): string {
  const header = ['workload', 'target', 'throughput', 'vs unix', 'CPU µs/msg (range)', 'CPU vs anchor', 'p50 µs', 'p99 µs', 'bg', 'errors'];
  const lines: string[][] = [];
  let last = '';
  for (const row of rows) {
    if (row.workload === 'idle') continue; // idleTable
    lines.push([
      row.workload === last ? '' : row.title,
      row.target,
      fmtRate(row.rate, row.unit),
      fmt(row.vsBaseline, 2),
      row.role === 'baseline' && row.cpu !== null ? `${fmtCpu(row)} echod` : fmtCpu(row),
      fmtCpuVs(row),
      fmt(row.p50, 0),
      fmt(row.p99, 0),
      fmt(row.background, 2),
      fmtErrors(row),
    ]);
    last = row.workload;
  }
  return markdown(header, lines, new Set([2, 3, 4, 6, 7, 8]));
}

/** A Markdown table with aligned columns; `right`: the right-aligned column indexes. */
function markdown(header: readonly string[], lines: readonly string[][], right: ReadonlySet<number>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const cell = (s: string, i: number) => (right.has(i) ? s.padStart(widths[i]!) : s.padEnd(widths[i]!));
  const out = [
    `| ${header.map(cell).join(' | ')} |`,
    `|${widths.map((w, i) => (right.has(i) ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`,
    ...lines.map((l) => `| ${l.map(cell).join(' | ')} |`),
  ];
  return out.join('\n');
}

function fmtBytes(v: number | null | undefined): string {
  return v === null || v === undefined ? '-' : Math.round(v).toLocaleString('en-US');
}

/** The idle workload: memory per held connection of each target, or '' when it did not run. */
export function idleTable(rows: readonly Row[]): string {
  const idle = rows.filter((r) => r.workload === 'idle');
  if (idle.length === 0) return '';
  const header = [idle[0]!.title, 'still echo', 'open s', 'RSS before -> held', 'RSS B/conn (range)', 'PSS B/conn', 'RSS vs peer', 'errors'];
  const mb = (kb: number | null) => (kb === null ? '-' : `${(kb / 1024).toFixed(1)} MB`);
  const lines = idle.map((r) => {
    const m = r.mem;
    const range = m && r.rounds > 1 && m.rssMin !== m.rssMax ? ` (${fmtBytes(m.rssMin)}-${fmtBytes(m.rssMax)})` : '';
    return [
      r.target,
      m?.stillOk === null || m === null ? '-' : fmtBytes(m.stillOk),
      m?.openS === null || m === null ? '-' : m.openS.toFixed(2),
      m ? `${mb(m.baseRssKb)} -> ${mb(m.heldRssKb)}` : '-',
      m ? `${fmtBytes(m.rssPerConn)}${range}` : '-',
      fmtBytes(m?.pssPerConn),
      r.peerRatio === null
        ? peerMissing(idle, r.peerName)
        : `${r.peerRatio.toFixed(2)} (${r.peerName})`,
      fmtErrors(r),
    ];
  });
  return markdown(header, lines, new Set([1, 2, 3, 4, 5]));
}

/** Why an idle row has no ratio to its peer. */
function peerMissing(idle: readonly Row[], peer: string | null): string {
  if (!peer) return '';
  const row = idle.find((p) => p.target === peer);
  if (!row) return `- (${peer}: no idle run)`;
  return row.note ? `- (${peer} not run)` : `- (${peer} failed)`;
}

/** The issue's columns, in its order, with their headings. */
const ISSUE_COLUMNS: readonly { target: string; heading: string }[] = [
  { target: 'unix', heading: 'direct Unix (echod)' },
  { target: 'haproxy', heading: 'HAProxy 1 thread' },
  { target: 'tcpd-ref', heading: 'tcpd before' },
  { target: 'tcpd', heading: 'tcpd' },
  { target: 'tcpd-js', heading: 'tcpd js switch' },
  { target: 'node-pipe', heading: 'naive Node pipe' },
  { target: 'haproxy-tls', heading: 'HAProxy TLS' },
  { target: 'tlsd-ref', heading: 'tlsd before' },
  { target: 'tlsd', heading: 'tlsd' },
  { target: 'websockify', heading: 'websockify' },
  { target: 'wsd-ref', heading: 'wsd before' },
  { target: 'wsd', heading: 'wsd' },
];

/** The ratio columns: gateway / its peer (CPU per message; idle: RSS per connection). */
const ISSUE_RATIOS: readonly { gateway: string; peer: string; heading: string }[] = [
  { gateway: 'tcpd-ref', peer: 'haproxy', heading: 'tcpd before/HAProxy' },
  { gateway: 'tcpd', peer: 'haproxy', heading: 'tcpd/HAProxy' },
  { gateway: 'tcpd-js', peer: 'haproxy', heading: 'tcpd js/HAProxy' },
  { gateway: 'tlsd-ref', peer: 'haproxy-tls', heading: 'tlsd before/HAProxy TLS' },
  { gateway: 'tlsd', peer: 'haproxy-tls', heading: 'tlsd/HAProxy TLS' },
  { gateway: 'wsd-ref', peer: 'websockify', heading: 'wsd before/websockify' },
  { gateway: 'wsd', peer: 'websockify', heading: 'wsd/websockify' },
  { gateway: 'wsd', peer: 'node-pipe', heading: 'wsd/naive Node pipe' },
];

/**
 * The issue's table: one row per ipcbench workload, one column per proxy (those that ran):
 * CPU µs per message (connect: per connection) and throughput as a ratio to the direct
 * Unix run; for idle, RSS bytes per held connection. Then the gateway/peer ratios.
 */
export function issueTable(rows: readonly Row[]): string {
  const present = new Set(rows.map((r) => r.target));
  const columns = ISSUE_COLUMNS.filter((c) => present.has(c.target));
  const ratios = ISSUE_RATIOS.filter((c) => present.has(c.gateway) && present.has(c.peer));
  if (columns.length < 2) return '';
  const workloads = [...new Set(rows.filter((r) => columns.some((c) => c.target === r.target)).map((r) => r.workload))];
  const lines = workloads.map((id) => {
    const mine = rows.filter((r) => r.workload === id);
    const cellOf = (target: string): string => {
      const r = mine.find((x) => x.target === target);
      if (!r) return '';
      if (r.note) return 'not run';
      if (r.mem) return `${fmtBytes(r.mem.rssPerConn)} B`;
      if (r.mem === null && id === 'idle') return r.failures.length ? 'failed' : '-';
      if (r.cpu === null) return r.failures.length ? 'failed' : '-';
      const cpu = r.cpu >= 100 ? r.cpu.toFixed(0) : r.cpu.toFixed(1);
      return `${cpu} µs${r.vsBaseline === null || r.role === 'baseline' ? '' : `, ${r.vsBaseline.toFixed(2)}x`}`;
    };
    // Computed from the two cells (not the row's own peer), so a gateway can be set beside
    // more than one proxy (wsd: websockify and the naive Node pipe).
    const ratioOf = (gateway: string, peer: string): string => {
      const g = mine.find((x) => x.target === gateway);
      const p = mine.find((x) => x.target === peer);
      if (!g || !p || g.note || p.note) return '';
      if (g.mem && p.mem?.rssPerConn) return (g.mem.rssPerConn / p.mem.rssPerConn).toFixed(2);
      return g.cpu !== null && p.cpu ? (g.cpu / p.cpu).toFixed(2) : '';
    };
    return [mine[0]!.title, ...columns.map((c) => cellOf(c.target)), ...ratios.map((c) => ratioOf(c.gateway, c.peer))];
  });
  const header = ['workload', ...columns.map((c) => c.heading), ...ratios.map((c) => c.heading)];
  return markdown(header, lines, new Set(header.map((_, i) => i).filter((i) => i > 0)));
}

/**
 * One line per gateway: its CPU ratios and whether the floor holds; for a gateway with a
 * throughput reference (wsd: websockify), its throughput ratios and the goal; for the
 * chain, the CPU per message by process.
 */
export function floorSummary(rows: readonly Row[], targets: readonly TargetSpec[] = []): string[] {
  const out: string[] = [];
  const gateways = [...new Set(rows.filter((r) => r.role === 'gateway').map((r) => r.target))];
  for (const g of gateways) {
    const spec = targets.find((t) => t.name === g);
    const mine = rows.filter((r) => r.target === g && r.cpuVs !== null);
    if (mine.length > 0) {
      const met = mine.filter((r) => r.cpuVs! <= CPU_FLOOR).length;
      const list = mine.map((r) => `${r.workload} ${r.cpuVs!.toFixed(2)}`).join(', ');
      out.push(
        `${g}: CPU per message / ${mine[0]!.cpuVsName}'s: ${list} -> within ${CPU_FLOOR.toFixed(2)}x in ${met}/${mine.length} workloads`,
      );
    }
    const peered = rows.filter((r) => r.target === g && r.peerRatio !== null);
    if (peered.length > 0 && (peered.some((r) => r.mem) || spec?.rateVs?.name !== peered[0]!.peerName)) {
      // wsd's CPU ratio to websockify is on its throughput line (rateLines) already.
      const cpu = spec?.rateVs?.name === peered[0]!.peerName ? [] : peered.filter((r) => !r.mem).map((r) => `${r.workload} ${r.peerRatio!.toFixed(2)}`);
      const mem = peered.find((r) => r.mem);
      out.push(
        `${g}: vs ${peered[0]!.peerName}:` +
          `${cpu.length ? ` CPU per message / its: ${cpu.join(', ')}` : ''}` +
          `${cpu.length && mem ? ';' : ''}` +
          `${mem ? ` idle RSS per connection / its: ${mem.peerRatio!.toFixed(2)} (${fmtBytes(mem.mem!.rssPerConn)} vs ${fmtBytes(rows.find((r) => r.workload === 'idle' && r.target === mem.peerName)?.mem?.rssPerConn)} B)` : ''}`,
      );
    }
    if (spec?.rateVs) out.push(...rateLines(rows, g, spec));
    if (spec?.compareWith) out.push(...sameRunLines(rows, g, spec.compareWith));
    const parts = rows.filter((r) => r.target === g && r.cpuParts);
    if (parts.length > 0) {
      const list = parts.map((r) => {
        const gw = r.cpuParts!.filter((p) => p.name !== 'echod');
        const echod = r.cpuParts!.find((p) => p.name === 'echod');
        return `${r.workload}: ${gw.map((p) => `${p.name} ${p.us.toFixed(1)}`).join(' + ')} = ${gw.reduce((s, p) => s + p.us, 0).toFixed(1)} µs${echod ? ` (echod ${echod.us.toFixed(1)})` : ''}`;
      });
      out.push(`${g}: CPU per message/lookup by process (medians): ${list.join('; ')}`);
    }
  }
  return out;
}

/** A gateway against another of ours in the same run (gatewayd-N against tcpd): CPU and throughput ratios. */
function sameRunLines(rows: readonly Row[], g: string, other: string): string[] {
  const pairs = rows
    .filter((r) => r.target === g && r.mem === null)
    .map((r) => ({ r, o: rows.find((x) => x.workload === r.workload && x.target === other) }))
    .filter((p) => p.o !== undefined);
  const parts = pairs.map(({ r, o }) => {
    const cpu = r.cpu !== null && o!.cpu !== null ? `CPU ${r.cpu.toFixed(1)} vs ${o!.cpu.toFixed(1)} µs/${r.workload.startsWith('connect') ? 'conn' : 'msg'} = ${(r.cpu / o!.cpu).toFixed(2)}x` : 'CPU -';
    const rate = r.rate !== null && o!.rate ? `throughput ${(r.rate / o!.rate).toFixed(2)}x` : 'throughput -';
    return `${r.workload}: ${cpu}, ${rate}`;
  });
  return parts.length ? [`${g}: vs ${other} (same run): ${parts.join('; ')}`] : [];
}

/** Throughput / the reference's (wsd / websockify), or, without it, the fallback figures. */
function rateLines(rows: readonly Row[], g: string, spec: TargetSpec): string[] {
  const ref = spec.rateVs!;
  const mine = rows.filter((r) => r.target === g && r.rate !== null && r.mem === null);
  if (mine.length === 0) return [];
  const pairs = mine
    .map((r) => ({ r, other: rows.find((o) => o.workload === r.workload && o.target === ref.name) }))
    .filter((p) => p.other?.rate);
  if (pairs.length > 0) {
    const ratios = pairs.map((p) => ({ id: p.r.workload, x: p.r.rate! / p.other!.rate! }));
    const met = ratios.filter((x) => x.x >= ref.goal).length;
    const cpu = pairs
      .filter((p) => p.r.cpu !== null && p.other!.cpu !== null)
      .map((p) => `${p.r.workload} ${(p.r.cpu! / p.other!.cpu!).toFixed(2)}`);
    return [
      `${g}: throughput / ${ref.name}'s: ${ratios.map((x) => `${x.id} ${x.x.toFixed(1)}x`).join(', ')} -> at least ${ref.goal}x in ${met}/${ratios.length} workloads` +
        `${cpu.length ? `; CPU per message / ${ref.name}'s: ${cpu.join(', ')}` : ''}`,
    ];
  }
  const fb = spec.rateVsFallback;
  const row = fb ? mine.find((r) => r.workload === fb.workload) : undefined;
  if (!fb || !row || row.vsBaseline === null) return [`${g}: no ${ref.name} figures in this run`];
  const x = row.vsBaseline / fb.vsBaseline;
  return [
    `${g}: ${ref.name} did not run; against ${fb.source} (${fb.workload}: ${fb.vsBaseline}x unix, ${fb.cpu} µs CPU/msg): ` +
      `throughput ${row.vsBaseline.toFixed(2)}x unix = ${x.toFixed(1)}x ${ref.name} (goal ${ref.goal}x: ${x >= ref.goal ? 'met' : 'NOT met'})` +
      `${row.cpu !== null ? `, CPU ${row.cpu.toFixed(1)} µs/msg = ${(row.cpu / fb.cpu).toFixed(2)}x` : ''}`,
  ];
}

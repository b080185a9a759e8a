/**
 * The workloads (ipcbench modes and shapes, and the chain client's) and one bounded
 * ipcbench run. Chain workloads are run by scripts/bench/chain.ts. The idle workload
 * (`ipcbench -m idle`: N connections held after one echo each, the proxy's memory before
 * and after) runs only on targets marked `idle`, each time on a fresh process (bench.ts).
 */
import type { Procs } from './procs.js';
import type { RunningTarget } from './targets.js';

export interface Workload {
  id: string;
  /** Human title for the table. */
  title: string;
  /** Who generates the load: ipcbench, or the Node chain client (connectIpc). */
  kind: 'ipcbench' | 'chain';
  /** ipcbench's mode, or the chain client's (`rr`, `lookup`). */
  mode: 'rr' | 'stream' | 'connect' | 'idle' | 'lookup';
  /** Connections (ipcbench; chain rr), or slots per client process (chain lookup). */
  conns: number;
  size: number;
  window?: number;
  /** Chain: client processes (connectIpc runs at most 2 lookups at once per process). */
  procs?: number;
  /** The throughput figure in the result's JSON, and its unit in the table. */
  metric: 'msgs_per_s' | 'MBps' | 'conn_per_s' | 'lookups_per_s' | 'rss_per_conn_bytes';
  unit: string;
  /** What the CPU figure is per (idle: what the memory figure is per). */
  per: 'msg' | 'conn' | 'lookup';
}

/** Connections the idle workload holds by default (`npm run bench`; `--quick`: 500). */
export const DEFAULT_IDLE_CONNS = 8000;

function idleTitle(conns: number): string {
  return `idle ${conns.toLocaleString('en-US')} conns held, 1 echo each`;
}

/** The workloads with the idle workload holding `conns` connections. */
export function withIdleConns(workloads: readonly Workload[], conns: number): Workload[] {
  return workloads.map((w) => (w.mode === 'idle' ? { ...w, conns, title: idleTitle(conns) } : w));
}

export const WORKLOADS: readonly Workload[] = [
  { id: 'rr-c1-64', title: 'rr 1 conn, 64 B', kind: 'ipcbench', mode: 'rr', conns: 1, size: 64, metric: 'msgs_per_s', unit: 'msg/s', per: 'msg' },
  { id: 'rr-c1-16k', title: 'rr 1 conn, 16 KiB', kind: 'ipcbench', mode: 'rr', conns: 1, size: 16384, metric: 'msgs_per_s', unit: 'msg/s', per: 'msg' },
  { id: 'rr-c64-64', title: 'rr 64 conns, 64 B', kind: 'ipcbench', mode: 'rr', conns: 64, size: 64, metric: 'msgs_per_s', unit: 'msg/s', per: 'msg' },
  { id: 'rr-c64-16k', title: 'rr 64 conns, 16 KiB', kind: 'ipcbench', mode: 'rr', conns: 64, size: 16384, metric: 'msgs_per_s', unit: 'msg/s', per: 'msg' },
  {
    id: 'stream-c8-64k',
    title: 'stream 8 conns, 64 KiB, w16',
    kind: 'ipcbench',
    mode: 'stream',
    conns: 8,
    size: 65536,
    window: 16,
    metric: 'MBps',
    unit: 'MB/s',
    per: 'msg',
  },
  { id: 'connect-c8', title: 'connect 8 slots, 1 echo', kind: 'ipcbench', mode: 'connect', conns: 8, size: 64, metric: 'conn_per_s', unit: 'conn/s', per: 'conn' },
  // N is set by --idle-conns (withIdleConns); the entry's 8000 is the default.
  { id: 'idle', title: idleTitle(DEFAULT_IDLE_CONNS), kind: 'ipcbench', mode: 'idle', conns: DEFAULT_IDLE_CONNS, size: 64, metric: 'rss_per_conn_bytes', unit: 'B/conn', per: 'conn' },
  // The full chain (Node client with connectIpc -> ipcd -> tcpd A -> TCP -> tcpd B -> echod).
  { id: 'chain-rr-c1-64', title: 'chain rr 1 conn, 64 B', kind: 'chain', mode: 'rr', conns: 1, size: 64, procs: 1, metric: 'msgs_per_s', unit: 'msg/s', per: 'msg' },
  { id: 'chain-rr-c64-64', title: 'chain rr 64 conns, 64 B', kind: 'chain', mode: 'rr', conns: 64, size: 64, procs: 1, metric: 'msgs_per_s', unit: 'msg/s', per: 'msg' },
  {
    id: 'chain-lookup-2x2',
    title: 'chain lookup + 1 echo + close, 2 procs x 2',
    kind: 'chain',
    mode: 'lookup',
    conns: 2,
    size: 64,
    procs: 2,
    metric: 'lookups_per_s',
    unit: 'lookup/s',
    per: 'lookup',
  },
];

/** Workloads whose id equals or starts with one of `filters` (all when none). */
export function selectWorkloads(filters: readonly string[] | undefined): Workload[] {
  if (!filters?.length) return [...WORKLOADS];
  const chosen = WORKLOADS.filter((w) => filters.some((f) => w.id === f || w.id.startsWith(f)));
  if (chosen.length === 0) {
    throw new Error(`no workload matches ${filters.join(', ')}; known: ${WORKLOADS.map((w) => w.id).join(', ')}`);
  }
  return chosen;
}

/**
 * The parts of ipcbench's JSON line the report reads (the raw line is kept whole); the
 * chain runner writes lines of the same shape (`"tool":"chain"`).
 */
export interface IpcbenchResult {
  tool: 'ipcbench' | 'chain';
  label: string;
  msgs?: number;
  msgs_per_s?: number;
  MBps?: number;
  conn_per_s?: number;
  lookups_per_s?: number;
  cycles?: number;
  conns_ready?: number;
  conns_failed?: number;
  lat_us?: { p50: number; p99: number };
  cycle_us?: { p50: number; p99: number };
  /** Idle: connections opened and verified, failed, lost during the hold, still echoing after it. */
  opened?: number;
  failed_open?: number;
  dropped_during_hold?: number;
  still_echo_ok?: number;
  open_s?: number;
  /** Idle with --mem-pid: VmRSS and Pss (smaps_rollup) of the process tree before, once open, after the hold. */
  mem?: Record<'base' | 'open' | 'held', { rss_kb: number; pss_kb: number; procs: number; threads: number }>;
  rss_per_conn_bytes?: number;
  pss_per_conn_bytes?: number;
  cpu?: {
    harness_s: number;
    harness_util: number;
    harness_us_per_msg: number;
    /** Chain: the figure of merit (sum over the gateway processes); else pids[0]'s. */
    figure_us_per_msg?: number;
    /** `name` only in chain lines. */
    pids: { pid: number; name?: string; cpu_s: number; util: number; us_per_msg: number; part?: boolean }[];
  };
  errors: Record<string, number>;
  errors_total: number;
  connect_retries: number;
}

export interface RunOutcome {
  /** The parsed JSON line, when ipcbench printed one. */
  result: IpcbenchResult | null;
  /** The line as printed. */
  raw: string | null;
  /** ipcbench's exit status (0 clean, 2 errors seen) or how it failed. */
  status: string;
  /** Why the run does not count, if it does not. */
  failure: string | null;
  stderr: string;
}

export interface RunSettings {
  ipcbench: string;
  duration: number;
  warmup: number;
}

/** Limit for opening the idle workload's connections (8,000 TLS handshakes took 37-46 s on the busy 2-core VM). */
export const IDLE_OPEN_TIMEOUT_S = 180;

/**
 * Runs ipcbench once against `target`. rr, stream, connect: the CPU time of the target's
 * process (and of echod after it, for gateways) is measured over the measured window.
 * idle: the target's memory (process tree) before opening, once open and after holding
 * the connections `duration` seconds. Bounded twice: ipcbench's own watchdog, and a kill
 * after warmup + duration + 30 s (idle: open limit + hold + 30 s of final echo + 30 s).
 */
export async function runIpcbench(
  procs: Procs,
  settings: RunSettings,
  workload: Workload,
  target: RunningTarget,
  echodPid: number,
  label: string,
): Promise<RunOutcome> {
  const idle = workload.mode === 'idle';
  const args = [
    '-m', workload.mode,
    '-c', String(workload.conns),
    '-s', String(workload.size),
    ...(workload.window !== undefined ? ['-w', String(workload.window)] : []),
    '-d', String(settings.duration),
    ...(idle ? [] : ['-W', String(settings.warmup)]),
    '--open-timeout', String(idle ? IDLE_OPEN_TIMEOUT_S : 10),
    '--label', label,
    '-q',
    ...(idle
      ? ['--mem-pid', String(target.cpuPid)]
      : [
          '--cpu-pid', String(target.cpuPid),
          ...(target.cpuPid !== echodPid ? ['--cpu-pid', String(echodPid)] : []),
          ...(target.cpuSplit ?? []).flatMap((p) => ['--cpu-pid', String(p.pid)]),
        ]),
    ...target.args,
    target.url,
  ];
  const timeoutMs = (idle ? IDLE_OPEN_TIMEOUT_S + settings.duration + 60 : settings.warmup + settings.duration + 30) * 1000;
  const r = await procs.run(settings.ipcbench, args, timeoutMs);
  const raw = r.stdout.split('\n').find((l) => l.startsWith('{')) ?? null;
  let result: IpcbenchResult | null = null;
  if (raw !== null) {
    try {
      result = JSON.parse(raw) as IpcbenchResult;
    } catch {
      result = null;
    }
  }
  if (result?.cpu && target.cpuSplit?.length) nameSplit(result, target.cpuSplit);
  const status = r.timedOut ? 'killed after timeout' : r.signal ? `signal ${r.signal}` : `exit ${r.code}`;
  let failure: string | null = null;
  if (r.timedOut) failure = `ipcbench did not finish within ${timeoutMs / 1000} s`;
  else if (result === null) failure = `ipcbench printed no result (${status}): ${r.stderr.trim().slice(-500)}`;
  else if (r.code !== 0 && r.code !== 2) failure = `ipcbench ${status}: ${r.stderr.trim().slice(-500)}`;
  return { result, raw, status, failure, stderr: r.stderr };
}

/**
 * Names the CPU figures of a split target (gatewayd's workers): the processes of
 * `split` by name, and `primary` for the rest of the tree (pids[0] minus them), added to
 * pids; all marked `part` (inside pids[0], not to be added to it); the figure of merit
 * stays the whole tree.
 */
function nameSplit(result: IpcbenchResult, split: readonly { name: string; pid: number }[]): void {
  const cpu = result.cpu!;
  const tree = cpu.pids[0];
  if (tree === undefined) return;
  cpu.figure_us_per_msg = tree.us_per_msg;
  let rest = { cpu_s: tree.cpu_s, util: tree.util, us_per_msg: tree.us_per_msg };
  for (const part of split) {
    const entry = cpu.pids.find((p) => p.pid === part.pid && p !== tree);
    if (entry === undefined) continue;
    entry.name = part.name;
    entry.part = true;
    rest = { cpu_s: rest.cpu_s - entry.cpu_s, util: rest.util - entry.util, us_per_msg: rest.us_per_msg - entry.us_per_msg };
  }
  cpu.pids.push({ pid: tree.pid, name: 'primary', ...rest, part: true });
}

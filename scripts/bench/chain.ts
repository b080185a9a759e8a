/**
 * One run of a chain workload: the Node load client (scripts/bench/chain-client.ts) in
 * one or more processes, all driven through one measured window, with the CPU time of
 * the chain's daemons (ipcd, tcpd A, tcpd B) and of echod read from /proc before and
 * after it. The result is a JSON line shaped like ipcbench's (`"tool":"chain"`), so the
 * report treats it alike.
 *
 * Window: start every client and wait until each is `ready` (rr: its connections are
 * open and checked), send `go`, wait the warmup, sample CPU and send `mark`, wait the
 * duration, sample CPU and send `stop`, collect each client's counts. Bounded: the
 * clients' own --max-seconds, a SIGKILL after warmup + duration + 60 s, and bounded
 * waits here.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';
import type { CommandResult, Procs } from './procs.js';
import { processCpuSeconds } from './machine.js';
import type { IpcbenchResult, RunOutcome, RunSettings, Workload } from './workloads.js';

/** How a chain target is driven (from RunningTarget.chain). */
export interface ChainTarget {
  /** node and the compiled chain client. */
  clientScript: string;
  cwd: string;
  /** RUNDIR for the client, and IPC_NETWORK (undefined: connect `$RUNDIR/<service>` directly). */
  rundir: string;
  network: string | undefined;
  service: string;
  /** The processes whose CPU is the figure (summed); empty: echod's is the figure. */
  gateways: { name: string; pid: number }[];
  echodPid: number;
}

/** Bound of the clients' setup (rr: lookups and one echo per connection). */
const READY_TIMEOUT_MS = 30_000;
/** Bound on the results arriving after `stop`. */
const RESULT_TIMEOUT_MS = 15_000;

interface ClientResult {
  event: 'result';
  window_s: number;
  ops: number;
  ops_per_s: number;
  lat_us: { n: number; mean: number; p50: number; p90: number; p99: number; p999: number; max: number };
  samples?: number[];
  errors: Record<string, number>;
  errors_total: number;
  error_samples: string[];
}

interface Client {
  child: ChildProcess;
  send: (line: string) => void;
  done: Promise<CommandResult>;
  ready: { conns_ready: number; conns_failed: number; setup_ms: number } | null;
  result: ClientResult | null;
  exited: CommandResult | null;
  /** Lines that were not JSON (a cut line would be one): count and the last one's length. */
  badLines: { count: number; lastLength: number };
  wake: () => void;
}

export async function runChain(
  procs: Procs,
  settings: RunSettings,
  workload: Workload,
  target: ChainTarget,
  label: string,
): Promise<RunOutcome> {
  const nProcs = workload.procs ?? 1;
  const started = performance.now();
  const maxSeconds = Math.ceil(settings.warmup + settings.duration + READY_TIMEOUT_MS / 1000 + RESULT_TIMEOUT_MS / 1000);
  const env: NodeJS.ProcessEnv = { ...process.env, RUNDIR: target.rundir };
  delete env['IPC_NETWORK'];
  if (target.network !== undefined) env['IPC_NETWORK'] = target.network;

  let changed: () => void = () => {};
  const clients: Client[] = [];
  for (let i = 0; i < nProcs; i++) {
    const client: Client = {
      child: null as unknown as ChildProcess,
      send: () => {},
      done: Promise.resolve(null as unknown as CommandResult),
      ready: null,
      result: null,
      exited: null,
      badLines: { count: 0, lastLength: 0 },
      wake: () => changed(),
    };
    const spawned = procs.spawnClient(
      process.execPath,
      [
        target.clientScript,
        '--mode', workload.mode,
        '--conns', String(workload.conns),
        '--size', String(workload.size),
        '--service', target.service,
        '--id', String(i),
        '--max-seconds', String(maxSeconds),
        ...(nProcs > 1 ? ['--samples', '1'] : []),
      ],
      {
        env,
        cwd: target.cwd,
        timeoutMs: (maxSeconds + 15) * 1000,
        onLine: (line) => {
          let msg: { event?: string } & Record<string, unknown>;
          try {
            msg = JSON.parse(line) as typeof msg;
          } catch {
            client.badLines.count++;
            client.badLines.lastLength = line.length;
            return;
          }
          if (msg.event === 'ready') client.ready = msg as unknown as Client['ready'];
          else if (msg.event === 'result') client.result = msg as unknown as ClientResult;
          client.wake();
        },
      },
    );
    client.child = spawned.child;
    client.send = spawned.send;
    client.done = spawned.done.then((r) => {
      client.exited = r;
      client.wake();
      return r;
    });
    clients.push(client);
  }

  /** Waits until `predicate` holds or `ms` passed (re-checked on every client event). */
  const until = async (predicate: () => boolean, ms: number): Promise<boolean> => {
    const limit = performance.now() + ms;
    while (!predicate()) {
      const left = limit - performance.now();
      if (left <= 0) return false;
      await Promise.race([new Promise<void>((resolve) => (changed = resolve)), sleep(Math.min(left, 250))]);
    }
    return true;
  };
  const stopAll = async (): Promise<void> => {
    for (const c of clients) c.send('stop');
    if (!(await until(() => clients.every((c) => c.exited), 5000))) {
      for (const c of clients) if (!c.exited) procs.stop(c.child, 1000).catch(() => {});
      await until(() => clients.every((c) => c.exited), 5000);
    }
  };
  const failure = (why: string): RunOutcome => ({
    result: null,
    raw: null,
    status: 'failed',
    failure: why,
    stderr: clients.map((c, i) => `client ${i}: ${(c.exited?.stderr ?? '').trim().slice(-500)}`).join('\n'),
  });
  const clientProblems = (): string =>
    clients
      .map(
        (c, i) =>
          (c.exited ? `client ${i} exited (${c.exited.signal ?? `code ${c.exited.code}`}): ${c.exited.stderr.trim().slice(-300)}` : '') +
          (c.badLines.count ? ` client ${i}: ${c.badLines.count} line(s) not JSON (last ${c.badLines.lastLength} chars)` : ''),
      )
      .filter((s) => s !== '')
      .join('; ');

  // 1. Setup.
  const ready = await until(() => clients.every((c) => c.ready !== null || c.exited !== null), READY_TIMEOUT_MS);
  if (!ready || clients.some((c) => c.ready === null)) {
    await stopAll();
    return failure(`chain client not ready within ${READY_TIMEOUT_MS / 1000} s${clientProblems() ? `: ${clientProblems()}` : ''}`);
  }
  const connsReady = clients.reduce((s, c) => s + c.ready!.conns_ready, 0);
  const connsFailed = clients.reduce((s, c) => s + c.ready!.conns_failed, 0);
  const setupMs = Math.max(...clients.map((c) => c.ready!.setup_ms));

  // 2. Warmup, then the measured window.
  const pids = [
    ...target.gateways,
    { name: 'echod', pid: target.echodPid },
  ];
  const clientPids = clients.map((c) => c.child.pid ?? -1);
  for (const c of clients) c.send('go');
  await sleep(settings.warmup * 1000);
  const cpu0 = pids.map((p) => processCpuSeconds(p.pid));
  const client0 = clientPids.map((pid) => processCpuSeconds(pid));
  const t0 = performance.now();
  for (const c of clients) c.send('mark');
  await sleep(settings.duration * 1000);
  const cpu1 = pids.map((p) => processCpuSeconds(p.pid));
  const client1 = clientPids.map((pid) => processCpuSeconds(pid));
  const t1 = performance.now();
  for (const c of clients) c.send('stop');
  const gotResults = await until(() => clients.every((c) => c.result !== null || c.exited !== null), RESULT_TIMEOUT_MS);
  await stopAll();
  if (!gotResults || clients.some((c) => c.result === null)) {
    return failure(`chain client gave no result${clientProblems() ? `: ${clientProblems()}` : ''}`);
  }

  // 3. The result line.
  const results = clients.map((c) => c.result!);
  const wall = (t1 - t0) / 1000;
  const ops = results.reduce((s, r) => s + r.ops, 0);
  const rate = results.reduce((s, r) => s + r.ops_per_s, 0);
  const errors: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
  const errorsTotal = Object.values(errors).reduce((a, b) => a + b, 0);
  const perOp = (cpuS: number) => (ops > 0 ? round((cpuS * 1e6) / ops, 3) : 0);
  const pidCpu = pids.map((p, i) => {
    const a = cpu0[i];
    const b = cpu1[i];
    const cpuS = a === null || a === undefined || b === null || b === undefined ? 0 : b - a;
    return { pid: p.pid, name: p.name, cpu_s: round(cpuS, 3), util: round(cpuS / wall, 3), us_per_msg: perOp(cpuS) };
  });
  const harnessS = clientPids.reduce((s, _, i) => s + Math.max(0, (client1[i] ?? 0) - (client0[i] ?? 0)), 0);
  const figure = target.gateways.length
    ? pidCpu.slice(0, target.gateways.length).reduce((s, p) => s + p.us_per_msg, 0)
    : pidCpu[pidCpu.length - 1]!.us_per_msg;
  const lat = mergeLatency(results);
  const isRr = workload.mode === 'rr';
  const result: IpcbenchResult & Record<string, unknown> = {
    tool: 'chain',
    label,
    mode: workload.mode,
    target: target.network === undefined ? `connectIpc -> unix:${target.rundir}/${target.service}` : `connectIpc via ipcd, IPC_NETWORK=${target.network}`,
    conns: workload.conns,
    procs: nProcs,
    size: workload.size,
    duration_s: settings.duration,
    warmup_s: settings.warmup,
    conns_ready: connsReady,
    conns_failed: connsFailed,
    setup_ms: setupMs,
    ...(isRr ? { msgs: ops, msgs_per_s: round(rate, 1), lat_us: lat } : { cycles: ops, lookups_per_s: round(rate, 1), cycle_us: lat }),
    cpu: {
      harness_s: round(harnessS, 3),
      harness_util: round(harnessS / wall, 3),
      harness_us_per_msg: perOp(harnessS),
      figure_us_per_msg: round(figure, 3),
      pids: pidCpu,
    },
    errors,
    errors_total: errorsTotal,
    error_samples: results.flatMap((r) => r.error_samples).slice(0, 5),
    connect_retries: 0,
    wall_s: round((performance.now() - started) / 1000, 3),
  };
  const codes = clients.map((c) => c.exited?.code);
  const status = codes.every((c) => c === 0) ? 'exit 0' : `exit ${codes.join(',')}`;
  let why: string | null = null;
  if (connsFailed > 0 && connsReady === 0) why = `no connection opened: ${result.error_samples}`;
  return { result, raw: JSON.stringify(result), status, failure: why, stderr: '' };
}

/** Percentiles over every client's samples (one process: its own summary). */
function mergeLatency(results: readonly ClientResult[]): ClientResult['lat_us'] {
  if (results.length === 1 || results.some((r) => !r.samples)) return results[0]!.lat_us;
  const all = Float64Array.from(results.flatMap((r) => r.samples!)).sort();
  const at = (p: number) => (all.length ? all[Math.max(1, Math.ceil((p / 100) * all.length)) - 1]! : 0);
  let sum = 0;
  for (const v of all) sum += v;
  return {
    n: all.length,
    mean: round(all.length ? sum / all.length : 0, 1),
    p50: round(at(50), 1),
    p90: round(at(90), 1),
    p99: round(at(99), 1),
    p999: round(at(99.9), 1),
    max: round(all.length ? all[all.length - 1]! : 0, 1),
  };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

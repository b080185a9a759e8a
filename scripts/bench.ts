/**
 * `npm run bench`: measures the gateways (tcpd, tlsd, wsd, gatewayd with 1 and 2 workers, and the full ipcd chain)
 * against a direct Unix socket and anchors (naive Node TCP and TLS pipes, HAProxy with
 * one thread in TCP and TLS mode, websockify), in one run, with ../shared/tools/ipcbench (C load generator and echo service) and, for the
 * chain, a Node client using connectIpc (scripts/bench/chain-client.ts). A benchmark, not
 * a test: it prints figures; it fails only when a run saw errors (verify, length, I/O...),
 * failed, or a target died.
 *
 *   npm run bench                               # ~9 min: every target, 3 rounds of 1+2 s, idle 8,000
 *   npm run bench -- --quick                    # ~1.5 min: 1 round of 0.5+1 s, idle 500
 *   npm run bench -- --only tlsd                # tlsd with unix, the Node TLS pipe and HAProxy TLS
 *   npm run bench -- --only tcpd --workloads rr-c64 --duration 5 --rounds 3
 *   npm run bench -- --only tcpd,tlsd,wsd --workloads idle --idle-conns 500
 *
 * Builds echod and ipcbench into .bench/bin, starts echod on `$RUNDIR/echo` in a temp
 * RUNDIR, starts every target (scripts/bench/targets.ts), runs every workload against
 * each target that runs it (rounds alternate the target order; the idle workload restarts
 * its target before every run, so memory grows from a fresh process), and prints medians. Raw
 * JSON lines go to .bench/results-<timestamp>.jsonl. Every child is stopped on exit and on
 * SIGINT. See docs/benchmarks.md.
 */
import { Command, InvalidArgumentError } from 'commander';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Procs, describeExit, tail, type Daemon } from './bench/procs.js';
import { TARGETS, runsWorkload, selectTargets, workloadsFor, type RunningTarget, type TargetContext, type TargetSpec } from './bench/targets.js';
import {
  DEFAULT_IDLE_CONNS,
  WORKLOADS,
  runIpcbench,
  selectWorkloads,
  withIdleConns,
  type RunOutcome,
  type Workload,
} from './bench/workloads.js';
import { runChain } from './bench/chain.js';
import { cpuFigure, floorSummary, idleTable, issueTable, summarize, table, type Run } from './bench/report.js';
import { busyCores, idleLoad, sampleCpu } from './bench/machine.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SERVICE = 'echo';
const stamp = new Date().toISOString().replace(/:/g, '').replace(/\.\d+Z$/, 'Z');
const benchDir = path.join(root, '.bench');
const binDir = path.join(benchDir, 'bin');
const logDir = path.join(benchDir, `logs-${stamp}`);
const resultsFile = path.join(benchDir, `results-${stamp}.jsonl`);
/** Set on SIGINT/SIGTERM/SIGHUP: stop, start nothing more. */
let interrupted: NodeJS.Signals | null = null;

interface Options {
  duration?: number;
  warmup?: number;
  rounds?: number;
  quick?: boolean;
  only?: string[];
  bare?: boolean;
  workloads?: string[];
  list?: boolean;
  keepLogs?: boolean;
  idleConns?: number;
}

function positive(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}

function names(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(',').map((s) => s.trim()).filter((s) => s !== '')];
}

function envNumber(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  try {
    return positive(v);
  } catch {
    throw new Error(`${name}=${v}: expected a positive number`);
  }
}

function envList(name: string): string[] | undefined {
  const v = process.env[name];
  return v ? names(v, undefined) : undefined;
}

const program = new Command('bench')
  .description('libipc gateway benchmark: ipcbench against unix, the naive Node pipe, and our gateways')
  .option('-d, --duration <sec>', 'measured seconds per run (env BENCH_DURATION; default 2, --quick 1)', positive)
  .option('-W, --warmup <sec>', 'unmeasured seconds before each run (env BENCH_WARMUP; default 1, --quick 0.5)', positive)
  .option('-r, --rounds <n>', 'rounds, target order alternating; medians are reported (env BENCH_ROUNDS; default 3, --quick 1)', positive)
  .option('--quick', 'short runs: 1 round, -d 1 -W 0.5 (about 1 min with every target)')
  .option('--only <targets>', 'targets to run, comma-separated (env BENCH_ONLY); unix and the anchors they are compared with are added', names)
  .option('--bare', 'with --only: run exactly those targets (no ratios without their references)')
  .option('--workloads <ids>', 'workload ids or prefixes, comma-separated (env BENCH_WORKLOADS), e.g. rr-c64,connect', names)
  .option('--idle-conns <n>', `connections the idle workload holds (env BENCH_IDLE_CONNS; default ${DEFAULT_IDLE_CONNS}, --quick 500)`, positive)
  .option('--list', 'list targets and workloads, and exit')
  .option('--keep-logs', 'keep the daemons\' logs (.bench/logs-<timestamp>/) even when all went well')
  .addHelpText(
    'after',
    '\nEnvironment: IPC_SHARED (default ../shared beside the repository) holds tools/ipcbench.\n' +
      'Exit status: 0 clean; 1 errors seen, a run failed or a target died; 130 interrupted.',
  );

async function main(): Promise<number> {
  program.parse();
  const opts = program.opts<Options>();
  if (opts.list) {
    for (const t of TARGETS) {
      const runs = WORKLOADS.filter((w) => runsWorkload(t, w)).map((w) => w.id);
      console.log(`target   ${t.name.padEnd(14)} ${t.role.padEnd(8)} ${t.default ? 'default' : '       '} ${t.description}`);
      console.log(`         ${''.padEnd(14)} workloads: ${runs.join(', ')}`);
    }
    for (const w of WORKLOADS) console.log(`workload ${w.id.padEnd(18)} ${w.kind.padEnd(8)} ${w.title}`);
    return 0;
  }
  const quick = opts.quick ?? false;
  const duration = opts.duration ?? envNumber('BENCH_DURATION') ?? (quick ? 1 : 2);
  const warmup = opts.warmup ?? envNumber('BENCH_WARMUP') ?? (quick ? 0.5 : 1);
  const rounds = Math.max(1, Math.round(opts.rounds ?? envNumber('BENCH_ROUNDS') ?? (quick ? 1 : 3)));
  const selected = selectTargets(opts.only ?? envList('BENCH_ONLY'), opts.bare ?? false);
  const idleConns = Math.round(opts.idleConns ?? envNumber('BENCH_IDLE_CONNS') ?? (quick ? 500 : DEFAULT_IDLE_CONNS));
  const workloads = withIdleConns(workloadsFor(selectWorkloads(opts.workloads ?? envList('BENCH_WORKLOADS')), selected), idleConns);
  // Not started when none of the chosen workloads is theirs (say, node-pipe for --workloads idle).
  const targets = selected.filter((t) => workloads.some((w) => runsWorkload(t, w)));
  if (workloads.some((w) => w.mode === 'idle')) checkDescriptors(idleConns);
  if (workloads.length === 0) throw new Error(`none of the chosen workloads is run by ${targets.map((t) => t.name).join(', ')}`);
  /** The chosen targets that run workload `w`. */
  const targetsOf = (w: Workload): TargetSpec[] => targets.filter((t) => runsWorkload(t, w));

  const shared = path.resolve(process.env['IPC_SHARED'] || path.join(root, '..', 'shared'));
  const toolDir = path.join(shared, 'tools', 'ipcbench');
  if (!fs.existsSync(path.join(toolDir, 'Makefile'))) {
    throw new Error(`${toolDir}/Makefile not found: set IPC_SHARED to the shared directory (holding tools/ipcbench)`);
  }

  fs.mkdirSync(binDir, { recursive: true });
  const procs = new Procs(logDir);
  const rundir = fs.mkdtempSync(path.join(os.tmpdir(), 'ipcbench-'));

  // Interrupts: stop every child, keep what was measured, exit 128+n.
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = signal;
    process.stderr.write(`\nbench: ${signal}: stopping every child process\n`);
    void procs.close().finally(() => {
      fs.rmSync(rundir, { recursive: true, force: true });
      process.stderr.write(`bench: interrupted; logs in ${logDir}, results so far in ${resultsFile}\n`);
      finish(1);
    });
  };
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);

  try {
    // 1. echod and ipcbench, built from the shared sources into .bench/bin.
    const make = await procs.run('make', ['-s', '-C', binDir, '-f', path.join(toolDir, 'Makefile'), `VPATH=${toolDir}`, 'all'], 180_000);
    if (make.code !== 0) {
      throw new Error(
        `building ipcbench failed (${make.timedOut ? 'timeout' : `make exit ${make.code}`}); it needs gcc, make and libssl-dev ` +
          `(apt-get install -y gcc make libssl-dev):\n${tail(make.stdout + make.stderr, 30)}`,
      );
    }
    const ipcbench = path.join(binDir, 'ipcbench');
    const servicePath = path.join(rundir, SERVICE);

    // 2. The C echo service.
    const { daemon: echod } = await procs.startDaemon('echod', path.join(binDir, 'echod'), [servicePath], {
      ready: () => (fs.existsSync(servicePath) ? true : undefined),
    });

    // 3. The targets.
    const ctx: TargetContext = {
      root,
      shared,
      rundir,
      service: SERVICE,
      servicePath,
      echod,
      procs,
      repo: (relative) => path.join(root, relative),
      cache: new Map(),
      idleConns,
    };
    const running = new Map<string, RunningTarget>();
    for (const t of targets) running.set(t.name, await t.start(ctx));
    // Other processes' load now (ours are idle): figures taken on a busy machine move a lot.
    const loadBefore = await idleLoad(1000);

    const meta = {
      tool: 'bench',
      started: new Date().toISOString(),
      command: `node ${path.relative(root, process.argv[1] ?? '')} ${process.argv.slice(2).join(' ')}`.trim(),
      git: gitDescribe(),
      node: process.version,
      cpus: os.cpus().length,
      cpu_model: os.cpus()[0]?.model ?? 'unknown',
      kernel: os.release(),
      background_cores_at_start: round2(loadBefore),
      duration_s: duration,
      warmup_s: warmup,
      rounds,
      idle_conns: workloads.some((w) => w.mode === 'idle') ? idleConns : undefined,
      targets: targets.map((t) => ({
        name: t.name,
        role: t.role,
        description: t.description,
        url: running.get(t.name)!.url,
        ...(running.get(t.name)!.unavailable ? { unavailable: running.get(t.name)!.unavailable } : {}),
      })),
      workloads: workloads.map((w) => w.id),
    };
    fs.writeFileSync(resultsFile, `${JSON.stringify(meta)}\n`);
    // A chain run also starts Node clients and opens its connections (lookups): ~1 s more.
    // An idle run restarts its target (~1 s), warms it (0.5 s) and opens N connections
    // (~1,000-7,000/s; TLS handshakes ~200/s on a busy 2-core VM) before holding them `duration` s.
    const perRun = (w: Workload) =>
      w.mode === 'idle' ? 2 + duration + w.conns / 500 : warmup + duration + (w.kind === 'chain' ? 1.2 : 0.2);
    const total = workloads.reduce((n, w) => n + targetsOf(w).length, 0) * rounds;
    const seconds = workloads.reduce((s, w) => s + targetsOf(w).length * perRun(w), 0) * rounds;
    for (const t of targets) {
      const why = running.get(t.name)!.unavailable;
      if (why) process.stderr.write(`bench: ${t.name}: ${why}: its runs are skipped\n`);
    }
    process.stderr.write(
      `bench: ${targets.map((t) => t.name).join(', ')}; ${workloads.length} workloads x ${rounds} round(s), ` +
        `-d ${duration} -W ${warmup}: ${total} runs, about ${Math.ceil(seconds / 10) * 10} s\n` +
        `bench: RUNDIR ${rundir}, logs ${logDir}\n` +
        `bench: other processes use ${loadBefore.toFixed(2)} of ${meta.cpus} cores right now` +
        `${loadBefore > 0.2 ? ' (busy machine: figures will be noisy; see the "bg" column)' : ''}\n`,
    );

    // 4. Workloads x rounds x targets (order alternating between rounds).
    const runs: Run[] = [];
    const problems: string[] = [];
    const dead = new Set<string>();
    let n = 0;
    for (const w of workloads) {
      for (let round = 1; round <= rounds; round++) {
        const mine = targetsOf(w);
        const order = round % 2 === 1 ? mine : [...mine].reverse();
        for (const t of order) {
          n++;
          if (interrupted) return 130;
          const target = running.get(t.name)!;
          const label = `${t.name}/${w.id}/r${round}`;
          if (target.unavailable) {
            runs.push({ workload: w, target: t, round, background: null, outcome: { result: null, raw: null, status: 'unavailable', failure: null, stderr: target.unavailable } });
            fs.appendFileSync(resultsFile, `${JSON.stringify({ tool: 'bench', label, status: 'unavailable', error: target.unavailable })}\n`);
            process.stderr.write(`[${String(n).padStart(String(total).length)}/${total}] ${label}: not run, ${target.unavailable}\n`);
            continue;
          }
          const down = [echod, ...target.daemons].find((d) => d.exit !== null);
          if (down) {
            if (!dead.has(t.name)) problems.push(`${t.name}: before ${label}: ${deadMessage(down)}`);
            dead.add(t.name);
            const failure = `not run: ${down.name} is not running`;
            runs.push({ workload: w, target: t, round, background: null, outcome: { result: null, raw: null, status: 'skipped', failure, stderr: '' } });
            fs.appendFileSync(resultsFile, `${JSON.stringify({ tool: 'bench', label, error: failure, status: 'skipped' })}\n`);
            process.stderr.write(`[${String(n).padStart(String(total).length)}/${total}] ${label}: SKIPPED, ${down.name} is not running\n`);
            continue;
          }
          let measuredTarget = target;
          if (w.mode === 'idle') {
            // A process keeps the memory it grew for earlier connections (Node's heap, HAProxy's
            // pools: a second idle run on one HAProxy grew 82 B/conn against 3,524 for the first),
            // so every idle run gets a fresh one, warmed with a few connections so that what
            // the first connection costs once (lazy compilation, pools) is not counted per
            // connection.
            measuredTarget = await restartTarget(ctx, t, target, running, procs);
            await warmUp(procs, ipcbench, measuredTarget);
          }
          const cpuBefore = sampleCpu();
          const outcome: RunOutcome = measuredTarget.chain
            ? await runChain(procs, { ipcbench, duration, warmup }, w, measuredTarget.chain, label)
            : await runIpcbench(procs, { ipcbench, duration, warmup }, w, measuredTarget, echod.pid, label);
          if (interrupted) return 130;
          // Background: machine-wide busy cores minus what ipcbench measured (harness, target, echod).
          const busy = busyCores(cpuBefore, sampleCpu());
          const c = outcome.result?.cpu;
          // Parts (gatewayd's workers) are inside their tree's figure already.
          const measured = c ? c.harness_util + c.pids.reduce((sum, p) => sum + (p.part ? 0 : p.util), 0) : 0;
          const background = c ? Math.max(0, busy - measured) : null;
          runs.push({ workload: w, target: t, round, outcome, background });
          fs.appendFileSync(
            resultsFile,
            `${outcome.raw ?? JSON.stringify({ tool: 'bench', label, error: outcome.failure, status: outcome.status })}\n` +
              `${JSON.stringify({ tool: 'bench', label, machine_busy_cores: round2(busy), background_cores: background === null ? null : round2(background) })}\n`,
          );
          process.stderr.write(`[${String(n).padStart(String(total).length)}/${total}] ${progress(label, w, outcome, background)}\n`);
          if (outcome.failure) problems.push(`${label}: ${outcome.failure}`);
          if (outcome.result && outcome.result.errors_total > 0) {
            const seen = Object.entries(outcome.result.errors).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`);
            const data = (outcome.result.errors['verify'] ?? 0) + (outcome.result.errors['length'] ?? 0) > 0;
            problems.push(`${label}: ipcbench errors: ${seen.join(', ')}${data ? ' (CORRUPTED OR MISFRAMED ECHO DATA)' : ''}`);
          }
          // Did the run kill the target? Give a crash a moment to be noticed.
          await new Promise((r) => setTimeout(r, 50));
          const died = [echod, ...measuredTarget.daemons].find((d) => d.exit !== null);
          if (died && !dead.has(t.name)) {
            problems.push(`${t.name}: during or right after ${label}: ${deadMessage(died)}`);
            dead.add(t.name);
          }
        }
      }
    }

    // 5. Report.
    const rows = summarize(runs, workloads, targets);
    fs.appendFileSync(resultsFile, `${JSON.stringify({ tool: 'bench', summary: rows })}\n`);
    console.log(
      `\nlibipc gateway benchmark, ${meta.started.slice(0, 19).replace('T', ' ')} UTC, node ${process.version}, ` +
        `${meta.cpus} CPUs, ${meta.git}; -d ${duration} -W ${warmup}, medians of ${rounds} round(s)\n`,
    );
    if (rows.some((r) => r.workload !== 'idle')) console.log(table(rows));
    const idle = idleTable(rows);
    if (idle) console.log(`\n${idle}`);
    const issue = issueTable(rows);
    if (issue) console.log(`\nThe issue's table: CPU µs per message (connect: per connection; idle: RSS bytes per connection), throughput x direct Unix\n\n${issue}`);
    console.log('');
    for (const line of floorSummary(rows, targets)) console.log(line);
    console.log(`\nraw results: ${path.relative(process.cwd(), resultsFile)}`);

    if (problems.length) {
      console.log(`\nPROBLEMS (${problems.length}):`);
      for (const p of problems) console.log(`  ${p}`);
      console.log(`daemon logs kept in ${path.relative(process.cwd(), logDir)}`);
      return 1;
    }
    return 0;
  } finally {
    await procs.close();
    fs.rmSync(rundir, { recursive: true, force: true });
  }
}

/**
 * The idle workload holds N connections: the proxy needs ~2N descriptors (client and
 * service side), ipcbench and echod N each. Every process the bench starts raises its soft
 * limit to the hard one (Node, echod, ipcbench at start; HAProxy to what its maxconn
 * needs), so the hard limit is what counts.
 */
function checkDescriptors(conns: number): void {
  let hard = Infinity;
  try {
    const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const value = line?.trim().split(/\s+/)[4];
    if (value && value !== 'unlimited') hard = Number(value);
  } catch {
    return; // not Linux: let the run say
  }
  const needed = 2 * conns + 256;
  if (needed > hard) {
    throw new Error(`--idle-conns ${conns} needs about ${needed} descriptors in the proxy; the hard limit is ${hard} (ulimit -Hn): use at most ${Math.floor((hard - 256) / 2)}`);
  }
}

/** Stops a target's processes and starts it again: the new one replaces it in `running`. */
async function restartTarget(ctx: TargetContext, spec: TargetSpec, old: RunningTarget, running: Map<string, RunningTarget>, procs: Procs): Promise<RunningTarget> {
  for (const d of old.daemons) await procs.stop(d.child);
  const fresh = await spec.start(ctx);
  running.set(spec.name, fresh);
  return fresh;
}

/**
 * A few hundred connections through a fresh target, at most 4 at a time: the code of a
 * connection's life is compiled and used, and its buffers and pools are those of 4
 * connections, not of N. Its result does not count (an error here shows in the idle run).
 */
async function warmUp(procs: Procs, ipcbench: string, target: RunningTarget): Promise<void> {
  await procs.run(ipcbench, ['-m', 'connect', '-c', '4', '-s', '64', '-W', '0', '-d', '0.5', '--open-timeout', '10', '-q', ...target.args, target.url], 40_000);
  await new Promise((r) => setTimeout(r, 300));
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

function progress(label: string, w: Workload, o: Awaited<ReturnType<typeof runIpcbench>>, background: number | null): string {
  const r = o.result;
  if (!r) return `${label}: FAILED: ${o.failure}`;
  if (w.mode === 'idle') {
    const mb = (kb: number | undefined) => (kb === undefined ? '-' : (kb / 1024).toFixed(1));
    return (
      `${label.padEnd(28)} ${r.still_echo_ok ?? '-'}/${w.conns} held, RSS ${mb(r.mem?.base.rss_kb)} -> ${mb(r.mem?.held.rss_kb)} MB: ` +
      `${r.rss_per_conn_bytes ?? '-'} B/conn RSS, ${r.pss_per_conn_bytes ?? '-'} B/conn PSS, open ${r.open_s?.toFixed(2) ?? '-'} s` +
      `${r.errors_total ? `  ERRORS ${JSON.stringify(r.errors)}` : ''}${o.failure ? `  FAILED: ${o.failure}` : ''}`
    );
  }
  const rate = r[w.metric];
  const cpu = cpuFigure(r);
  return (
    `${label.padEnd(28)} ${rate === undefined ? '-' : Math.round(rate).toLocaleString('en-US').padStart(9)} ${w.unit.padEnd(6)}` +
    ` cpu ${cpu === undefined ? '-' : cpu.toFixed(1).padStart(6)} µs/${w.per}` +
    `${background === null ? '' : `  bg ${background.toFixed(2)}`}` +
    `${r.errors_total ? `  ERRORS ${JSON.stringify(r.errors)}` : ''}${o.failure ? `  FAILED: ${o.failure}` : ''}`
  );
}

function deadMessage(d: Daemon): string {
  return `${d.name} (pid ${d.pid}) exited (${d.exit ? describeExit(d.exit) : '?'}); log ${d.logFile}:\n${tail(readOr(d.logFile), 10)}`;
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function gitDescribe(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return `git ${head}${dirty ? ' (modified)' : ''}`;
  } catch {
    return 'git unknown';
  }
}

main().then(
  (code) => finish(code),
  (err: unknown) => {
    if (interrupted) return finish(1);
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    if (fs.existsSync(logDir)) process.stderr.write(`bench: daemon logs in ${logDir}\n`);
    finish(1);
  },
);

/** Drops the logs of a clean run (unless --keep-logs) and exits. */
function finish(code: number): void {
  if (interrupted) code = 128 + os.constants.signals[interrupted];
  if (code === 0 && !program.opts<Options>().keepLogs) fs.rmSync(logDir, { recursive: true, force: true });
  process.exit(code);
}

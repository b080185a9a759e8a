/**
 * The targets the benchmark measures, as a registry: each entry says how to start it,
 * the ipcbench URL and extra arguments (or, for the chain, how the Node chain client is
 * driven), which process's CPU time is "the gateway's", and what it is compared with.
 *
 * Adding a gateway is one entry: `start` returns the URL, extra ipcbench arguments and
 * the pid to measure (see tlsd and wsd below); `cpuVs` names the anchor its CPU per
 * message is divided by, `rateVs` one its throughput is divided by, `workloads` limits
 * it to some workloads, `idle` adds the idle workload (memory per held connection), `peer`
 * names the established proxy it is set beside in the issue's table (HAProxy for tcpd and
 * tlsd, websockify for wsd).
 */
import fs from 'node:fs';
import path from 'node:path';
import { createCa, createServerCertificate } from '../../src/certs.js';
import type { ChainTarget } from './chain.js';
import { acceptsTcp, freePort, jsonListeningPort, type Daemon, type Procs } from './procs.js';
import type { Workload } from './workloads.js';

/** What a target's `start` gets. */
export interface TargetContext {
  /** Repository root (absolute). */
  root: string;
  /** The shared directory (`../shared` or $IPC_SHARED), absolute. */
  shared: string;
  /** The run directory holding the echo service's socket. */
  rundir: string;
  /** The echo service's name (`echo`) and socket path (`$RUNDIR/echo`). */
  service: string;
  servicePath: string;
  /** The C echo service. */
  echod: Daemon;
  procs: Procs;
  /** `root`-relative path made absolute. */
  repo(relative: string): string;
  /** Shared between targets (the TLS files, made once). */
  cache: Map<string, unknown>;
  /** Connections the idle workload holds (HAProxy's maxconn is set above it). */
  idleConns: number;
}

/** A started target. */
export interface RunningTarget {
  /** ipcbench TARGET. */
  url: string;
  /** Extra ipcbench arguments (`--hello NAME`, `--tls-ca FILE`, `--ws-payload=raw`...). */
  args: string[];
  /** The process whose CPU time is the figure of merit (passed first to --cpu-pid). */
  cpuPid: number;
  /** Processes that must stay alive while the target is measured. */
  daemons: Daemon[];
  /** Chain targets: driven by the Node chain client instead of ipcbench. */
  chain?: ChainTarget;
  /** Set when the target cannot run here (say, not installed): its runs are skipped, not failed. */
  unavailable?: string;
  /**
   * Processes inside `cpuPid`'s tree measured on their own too (gatewayd's workers): the
   * result names them, and the rest of the tree is named `primary`. At most 2 (ipcbench
   * measures 4 pids: the target, echod and these).
   */
  cpuSplit?: { name: string; pid: number }[];
}

export interface TargetSpec {
  name: string;
  description: string;
  /**
   * `baseline`: throughput of every target is divided by its figure (one per run: unix).
   * `anchor`: a reference program other targets' CPU per message is compared with.
   * `gateway`: our product.
   */
  role: 'baseline' | 'anchor' | 'gateway';
  /** The anchor whose CPU per message this target's is divided by. */
  cpuVs?: string;
  /** The anchor whose throughput this target's is divided by, and the goal (ratio at least). */
  rateVs?: { name: string; goal: number };
  /**
   * Figures of `rateVs` to fall back on when it cannot run (the issue's), for one workload:
   * its throughput as a ratio to the baseline, and its CPU µs per message.
   */
  rateVsFallback?: { workload: string; vsBaseline: number; cpu: number; source: string };
  /** The baseline of its throughput ratios (default `unix`). */
  baseline?: string;
  /** Who drives it (default ipcbench). */
  kind?: 'ipcbench' | 'chain';
  /** The workload ids it runs (default: every workload of its kind but idle). */
  workloads?: readonly string[];
  /** Runs the idle workload (memory per held connection; each run on a fresh process). */
  idle?: boolean;
  /**
   * The established proxy this gateway is set beside in the issue's table (CPU per
   * message, and memory per idle connection, as a ratio to its): HAProxy, websockify.
   */
  peer?: string;
  /**
   * A gateway of ours this one is compared with in the same run (gatewayd with tcpd: same
   * gateway code, one config file, N workers): CPU per message and throughput as ratios.
   */
  compareWith?: string;
  /** Part of the default selection. */
  default: boolean;
  start(ctx: TargetContext): Promise<RunningTarget>;
}

/**
 * Starts one of our Node daemons (`dist/...` CLI) with `RUNDIR` set, waiting for its
 * `listening` log line to learn the port (listen on port 0).
 */
export async function startNodeDaemon(
  ctx: TargetContext,
  name: string,
  script: string,
  args: readonly string[],
  transport?: string,
  rundir = ctx.rundir,
  env: NodeJS.ProcessEnv = {},
): Promise<{ daemon: Daemon; port: number }> {
  if (!fs.existsSync(script)) throw new Error(`${script} is missing: run \`npm run build\` (npm run bench does)`);
  const { daemon, value } = await ctx.procs.startDaemon(name, process.execPath, [script, ...args], {
    env: { RUNDIR: rundir, IPC_NETWORK: undefined, ...env },
    cwd: ctx.root,
    ready: (log) => jsonListeningPort(log, transport),
  });
  return { daemon, port: value as number };
}

/** Starts one of our Node daemons that listens on Unix sockets only (ipcd, an outbound-only gateway). */
async function startUnixDaemon(ctx: TargetContext, name: string, script: string, args: readonly string[], rundir: string): Promise<Daemon> {
  if (!fs.existsSync(script)) throw new Error(`${script} is missing: run \`npm run build\` (npm run bench does)`);
  const { daemon } = await ctx.procs.startDaemon(name, process.execPath, [script, ...args], {
    env: { RUNDIR: rundir, IPC_NETWORK: undefined },
    cwd: ctx.root,
    ready: (log) => (/"msg":"listening"/.test(log) ? true : undefined),
  });
  return daemon;
}

/**
 * gatewayd with one tcp gateway (`service: echo`, as the tcpd target) and `workers` worker
 * processes; ready once its `gatewayd started` line is logged (every worker serving).
 * CPU: the primary's process tree (primary and workers); with workers, each worker on
 * its own too, so the report shows how the work was spread.
 */
async function startGatewayd(ctx: TargetContext, workers: number, policy?: 'none'): Promise<RunningTarget> {
  const name = `gatewayd-${workers}${policy ? `-${policy}` : ''}`;
  const script = ctx.repo('dist/gateways/cli/gatewayd.js');
  if (!fs.existsSync(script)) throw new Error(`${script} is missing: run \`npm run build\` (npm run bench does)`);
  const config = path.join(ctx.rundir, `${name}.yaml`);
  fs.writeFileSync(
    config,
    `workers: ${workers}\ndrain-timeout: 1000\ngateways:\n  - type: tcp\n    listen: 127.0.0.1:0\n    service: ${ctx.service}\n`,
  );
  let started: { workerPids?: number[] } = {};
  const { daemon, value } = await ctx.procs.startDaemon(name, process.execPath, [script, '--config', config], {
    env: { RUNDIR: ctx.rundir, IPC_NETWORK: undefined, NODE_CLUSTER_SCHED_POLICY: policy },
    cwd: ctx.root,
    ready: (log) => {
      const line = log.split('\n').find((l) => l.includes('"msg":"gatewayd started"'));
      if (line === undefined) return undefined;
      started = JSON.parse(line) as typeof started;
      return jsonListeningPort(log, 'tcp');
    },
  });
  const pids = started.workerPids ?? [];
  return {
    url: `tcp://127.0.0.1:${value as number}`,
    args: [],
    cpuPid: daemon.pid,
    daemons: [daemon],
    ...(pids.length > 1 ? { cpuSplit: pids.slice(0, 2).map((pid, i) => ({ name: `worker ${i}`, pid })) } : {}),
  };
}

/** A development CA and a server certificate for 127.0.0.1 (src/certs.ts, ECDSA P-256), in RUNDIR. */
export function tlsFiles(ctx: TargetContext): { ca: string; cert: string; key: string } {
  const cached = ctx.cache.get('tls') as { ca: string; cert: string; key: string } | undefined;
  if (cached) return cached;
  const dir = path.join(ctx.rundir, 'tls');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = createCa();
  const server = createServerCertificate(ca);
  const files = { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server-key.pem') };
  fs.writeFileSync(files.ca, ca.cert);
  fs.writeFileSync(files.cert, server.cert);
  fs.writeFileSync(files.key, server.key, { mode: 0o600 });
  ctx.cache.set('tls', files);
  return files;
}

/** The absolute path of `command` on PATH, or null. */
function onPath(command: string): string | null {
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, command);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return null;
}

/** The workloads the TLS and WebSocket targets run: rr at 1 and 64 connections, and the issue's table rows. */
const SECURE_AND_WS_WORKLOADS = ['rr-c1-64', 'rr-c64-64', 'rr-c64-16k', 'stream-c8-64k', 'connect-c8'] as const;

/**
 * A tcpd started with other flags than the reference target's, measured the same way
 * (CPU vs node-pipe, HAProxy as its peer in the table); not run unless named with --only.
 */
function tcpdVariant(
  name: string,
  description: string,
  args: (ctx: TargetContext) => string[],
  options: { idle?: boolean; hello?: boolean; ref?: boolean } = {},
): TargetSpec {
  return {
    name,
    description,
    role: 'gateway',
    cpuVs: 'node-pipe',
    peer: 'haproxy',
    ...(options.idle ? { idle: true } : {}),
    default: false,
    start: async (ctx) => {
      const script = options.ref ? refScript('tcpd') : ctx.repo('dist/gateways/cli/tcpd.js');
      if (typeof script !== 'string') return script;
      const { daemon, port } = await startNodeDaemon(ctx, name, script, ['--listen', '127.0.0.1:0', ...args(ctx)], 'tcp');
      return { url: `tcp://127.0.0.1:${port}`, args: options.hello ? ['--hello', ctx.service] : [], cpuPid: daemon.pid, daemons: [daemon] };
    },
  };
}

/**
 * The CLI `name` of another built checkout (env BENCH_REF=DIR: a `git worktree` of an older
 * commit, built there), for before/after in one run; a not-run target when it is not set.
 */
function refScript(name: 'tcpd' | 'tlsd' | 'wsd'): string | RunningTarget {
  const ref = process.env['BENCH_REF'];
  const script = ref === undefined ? '' : path.resolve(ref, `dist/gateways/cli/${name}.js`);
  if (ref === undefined || !fs.existsSync(script)) {
    return { url: '', args: [], cpuPid: -1, daemons: [], unavailable: 'set BENCH_REF to a built checkout (git worktree add DIR REV && cd DIR && npm ci && npm run build)' };
  }
  return script;
}

/** wsd with a fixed target, one WebSocket message = one payload (ipcbench --ws-payload=raw). */
async function startWsdTarget(ctx: TargetContext, name: string, env: NodeJS.ProcessEnv = {}, ref = false): Promise<RunningTarget> {
  const script = ref ? refScript('wsd') : ctx.repo('dist/gateways/cli/wsd.js');
  if (typeof script !== 'string') return script;
  const { daemon, port } = await startNodeDaemon(
    ctx,
    name,
    script,
    ['--listen', '127.0.0.1:0', '--service', ctx.service, '--no-outbound', '--no-static', '--ping-interval', '0'],
    undefined,
    ctx.rundir,
    env,
  );
  return { url: `ws://127.0.0.1:${port}/${ctx.service}`, args: ['--ws-payload=raw'], cpuPid: daemon.pid, daemons: [daemon] };
}

/** tlsd with a fixed target and the run's ECDSA P-256 certificate (ipcbench verifies it). */
async function startTlsdTarget(ctx: TargetContext, name: string, script: string | RunningTarget, extra: readonly string[] = []): Promise<RunningTarget> {
  if (typeof script !== 'string') return script;
  const tls = tlsFiles(ctx);
  const { daemon, port } = await startNodeDaemon(ctx, name, script, ['--listen', '127.0.0.1:0', '--service', ctx.service, '--cert', tls.cert, '--key', tls.key, '--no-outbound', ...extra]);
  return { url: `tls://127.0.0.1:${port}`, args: ['--tls-ca', tls.ca], cpuPid: daemon.pid, daemons: [daemon] };
}

/** The workloads gatewayd runs (issue 9): rr at 64 connections of 64 B, and connect. */
const GATEWAYD_WORKLOADS = ['rr-c64-64', 'connect-c8'] as const;

/** The workloads HAProxy (TCP) runs: the issue's table rows. */
const HAPROXY_WORKLOADS = ['rr-c64-64', 'rr-c64-16k', 'stream-c8-64k', 'connect-c8'] as const;

/** $HAPROXY when set (only it), else Debian's /usr/sbin/haproxy, else haproxy on PATH; null when absent. */
function haproxyCommand(): string | null {
  const candidates = process.env['HAPROXY'] ? [process.env['HAPROXY']] : ['/usr/sbin/haproxy'];
  for (const candidate of candidates) {
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return process.env['HAPROXY'] ? null : onPath('haproxy');
}

/**
 * HAProxy in TCP mode, one thread, in front of the echo service's Unix socket (with
 * `ssl crt`: TLS with tlsd's certificate and key). No logging (tcpd logs one line per
 * connection: see tcpd-quiet). Timeouts of an hour so the idle workload's held
 * connections are not cut; maxconn above the idle workload's N.
 */
async function startHaproxy(ctx: TargetContext, name: string, tls: boolean): Promise<RunningTarget> {
  const command = haproxyCommand();
  if (!command) {
    const why = process.env['HAPROXY'] ? `HAPROXY=${process.env['HAPROXY']} is not an executable` : 'not installed (apt-get install -y haproxy)';
    return { url: '', args: [], cpuPid: -1, daemons: [], unavailable: why };
  }
  const port = await freePort();
  const maxconn = Math.max(4096, ctx.idleConns + 256);
  let bind = `127.0.0.1:${port}`;
  let args: string[] = [];
  if (tls) {
    const files = tlsFiles(ctx);
    // HAProxy reads the certificate and its key from one PEM file.
    const pem = path.join(path.dirname(files.key), 'haproxy.pem');
    if (!fs.existsSync(pem)) fs.writeFileSync(pem, fs.readFileSync(files.cert, 'utf8') + fs.readFileSync(files.key, 'utf8'), { mode: 0o600 });
    bind += ` ssl crt ${pem}`;
    args = ['--tls-ca', files.ca];
  }
  const config = path.join(ctx.rundir, `${name}.cfg`);
  fs.writeFileSync(
    config,
    [
      'global',
      '  nbthread 1',
      `  maxconn ${maxconn}`,
      'defaults',
      '  mode tcp',
      `  maxconn ${maxconn}`,
      '  timeout connect 5s',
      '  timeout client 1h',
      '  timeout server 1h',
      'frontend fe',
      `  bind ${bind}`,
      '  default_backend be',
      'backend be',
      `  server echo ${ctx.servicePath}`,
      '',
    ].join('\n'),
  );
  // -db: foreground, one process (no master): its pid is the one measured.
  const { daemon } = await ctx.procs.startDaemon(name, command, ['-db', '-f', config], {
    ready: async () => ((await acceptsTcp(port)) ? true : undefined),
  });
  return { url: `${tls ? 'tls' : 'tcp'}://127.0.0.1:${port}`, args, cpuPid: daemon.pid, daemons: [daemon] };
}

/** Starts the anchor `anchors/node-pipe.js` (tcp or tls) on a free port. */
export async function startNodePipe(
  ctx: TargetContext,
  name: string,
  mode: 'tcp' | 'tls',
  extra: readonly string[] = [],
): Promise<{ daemon: Daemon; port: number }> {
  const script = path.join(ctx.shared, 'tools/ipcbench/anchors/node-pipe.js');
  const port = await freePort();
  const { daemon } = await ctx.procs.startDaemon(
    name,
    process.execPath,
    [script, mode, String(port), ctx.servicePath, ...extra],
    { ready: (log) => (log.includes(`listening on 127.0.0.1:${port}`) ? true : undefined) },
  );
  return { daemon, port };
}

export const TARGETS: readonly TargetSpec[] = [
  {
    name: 'unix',
    description: 'direct Unix socket to echod (the ceiling; CPU column is echod)',
    role: 'baseline',
    default: true,
    start: async (ctx) => ({ url: `unix:${ctx.servicePath}`, args: [], cpuPid: ctx.echod.pid, daemons: [] }),
  },
  {
    name: 'node-pipe',
    description: 'naive Node pipe() proxy, TCP -> Unix (anchors/node-pipe.js tcp)',
    role: 'anchor',
    default: true,
    start: async (ctx) => {
      const { daemon, port } = await startNodePipe(ctx, 'node-pipe', 'tcp');
      return { url: `tcp://127.0.0.1:${port}`, args: [], cpuPid: daemon.pid, daemons: [daemon] };
    },
  },
  {
    name: 'haproxy',
    description: 'HAProxy (Debian), TCP mode, nbthread 1, no logging, server = the Unix socket',
    role: 'anchor',
    default: true,
    workloads: HAPROXY_WORKLOADS,
    idle: true,
    start: (ctx) => startHaproxy(ctx, 'haproxy', false),
  },
  {
    name: 'tcpd',
    description: 'tcpd --service echo (fixed target)',
    role: 'gateway',
    cpuVs: 'node-pipe',
    peer: 'haproxy',
    idle: true,
    default: true,
    start: async (ctx) => {
      const { daemon, port } = await startNodeDaemon(
        ctx,
        'tcpd',
        ctx.repo('dist/gateways/cli/tcpd.js'),
        ['--listen', '127.0.0.1:0', '--service', ctx.service],
        'tcp',
      );
      return { url: `tcp://127.0.0.1:${port}`, args: [], cpuPid: daemon.pid, daemons: [daemon] };
    },
  },
  tcpdVariant('tcpd-js', 'tcpd --service echo --data-plane js (the JS switch moves the bytes; the default is the native data plane)', (ctx) => ['--service', ctx.service, '--data-plane', 'js'], {
    idle: true,
  }),
  {
    name: 'tcpd-admin',
    description: 'tcpd --service echo with --admin, /metrics scraped every second during the run (issue 10: within noise of tcpd)',
    role: 'gateway',
    cpuVs: 'node-pipe',
    peer: 'haproxy',
    default: false,
    start: async (ctx) => {
      const adminPort = await freePort();
      const { daemon, port } = await startNodeDaemon(
        ctx,
        'tcpd-admin',
        ctx.repo('dist/gateways/cli/tcpd.js'),
        ['--listen', '127.0.0.1:0', '--service', ctx.service, '--admin', `127.0.0.1:${adminPort}`],
        'tcp',
      );
      // A scrape a second (Prometheus' default is 15 s: this is the heavy end), counted in
      // tcpd's CPU; the scraper itself is this process, not measured.
      const scraper = setInterval(() => {
        if (daemon.exit !== null) return clearInterval(scraper);
        fetch(`http://127.0.0.1:${adminPort}/metrics`).then((r) => r.text()).catch(() => undefined);
      }, 1000);
      scraper.unref();
      return { url: `tcp://127.0.0.1:${port}`, args: [], cpuPid: daemon.pid, daemons: [daemon] };
    },
  },
  tcpdVariant('tcpd-ref', 'tcpd --service echo from another built checkout (env BENCH_REF=DIR): before/after in one run', (ctx) => ['--service', ctx.service], {
    idle: true,
    ref: true,
  }),
  tcpdVariant(
    'tcpd-per-ip',
    'tcpd --service echo with per-IP limits on (--max-connections-per-ip, --connect-rate-per-ip): checked once per connection',
    (ctx) => ['--service', ctx.service, '--no-outbound', '--max-connections-per-ip', '100000', '--connect-rate-per-ip', '1000000'],
  ),
  {
    name: 'tcpd-quiet',
    description: 'tcpd --service echo --log-level warn (no per-connection log line)',
    role: 'gateway',
    cpuVs: 'node-pipe',
    peer: 'haproxy',
    default: false,
    start: async (ctx) => {
      // At warn the `listening` line is not logged: listen on a free port and probe it.
      const script = ctx.repo('dist/gateways/cli/tcpd.js');
      const port = await freePort();
      const { daemon } = await ctx.procs.startDaemon(
        'tcpd-quiet',
        process.execPath,
        [script, '--listen', `127.0.0.1:${port}`, '--service', ctx.service, '--no-outbound', '--log-level', 'warn'],
        { env: { RUNDIR: ctx.rundir }, cwd: ctx.root, ready: async () => ((await acceptsTcp(port)) ? true : undefined) },
      );
      return { url: `tcp://127.0.0.1:${port}`, args: [], cpuPid: daemon.pid, daemons: [daemon] };
    },
  },
  // --no-outbound: `tcpd` already serves the outbound service `$RUNDIR/tcp`.
  tcpdVariant('tcpd-hello', 'tcpd --allow echo: the client names the service (raw name, raw ok)', (ctx) => ['--allow', ctx.service, '--no-outbound'], {
    hello: true,
  }),
  {
    name: 'gatewayd-1',
    description: 'gatewayd, workers: 1 (one process, no cluster), one tcp gateway with service: echo',
    role: 'gateway',
    cpuVs: 'node-pipe',
    compareWith: 'tcpd',
    workloads: GATEWAYD_WORKLOADS,
    default: true,
    start: (ctx) => startGatewayd(ctx, 1),
  },
  {
    name: 'gatewayd-2',
    description: 'gatewayd, workers: 2 (node:cluster round-robin: the primary accepts, hands each connection to a worker); CPU = primary + workers',
    role: 'gateway',
    cpuVs: 'node-pipe',
    compareWith: 'tcpd',
    workloads: GATEWAYD_WORKLOADS,
    default: true,
    start: (ctx) => startGatewayd(ctx, 2),
  },
  {
    name: 'gatewayd-2-none',
    description: 'gatewayd-2 with NODE_CLUSTER_SCHED_POLICY=none: each worker accepts from the shared socket (no hand-off; the kernel decides the spread); gatewayd-2 minus this = the round-robin hand-off',
    role: 'gateway',
    cpuVs: 'node-pipe',
    compareWith: 'tcpd',
    workloads: GATEWAYD_WORKLOADS,
    default: false,
    start: (ctx) => startGatewayd(ctx, 2, 'none'),
  },
  {
    name: 'node-pipe-tls',
    description: 'naive Node TLS pipe() proxy, TLS -> Unix (anchors/node-pipe.js tls, same certificate)',
    role: 'anchor',
    default: true,
    workloads: SECURE_AND_WS_WORKLOADS,
    start: async (ctx) => {
      const tls = tlsFiles(ctx);
      const { daemon, port } = await startNodePipe(ctx, 'node-pipe-tls', 'tls', [tls.cert, tls.key]);
      return { url: `tls://127.0.0.1:${port}`, args: ['--tls-ca', tls.ca], cpuPid: daemon.pid, daemons: [daemon] };
    },
  },
  {
    name: 'haproxy-tls',
    description: 'HAProxy (Debian), TCP mode with ssl crt (tlsd\'s certificate and key), nbthread 1, server = the Unix socket',
    role: 'anchor',
    default: true,
    workloads: SECURE_AND_WS_WORKLOADS,
    idle: true,
    start: (ctx) => startHaproxy(ctx, 'haproxy-tls', true),
  },
  {
    name: 'tlsd',
    description: 'tlsd --service echo --no-outbound (ECDSA P-256 certificate; ipcbench verifies it)',
    role: 'gateway',
    cpuVs: 'node-pipe-tls',
    peer: 'haproxy-tls',
    idle: true,
    default: true,
    workloads: SECURE_AND_WS_WORKLOADS,
    start: (ctx) => startTlsdTarget(ctx, 'tlsd', ctx.repo('dist/gateways/cli/tlsd.js')),
  },
  {
    name: 'tlsd-ref',
    description: 'tlsd as above from another built checkout (env BENCH_REF=DIR): before/after in one run',
    role: 'gateway',
    cpuVs: 'node-pipe-tls',
    peer: 'haproxy-tls',
    idle: true,
    default: false,
    workloads: SECURE_AND_WS_WORKLOADS,
    start: (ctx) => startTlsdTarget(ctx, 'tlsd-ref', refScript('tlsd')),
  },
  {
    name: 'tlsd-direct-read',
    description: 'tlsd with --direct-read: service sockets read into a buffer per connection (net onread)',
    role: 'gateway',
    cpuVs: 'node-pipe-tls',
    peer: 'haproxy-tls',
    idle: true,
    default: false,
    workloads: SECURE_AND_WS_WORKLOADS,
    start: (ctx) => startTlsdTarget(ctx, 'tlsd-direct-read', ctx.repo('dist/gateways/cli/tlsd.js'), ['--direct-read']),
  },
  {
    name: 'websockify',
    description: 'websockify (Debian, Python) to the Unix socket; loses message boundaries: ipcbench --ws-payload=framed',
    role: 'anchor',
    default: true,
    workloads: SECURE_AND_WS_WORKLOADS,
    start: async (ctx) => {
      const command = onPath('websockify');
      if (!command) {
        return { url: '', args: [], cpuPid: -1, daemons: [], unavailable: 'not installed (apt-get install -y websockify)' };
      }
      const port = await freePort();
      const { daemon } = await ctx.procs.startDaemon(
        'websockify',
        command,
        [`127.0.0.1:${port}`, `--unix-target=${ctx.servicePath}`],
        { ready: async () => ((await acceptsTcp(port)) ? true : undefined), readyTimeoutMs: 20_000 },
      );
      return { url: `ws://127.0.0.1:${port}/${ctx.service}`, args: ['--ws-payload=framed'], cpuPid: daemon.pid, daemons: [daemon] };
    },
  },
  {
    name: 'wsd',
    description: 'wsd --service echo --no-outbound --no-static --ping-interval 0 (one WS message = one payload)',
    role: 'gateway',
    cpuVs: 'node-pipe',
    rateVs: { name: 'websockify', goal: 5 },
    rateVsFallback: { workload: 'rr-c64-64', vsBaseline: 0.04, cpu: 174, source: "the issue's websockify figures" },
    peer: 'websockify',
    idle: true,
    default: true,
    workloads: SECURE_AND_WS_WORKLOADS,
    start: (ctx) => startWsdTarget(ctx, 'wsd'),
  },
  {
    name: 'wsd-ref',
    description: 'wsd as above from another built checkout (env BENCH_REF=DIR): before/after in one run',
    role: 'gateway',
    cpuVs: 'node-pipe',
    peer: 'websockify',
    idle: true,
    default: false,
    workloads: SECURE_AND_WS_WORKLOADS,
    start: (ctx) => startWsdTarget(ctx, 'wsd-ref', {}, true),
  },
  {
    name: 'wsd-js-mask',
    description: 'wsd as above with WS_NO_BUFFER_UTIL=1: ws masks in JS instead of the optional bufferutil addon',
    role: 'gateway',
    cpuVs: 'node-pipe',
    peer: 'websockify',
    default: false,
    workloads: SECURE_AND_WS_WORKLOADS,
    start: (ctx) => startWsdTarget(ctx, 'wsd-js-mask', { WS_NO_BUFFER_UTIL: '1' }),
  },
  {
    name: 'chain-direct',
    description: 'the Node chain client straight to unix:$RUNDIR/echo (connectIpc, IPC_NETWORK unset)',
    role: 'baseline',
    kind: 'chain',
    default: true,
    start: async (ctx) => ({
      url: `connectIpc -> unix:${ctx.servicePath}`,
      args: [],
      cpuPid: ctx.echod.pid,
      daemons: [],
      chain: {
        clientScript: chainClientScript(ctx),
        cwd: ctx.root,
        rundir: ctx.rundir,
        network: undefined,
        service: ctx.service,
        gateways: [],
        echodPid: ctx.echod.pid,
      },
    }),
  },
  {
    name: 'chain',
    description: 'connectIpc -> ipcd -> tcpd A (outbound) -> TCP -> tcpd B (--allow echo) -> echod; CPU = ipcd + tcpd A + tcpd B',
    role: 'gateway',
    kind: 'chain',
    baseline: 'chain-direct',
    default: true,
    start: async (ctx) => {
      // Host B is RUNDIR (echod is $RUNDIR/echo); host A is its own run directory.
      const rundirA = path.join(ctx.rundir, 'a');
      fs.mkdirSync(rundirA, { recursive: true });
      const tcpd = ctx.repo('dist/gateways/cli/tcpd.js');
      const b = await startNodeDaemon(ctx, 'chain-tcpd-B', tcpd, ['--listen', '127.0.0.1:0', '--allow', ctx.service, '--no-outbound'], 'tcp');
      const a = await startUnixDaemon(ctx, 'chain-tcpd-A', tcpd, ['--outbound-only'], rundirA);
      const ipcd = await startUnixDaemon(ctx, 'chain-ipcd', ctx.repo('dist/gateways/cli/ipcd.js'), [], rundirA);
      const network = `${ctx.service} tcp://127.0.0.1:${b.port}/${ctx.service}`;
      return {
        url: `connectIpc, RUNDIR=${rundirA}, IPC_NETWORK='${network}'`,
        args: [],
        cpuPid: ipcd.pid,
        daemons: [ipcd, a, b.daemon],
        chain: {
          clientScript: chainClientScript(ctx),
          cwd: ctx.root,
          rundir: rundirA,
          network,
          service: ctx.service,
          gateways: [
            { name: 'ipcd', pid: ipcd.pid },
            { name: 'tcpd-A', pid: a.pid },
            { name: 'tcpd-B', pid: b.daemon.pid },
          ],
          echodPid: ctx.echod.pid,
        },
      };
    },
  },
];

function chainClientScript(ctx: TargetContext): string {
  const script = ctx.repo('dist/scripts/bench/chain-client.js');
  if (!fs.existsSync(script)) throw new Error(`${script} is missing: run \`npm run build\` (npm run bench does)`);
  return script;
}

/** Whether target `t` runs workload `w`. */
export function runsWorkload(t: TargetSpec, w: Workload): boolean {
  if ((t.kind ?? 'ipcbench') !== w.kind) return false;
  if (w.mode === 'idle') return t.idle === true;
  return t.workloads === undefined || t.workloads.includes(w.id);
}

/**
 * The targets to run: `only` (names) or the default set; unless `bare`, the baseline and
 * the anchors the chosen targets are compared with (cpuVs, rateVs, peer) are added, so
 * ratios stay available.
 */
export function selectTargets(only: readonly string[] | undefined, bare: boolean): TargetSpec[] {
  const byName = new Map(TARGETS.map((t) => [t.name, t]));
  const unknown = (only ?? []).filter((n) => !byName.has(n));
  if (unknown.length) {
    throw new Error(`unknown target(s) ${unknown.join(', ')}; known: ${TARGETS.map((t) => t.name).join(', ')}`);
  }
  const chosen = new Set(only?.length ? only : TARGETS.filter((t) => t.default).map((t) => t.name));
  if (!bare) {
    for (const name of [...chosen]) {
      const spec = byName.get(name)!;
      if (spec.role !== 'baseline') chosen.add(spec.baseline ?? 'unix');
      if (spec.cpuVs) chosen.add(spec.cpuVs);
      if (spec.rateVs) chosen.add(spec.rateVs.name);
      if (spec.peer) chosen.add(spec.peer);
      if (spec.compareWith) chosen.add(spec.compareWith);
    }
  }
  // Registry order: each gateway after the anchors it is compared with.
  return TARGETS.filter((t) => chosen.has(t.name));
}

/**
 * The workloads to run with these targets: those of `selected` that some target other
 * than a baseline or anchor runs (all of them when only references were chosen).
 */
export function workloadsFor(selected: readonly Workload[], targets: readonly TargetSpec[]): Workload[] {
  const measured = targets.filter((t) => t.role === 'gateway');
  const drivers = measured.length ? measured : targets;
  return selected.filter((w) => drivers.some((t) => runsWorkload(t, w)));
}

/**
 * The targets the benchmark measures, as a registry: each entry says how to start it,
 * the ipcbench URL and extra arguments, and which process's CPU time is "the gateway's".
 *
 * Adding a gateway is one entry. A sketch for tlsd (certificates from `npm run gen-certs`):
 *
 *   {
 *     name: 'tlsd', role: 'gateway', cpuVs: 'node-pipe-tls', default: true,
 *     description: 'tlsd --service echo (TLS -> Unix)',
 *     start: async (ctx) => {
 *       const { daemon, port } = await startNodeDaemon(ctx, 'tlsd', ctx.repo('dist/gateways/cli/tlsd.js'),
 *         ['--listen', '127.0.0.1:0', '--service', ctx.service, '--cert', CERT, '--key', KEY]);
 *       return { url: `tls://127.0.0.1:${port}`, args: ['--tls-ca', CA], cpuPid: daemon.pid, daemons: [daemon] };
 *     },
 *   }
 *
 * with a `node-pipe-tls` anchor entry running `node-pipe.js tls PORT SOCKET CERT KEY`.
 * wsd: url `ws://127.0.0.1:${port}/echo` (args `--ws-payload=framed` or raw, per wsd's mode).
 */
import fs from 'node:fs';
import path from 'node:path';
import { acceptsTcp, freePort, jsonListeningPort, type Daemon, type Procs } from './procs.js';

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
): Promise<{ daemon: Daemon; port: number }> {
  if (!fs.existsSync(script)) throw new Error(`${script} is missing: run \`npm run build\` (npm run bench does)`);
  const { daemon, value } = await ctx.procs.startDaemon(name, process.execPath, [script, ...args], {
    env: { RUNDIR: ctx.rundir },
    cwd: ctx.root,
    ready: (log) => jsonListeningPort(log, transport),
  });
  return { daemon, port: value as number };
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
    name: 'tcpd',
    description: 'tcpd --service echo (fixed target)',
    role: 'gateway',
    cpuVs: 'node-pipe',
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
  {
    name: 'tcpd-quiet',
    description: 'tcpd --service echo --log-level warn (no per-connection log line)',
    role: 'gateway',
    cpuVs: 'node-pipe',
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
  {
    name: 'tcpd-hello',
    description: 'tcpd --allow echo: the client names the service (raw name, raw ok)',
    role: 'gateway',
    cpuVs: 'node-pipe',
    default: false,
    start: async (ctx) => {
      const { daemon, port } = await startNodeDaemon(
        ctx,
        'tcpd-hello',
        ctx.repo('dist/gateways/cli/tcpd.js'),
        // --no-outbound: `tcpd` above already serves the outbound service `$RUNDIR/tcp`.
        ['--listen', '127.0.0.1:0', '--allow', ctx.service, '--no-outbound'],
        'tcp',
      );
      return { url: `tcp://127.0.0.1:${port}`, args: ['--hello', ctx.service], cpuPid: daemon.pid, daemons: [daemon] };
    },
  },
];

/**
 * The targets to run: `only` (names) or the default set; unless `bare`, the baseline and
 * the anchors the chosen targets are compared with are added, so ratios stay available.
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
      for (const t of TARGETS) if (t.role === 'baseline') chosen.add(t.name);
      if (spec.cpuVs) chosen.add(spec.cpuVs);
    }
  }
  // Registry order: baseline, anchors, then gateways.
  return TARGETS.filter((t) => chosen.has(t.name));
}

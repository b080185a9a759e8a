/**
 * ../shared/tools/ipcbench for tests: the C load generator (which verifies every byte it
 * gets back) and the C echo service, built once per test process with make into
 * .bench/test-bin (as `npm run bench` builds them into .bench/bin), bounded in time.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { LoggedProcess, killAtTeardown } from './daemon.js';
import { REPO_ROOT } from './paths.js';
import { until } from './wait.js';

/** The sources: `$IPC_SHARED/tools/ipcbench`, else ../shared beside the repository. */
export const TOOL_DIR = path.join(process.env['IPC_SHARED'] || path.join(REPO_ROOT, '..', 'shared'), 'tools', 'ipcbench');
const BIN_DIR = path.join(REPO_ROOT, '.bench', 'test-bin');
const BUILD_TIMEOUT = 120_000;

/**
 * What the build needs and this machine lacks (gcc, make, OpenSSL's headers), or null.
 * scripts/install-system-deps.sh installs them (gcc make libssl-dev).
 */
export function missingToolchain(): string | null {
  const missing = ['gcc', 'make'].filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);
  if (!existsSync('/usr/include/openssl/ssl.h')) missing.push('libssl-dev');
  return missing.length ? missing.join(', ') : null;
}

export interface IpcbenchBins {
  ipcbench: string;
  echod: string;
}

let built: Promise<IpcbenchBins> | null = null;

/** Builds echod and ipcbench (once per process; make skips them when up to date). */
export function buildIpcbench(): Promise<IpcbenchBins> {
  built ??= new Promise((resolve, reject) => {
    if (!existsSync(path.join(TOOL_DIR, 'Makefile'))) {
      reject(new Error(`${TOOL_DIR}/Makefile not found: set IPC_SHARED to the shared directory (holding tools/ipcbench)`));
      return;
    }
    mkdirSync(BIN_DIR, { recursive: true });
    const make = spawn('make', ['-s', '-C', BIN_DIR, '-f', path.join(TOOL_DIR, 'Makefile'), `VPATH=${TOOL_DIR}`, 'all'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    make.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    make.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => make.kill('SIGKILL'), BUILD_TIMEOUT);
    make.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run make: ${err.message}`));
    });
    make.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ ipcbench: path.join(BIN_DIR, 'ipcbench'), echod: path.join(BIN_DIR, 'echod') });
      else {
        const how = signal === 'SIGKILL' ? `not done within ${BUILD_TIMEOUT / 1000} s` : `make exit ${code} (${signal ?? 'no signal'})`;
        reject(new Error(`building ipcbench failed: ${how}; it needs gcc, make and libssl-dev:\n${output.trim().slice(-2000)}`));
      }
    });
  });
  return built;
}

/** Starts echod on `socketPath` (quiet) and waits for its socket; stopped at teardown. */
export async function startEchod(t: ExecutionContext, bins: IpcbenchBins, socketPath: string): Promise<LoggedProcess> {
  const echod = killAtTeardown(t, new LoggedProcess('echod', spawn(bins.echod, ['--quiet', socketPath], { stdio: ['ignore', 'pipe', 'pipe'] })));
  await until(() => existsSync(socketPath) || !echod.running, `echod's socket ${socketPath}`);
  if (!echod.running) throw new Error(`echod exited: ${echod.stderr}`);
  return echod;
}

/** The parts of ipcbench's JSON line (rr) the tests read. */
export interface IpcbenchResult {
  mode: string;
  conns: number;
  conns_ready: number;
  conns_failed: number;
  msgs: number;
  errors: Record<string, number>;
  errors_total: number;
  connect_retries: number;
  [key: string]: unknown;
}

/** One ipcbench run: its process (SIGKILLed at teardown) and its outcome once it ends. */
export interface IpcbenchRun {
  process: LoggedProcess;
  /** Resolves when it exited, with its JSON line (null if it printed none). */
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; result: IpcbenchResult | null; stderr: string }>;
}

/**
 * Starts `ipcbench ...args` (its own watchdog ends it after warmup + duration +
 * open-timeout + 60 s; `timeout` ms, the test's bound, comes first).
 */
export function runIpcbench(t: ExecutionContext, bins: IpcbenchBins, args: readonly string[], timeout: number): IpcbenchRun {
  const proc = killAtTeardown(t, new LoggedProcess('ipcbench', spawn(bins.ipcbench, args, { stdio: ['ignore', 'pipe', 'pipe'] })));
  const done = proc.waitExit(timeout).then((exit) => {
    const line = proc.stdout.split('\n').find((l) => l.startsWith('{'));
    let result: IpcbenchResult | null = null;
    try {
      result = line === undefined ? null : (JSON.parse(line) as IpcbenchResult);
    } catch {
      result = null;
    }
    return { ...exit, result, stderr: proc.stderr };
  });
  return { process: proc, done };
}

/**
 * Processes for the chain tests (test/chain.test.ts): the compiled daemons of dist/ with
 * their JSON log lines, one-shot `pong` runs, and a raw Python lookup client that does
 * what an original libipc client does (framed lookup, recvmsg with SCM_RIGHTS).
 * Every process is bounded by a timeout and killed at cleanup.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { childEnv, LoggedProcess, spawnChild } from './daemon.js';
import type { LogLine } from './log-sink.js';
import { cliPath, type CliName } from './paths.js';

/** The repository root (holds package.json and dist/), from test/helpers or dist/test/helpers. */
export { REPO_ROOT as ROOT } from './paths.js';

export type Cli = CliName;

/** Upper bound for a daemon to log `listening` (node startup on a loaded 2-CPU machine). */
export const START_TIMEOUT = 30_000;

export type { LogLine };

/** A spawned daemon: its log lines, waits on them, and its end. */
export class Proc extends LoggedProcess {
  get lines(): LogLine[] {
    return this.log.lines;
  }

  /** Lines logged so far matching `predicate`. */
  find(predicate: (line: LogLine) => boolean): LogLine[] {
    return this.log.filter(predicate);
  }

  /** The first line (already logged or to come) matching `predicate`; rejects after `timeout` ms or at exit. */
  waitLog(predicate: (line: LogLine) => boolean, timeout: number, what = 'a matching log line'): Promise<LogLine> {
    return this.log.waitFor(predicate, timeout, `${this.name}: ${what}`);
  }

  /** Every `listening` line, once `count` of them were logged. */
  async listening(count = 1): Promise<LogLine[]> {
    for (let i = 0; i < count; i++) {
      await this.log.waitForCount((l) => l.msg === 'listening', i + 1, START_TIMEOUT, `${this.name}: listening line #${i + 1}`);
    }
    return this.find((l) => l.msg === 'listening');
  }

  /** The port of its first TCP `listening` line. */
  async port(): Promise<number> {
    const line = await this.waitLog((l) => l.msg === 'listening' && typeof l['port'] === 'number', START_TIMEOUT, 'a TCP listening line');
    return line['port'] as number;
  }

  /** SIGTERM, then SIGKILL if it is still running after `grace` ms; resolves at exit. */
  async stop(grace = 5000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), grace);
    await this.exited;
    clearTimeout(timer);
  }

  dump(): string {
    return this.log.dump();
  }
}

export { cliPath };

/**
 * Spawns `node dist/gateways/cli/<cli>.js args` with `RUNDIR` set; `cleanup` receives
 * the function that stops it (ava's t.teardown, or a list run by test.after.always).
 */
export function spawnDaemon(
  cleanup: (stop: () => Promise<void>) => void,
  cli: Cli,
  rundir: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Proc {
  const proc = new Proc(`${cli}(${path.basename(rundir)})`, spawnChild(cli, args, { env: { RUNDIR: rundir, ...env } }));
  cleanup(() => proc.stop());
  return proc;
}

export interface RunResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** True when the run was killed for exceeding its bound. */
  timedOut: boolean;
}

/** Runs a command to its end, killed after `timeout` ms. */
export function run(command: string, args: readonly string[], env: NodeJS.ProcessEnv, timeout: number): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeout);
    child.once('error', (err) => {
      stderr += `spawn error: ${err.message}`;
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

/** Upper bound of a whole `pong` run (its lookup waits at most 5 s for ipcd). */
export const PONG_TIMEOUT = 30_000;

/** Runs `pong [message]` on the host whose run directory is `rundir`, with IPC_NETWORK when given. */
export function runPong(rundir: string, network: string | undefined, args: readonly string[] = []): Promise<RunResult> {
  const env = childEnv({ RUNDIR: rundir, ...(network === undefined ? {} : { IPC_NETWORK: network }) });
  return run(process.execPath, [cliPath('pong'), ...args], env, PONG_TIMEOUT);
}

export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/**
 * An original-style lookup client: connects the Unix socket, sends the bytes, reads the
 * reply with one recvmsg (room for 16 descriptors), then what follows on the lookup
 * socket (EOF expected). With a descriptor, it writes `fdSend` on it and reads `fdRead`
 * bytes back. Every wait is bounded by `timeout` seconds.
 */
const PY_LOOKUP = String.raw`
import array, errno, json, os, socket, stat, sys
a = json.loads(sys.argv[1])
out = {}
def done():
    print(json.dumps(out))
    sys.exit(0)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(a['timeout'])
try:
    s.connect(a['path'])
except OSError as e:
    out['connect_error'] = errno.errorcode.get(e.errno, str(e.errno))
    done()
s.sendall(bytes.fromhex(a['send']))
if a['shutWrite']:
    s.shutdown(socket.SHUT_WR)
try:
    data, anc, flags, _ = s.recvmsg(4096, socket.CMSG_SPACE(16 * 4))
except socket.timeout:
    out['timeout'] = True
    done()
except ConnectionResetError:
    out['reset'] = True
    done()
out['data'] = data.hex()
out['flags'] = flags
out['ancillary'] = []
fds = []
for level, kind, cdata in anc:
    out['ancillary'].append({'level': level, 'type': kind, 'len': len(cdata)})
    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
        fds.extend(array.array('i', cdata[: len(cdata) - len(cdata) % 4]))
out['nfds'] = len(fds)
try:
    out['after'] = s.recv(64).hex()
except socket.timeout:
    out['after_timeout'] = True
except ConnectionResetError:
    out['after_reset'] = True
s.close()
if fds:
    fd = fds[0]
    out['fd_is_socket'] = stat.S_ISSOCK(os.fstat(fd).st_mode)
    f = socket.socket(fileno=fd)
    f.settimeout(a['timeout'])
    if a['fdSend']:
        f.sendall(bytes.fromhex(a['fdSend']))
    got = b''
    try:
        while len(got) < a['fdRead']:
            chunk = f.recv(a['fdRead'] - len(got))
            if not chunk:
                out['fd_eof'] = True
                break
            got += chunk
    except socket.timeout:
        out['fd_timeout'] = True
    out['fd_read'] = got.hex()
    f.close()
    for extra in fds[1:]:
        os.close(extra)
done()
`;

export interface PyLookupResult {
  connect_error?: string;
  /** No reply within the bound. */
  timeout?: boolean;
  reset?: boolean;
  /** The bytes recvmsg returned, hex ('' at EOF). */
  data?: string;
  flags?: number;
  ancillary?: { level: number; type: number; len: number }[];
  nfds?: number;
  /** What followed on the lookup socket ('' = EOF). */
  after?: string;
  after_timeout?: boolean;
  fd_is_socket?: boolean;
  fd_read?: string;
  fd_eof?: boolean;
  fd_timeout?: boolean;
}

export interface PyLookupOptions {
  /** Bytes written on the received descriptor (hex). */
  fdSend?: string;
  /** Bytes read back from it. */
  fdRead?: number;
  /** Half-close (shutdown SHUT_WR) the lookup socket right after sending. */
  shutWrite?: boolean;
  /** Bound of each wait, seconds (default 10). */
  timeout?: number;
}

export async function pyLookup(socketPath: string, sendHex: string, options: PyLookupOptions = {}): Promise<PyLookupResult> {
  const timeout = options.timeout ?? 10;
  const args = JSON.stringify({ path: socketPath, send: sendHex, timeout, fdSend: options.fdSend ?? '', fdRead: options.fdRead ?? 0, shutWrite: options.shutWrite ?? false });
  // Four waits at most, each bounded by `timeout`.
  const result = await run(PYTHON, ['-c', PY_LOOKUP, args], childEnv({}), (timeout * 4 + 10) * 1000);
  if (result.code !== 0) throw new Error(`python lookup client failed (${result.code}): ${result.stderr}`);
  return JSON.parse(result.stdout) as PyLookupResult;
}

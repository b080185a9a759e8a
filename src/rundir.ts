/**
 * The run directory and service names (PROTOCOL.md §2, §3).
 * A service named NAME listens at `$RUNDIR/NAME`. Names reach this module from the
 * network, so they are validated before any path is built from them.
 */
import { mkdirSync, chmodSync, statSync, accessSync, constants } from 'node:fs';
import path from 'node:path';
import { ErrorCode, ipcError } from './errors.js';

/** The original's default run directory. */
export const DEFAULT_RUNDIR = '/tmp/.libipc-run/';

/** Longest accepted service name in bytes (a Unix socket path must fit in 108 bytes). */
export const MAX_SERVICE_NAME_LENGTH = 64;

/** `$RUNDIR` from the environment, or the default. */
export function resolveRundir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env['RUNDIR'];
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEFAULT_RUNDIR;
}

/**
 * Why `name` is not a safe service name, or null when it is.
 * Accepted: 1 to `maxLength` printable ASCII characters, none of them space, `/`, `\`
 * or `;` (the IPC_NETWORK separator), not starting with `.`, no `..` anywhere.
 */
export function serviceNameProblem(name: string, maxLength = MAX_SERVICE_NAME_LENGTH): string | null {
  if (name.length === 0) return 'empty name';
  if (Buffer.byteLength(name) > maxLength) return `longer than ${maxLength} bytes`;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === 0) return 'NUL character';
    if (c < 0x20 || c === 0x7f) return `control character 0x${c.toString(16).padStart(2, '0')}`;
    if (c > 0x7e) return 'non-ASCII character';
    if (c === 0x20) return 'space';
    if (c === 0x2f || c === 0x5c) return 'path separator';
    if (c === 0x3b) return "';' separator";
  }
  if (name.includes('..')) return "'..' sequence";
  if (name.startsWith('.')) return "leading '.'";
  return null;
}

/**
 * Throws unless `name` is a safe service name.
 * @throws IpcError `IPC_ERR_INVALID_SERVICE_NAME`
 */
export function assertServiceName(name: string, maxLength = MAX_SERVICE_NAME_LENGTH): void {
  const problem = serviceNameProblem(name, maxLength);
  if (problem !== null) {
    throw ipcError(ErrorCode.INVALID_SERVICE_NAME, `invalid service name ${JSON.stringify(name)}: ${problem}`);
  }
}

/** Longest Unix socket path (sun_path holds 108 bytes, NUL included). */
export const MAX_SOCKET_PATH_LENGTH = 107;

/**
 * `$RUNDIR/<name>` for a validated name.
 * @throws IpcError `IPC_ERR_INVALID_SERVICE_NAME`; `IPC_ERR_RUNDIR_UNUSABLE` when the path
 *   is too long for a Unix socket (it would otherwise be truncated silently by bind/connect,
 *   creating or reaching another file).
 */
export function servicePath(name: string, rundir = resolveRundir()): string {
  assertServiceName(name);
  const socketPath = path.join(rundir, name);
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_LENGTH) {
    throw ipcError(
      ErrorCode.RUNDIR_UNUSABLE,
      `socket path ${socketPath} is too long (${Buffer.byteLength(socketPath)} bytes, at most ${MAX_SOCKET_PATH_LENGTH}): use a shorter RUNDIR`,
    );
  }
  return socketPath;
}

/**
 * Creates the run directory (mode 0770 whatever the umask) if needed and checks that
 * this process can create sockets in it.
 * @throws IpcError `IPC_ERR_RUNDIR_UNUSABLE` with the path and the reason.
 */
export function ensureRundir(rundir = resolveRundir()): void {
  try {
    let created = false;
    let stat = null;
    try {
      stat = statSync(rundir);
    } catch {
      mkdirSync(rundir, { recursive: true, mode: 0o770 });
      created = true;
    }
    if (stat !== null && !stat.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    // mkdir's mode is filtered by the umask; the original's directory is 0770 regardless.
    if (created) chmodSync(rundir, 0o770);
    accessSync(rundir, constants.W_OK | constants.X_OK);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? String(err);
    throw ipcError(ErrorCode.RUNDIR_UNUSABLE, `run directory ${rundir} is not usable (${reason})`, err);
  }
}

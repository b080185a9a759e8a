/**
 * The run directory and service names (PROTOCOL.md §2, §3).
 * A service named NAME listens at `$RUNDIR/NAME`. Names reach this module from the
 * network, so they are validated before any path is built from them.
 */
import { accessSync, chmodSync, constants, lstatSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { ErrorCode, IpcError, ipcError } from './errors.js';

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

/** A file-system error with an errno-style code, for reasons found by inspection. */
function fsError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

function unusable(rundir: string, reason: string, cause?: unknown) {
  return ipcError(ErrorCode.RUNDIR_UNUSABLE, `run directory ${rundir} is not usable: ${reason}`, cause);
}

/** `err`'s errno code and message, e.g. `ENOENT: no such file or directory, mkdir '/proc/x'`. */
function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code !== undefined && e.message.startsWith(e.code) ? e.message : `${e.code ?? 'error'}: ${e.message}`;
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

function isDirectory(at: string): boolean {
  try {
    return statSync(at, { throwIfNoEntry: false })?.isDirectory() === true;
  } catch {
    return false;
  }
}

/**
 * `mkdir -p`: creates the missing directories of `dir` (mode 0770 before the umask) and
 * returns whether `dir` itself was created by this call. Not Node's `recursive: true`:
 * where mkdir answers ENOENT although the parent exists (/proc, some FUSE file
 * systems), that loops on EEXIST/ENOENT forever at 100% CPU, deaf to signals. Here each
 * component is tried once: EEXIST means it must already be a directory, anything else
 * is the answer.
 */
function makeDirectories(rundir: string, dir: string): boolean {
  // The deepest existing ancestor (stat follows symbolic links, as mkdir -p does).
  const missing: string[] = [];
  for (let at = dir; ; at = path.dirname(at)) {
    let stat;
    try {
      stat = statSync(at, { throwIfNoEntry: false });
    } catch (err) {
      throw unusable(rundir, `cannot reach ${at} (${describe(err)})`, err);
    }
    if (stat !== undefined) {
      if (!stat.isDirectory()) throw unusable(rundir, `${at} is not a directory (ENOTDIR)`, fsError('ENOTDIR', `not a directory, '${at}'`));
      break;
    }
    missing.push(at);
    if (path.dirname(at) === at) break;
  }
  let created = false;
  for (const at of missing.reverse()) {
    try {
      mkdirSync(at, { mode: 0o770 });
      created = at === dir;
    } catch (err) {
      // Made by someone else meanwhile: fine if it is a directory.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !isDirectory(at)) {
        throw unusable(rundir, `cannot create ${at} (${describe(err)})`, err);
      }
      created = false;
    }
  }
  return created;
}

/**
 * Throws unless `rundir` is an existing directory that only trusted users can change:
 * owned by this process's user or root, not writable by others (group-shared 0770 is
 * fine: PROTOCOL.md §2), and searchable (plus writable when `access` says so). A
 * symbolic link as the run directory itself is followed only when it is owned by this
 * user or root, since its owner can repoint it at any time.
 * Anyone who can write the run directory can replace a service's socket between any
 * check and the connect that follows; refusing such directories is what makes the
 * per-connection checks (see connectServicePath) meaningful.
 */
function inspectRundir(rundir: string, access: number): void {
  // Without the trailing slash: lstat of `link/` would follow the link.
  const dir = path.resolve(rundir);
  const uid = process.getuid?.();
  const trusted = (owner: number) => uid === undefined || owner === uid || owner === 0;
  let stat;
  try {
    const link = lstatSync(dir);
    if (link.isSymbolicLink() && !trusted(link.uid)) {
      throw unusable(
        rundir,
        `it is a symbolic link owned by uid ${link.uid}, who can repoint it at any time; set RUNDIR to a directory of your own`,
      );
    }
    stat = link.isSymbolicLink() ? statSync(dir) : link;
  } catch (err) {
    if (err instanceof IpcError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw unusable(rundir, code === 'ENOENT' ? 'it does not exist (ENOENT)' : describe(err), err);
  }
  if (!stat.isDirectory()) throw unusable(rundir, 'not a directory (ENOTDIR)', fsError('ENOTDIR', `not a directory, '${rundir}'`));
  if (!trusted(stat.uid)) {
    throw unusable(
      rundir,
      `it belongs to uid ${stat.uid}, not to this process's user (uid ${uid}) or root, so that user could replace its sockets; ` +
        'set RUNDIR to a directory of your own, or to one owned by root and shared with a group (0770)',
    );
  }
  if ((stat.mode & 0o002) !== 0) {
    throw unusable(
      rundir,
      `mode ${octal(stat.mode)}: any user may write in it and replace its sockets; ` +
        `make it private (chmod o-w ${rundir}; 0770 to share it with a group) or set RUNDIR to a directory of your own`,
    );
  }
  try {
    accessSync(dir, access);
  } catch (err) {
    throw unusable(rundir, describe(err), err);
  }
}

/**
 * Checks the run directory without creating it: for programs that only connect. It
 * must exist, be owned by this user or root, not be writable by others, and be
 * searchable (see {@link ensureRundir} for programs that serve).
 * @throws IpcError `IPC_ERR_RUNDIR_UNUSABLE` with the path, the reason and what to do.
 */
export function checkRundir(rundir = resolveRundir()): void {
  inspectRundir(rundir, constants.X_OK);
}

/**
 * Creates the run directory (mode 0770 whatever the umask; missing parents too) if
 * needed, then checks it as {@link checkRundir} does and that this process can create
 * sockets in it.
 * @throws IpcError `IPC_ERR_RUNDIR_UNUSABLE` with the path, the reason and what to do.
 */
export function ensureRundir(rundir = resolveRundir()): void {
  const dir = path.resolve(rundir);
  // mkdir's mode is filtered by the umask; the original's directory is 0770 regardless.
  if (makeDirectories(rundir, dir)) {
    try {
      chmodSync(dir, 0o770);
    } catch (err) {
      throw unusable(rundir, describe(err), err);
    }
  }
  inspectRundir(rundir, constants.W_OK | constants.X_OK);
}

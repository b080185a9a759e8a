/**
 * Serving a named service at `$RUNDIR/<name>` (PROTOCOL.md §2): exclusive (a second
 * instance fails clearly and leaves the first alone, ours or the original), a stale
 * socket left by a killed process is recovered, modes 0660 whatever the umask, and the
 * socket file is removed when the server closes.
 */
import net from 'node:net';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { ErrorCode, ipcError } from './errors.js';
import { ensureRundir, resolveRundir, servicePath } from './rundir.js';

export interface ServeOptions {
  /** Run directory (default `$RUNDIR` or `/tmp/.libipc-run/`). */
  rundir?: string;
  /** Passed to net.Server; gateways pass true so FIN can be forwarded on purpose. */
  allowHalfOpen?: boolean;
  /** Called for each accepted connection. */
  onConnection?: (socket: net.Socket) => void;
  /** Called for server errors after listening (accept failures). */
  onError?: (err: Error) => void;
}

/** A listening service; `close()` stops it and removes its socket file. */
export interface ServiceServer {
  readonly name: string;
  readonly path: string;
  readonly server: net.Server;
  close(): Promise<void>;
}

/**
 * Resolves true unless the socket at `socketPath` is stale. Only ECONNREFUSED (nobody
 * listens) or ENOENT means stale: a live service whose accept backlog is full answers
 * EAGAIN, and must not be taken over.
 */
function isLive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect({ path: socketPath });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'));
  });
}

function inUse(name: string, socketPath: string) {
  return ipcError(
    ErrorCode.SERVICE_IN_USE,
    `service '${name}' is already served at ${socketPath} by another process`,
  );
}

/**
 * Starts serving `name`.
 * @throws IpcError `IPC_ERR_INVALID_SERVICE_NAME`, `IPC_ERR_RUNDIR_UNUSABLE` (the run
 *   directory cannot be made, or others could write it: see ensureRundir),
 *   `IPC_ERR_SERVICE_IN_USE` (naming the service and its path; also when the path is
 *   anything but a socket, a symbolic link included).
 */
export async function serveService(name: string, options: ServeOptions = {}): Promise<ServiceServer> {
  const rundir = options.rundir ?? resolveRundir();
  const socketPath = servicePath(name, rundir);
  ensureRundir(rundir);

  let existing: import('node:fs').Stats | null = null;
  try {
    existing = lstatSync(socketPath);
  } catch {
    existing = null;
  }
  if (existing !== null) {
    // Never probed, unlinked or bound through: a link can point at any socket or path.
    if (existing.isSymbolicLink()) {
      throw ipcError(ErrorCode.SERVICE_IN_USE, `${socketPath} is a symbolic link, which is not followed; not touching it`);
    }
    if (!existing.isSocket()) {
      throw ipcError(ErrorCode.SERVICE_IN_USE, `${socketPath} exists and is not a socket; not touching it`);
    }
    // A live socket belongs to a running instance (ours or the original, which holds its
    // flock): leave it alone. A refused one is stale, left by a killed process.
    if (await isLive(socketPath)) throw inUse(name, socketPath);
    unlinkSync(socketPath);
  }

  const server = net.createServer({ allowHalfOpen: options.allowHalfOpen ?? false });
  if (options.onConnection) server.on('connection', options.onConnection);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      // Two instances racing past the liveness check: the second bind fails here.
      reject(err.code === 'EADDRINUSE' ? inUse(name, socketPath) : err);
    };
    server.once('error', onError);
    // The original sets umask 0117 around bind so the socket is 0660; do the same, then
    // chmod in case the process umask was changed concurrently.
    const previous = process.umask(0o117);
    try {
      server.listen({ path: socketPath }, () => {
        server.off('error', onError);
        resolve();
      });
    } finally {
      process.umask(previous);
    }
  });
  chmodSync(socketPath, 0o660);
  // Accept errors (ENFILE, ENOMEM...) must not crash the daemon: they go to the logs of
  // whoever listens; with no listener, they are ignored here rather than thrown.
  server.on('error', options.onError ?? noop);

  let closing: Promise<void> | null = null;
  return {
    name,
    path: socketPath,
    server,
    close() {
      // libuv unlinks the socket file when a listening pipe closes.
      closing ??= new Promise<void>((resolve) => server.close(() => resolve()));
      return closing;
    },
  };
}

function noop(): void {}

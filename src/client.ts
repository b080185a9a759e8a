/**
 * Connecting to a service: directly at `$RUNDIR/<name>`, or through ipcd when
 * IPC_NETWORK routes it (PROTOCOL.md §4), as libipc's `connect_ipc` does.
 */
import net from 'node:net';
import { lstatSync } from 'node:fs';
import { ErrorCode, IpcError, ipcError } from './errors.js';
import { resolveRundir, servicePath } from './rundir.js';
import { encodeFrame } from './frame.js';
import { formatLookup } from './network.js';
import { closeFd, connectUnix, receiveFd, socketFromFd, writeAll } from './fdpass.js';

export interface ConnectOptions {
  /** Run directory (default `$RUNDIR` or `/tmp/.libipc-run/`). */
  rundir?: string;
  /** Passed to the socket; gateways use true to forward half-closes on purpose. */
  allowHalfOpen?: boolean;
  /** Passed to the socket: read into caller-provided buffers (see DirectReader). */
  onread?: net.OnReadOpts;
}

/**
 * Connects to the service `name` at `$RUNDIR/<name>`. The returned socket is connected
 * and has no listeners but the caller's.
 * @throws IpcError `IPC_ERR_INVALID_SERVICE_NAME`; `IPC_ERR_SERVICE_UNAVAILABLE` when no
 *   process serves the name (absent or stale socket), naming the service and the path.
 */
export async function connectService(name: string, options: ConnectOptions = {}): Promise<net.Socket> {
  return connectServicePath(name, servicePath(name, options.rundir ?? resolveRundir()), options);
}

/**
 * Connects to the service `name` at `socketPath`, a path already built with
 * {@link servicePath} (gateways with a fixed target build it once).
 * A symbolic link at `socketPath` is refused, not followed: connect(2) would follow it to
 * a socket anywhere. One lstat per connection (no Stats object is made when the path is
 * absent); the link could still appear between it and the connect, which only users who
 * can write the run directory can do: checkRundir refuses directories others can write.
 * @throws IpcError `IPC_ERR_SERVICE_UNAVAILABLE` naming the service and the path.
 */
export function connectServicePath(name: string, socketPath: string, options: ConnectOptions = {}): Promise<net.Socket> {
  if (isSymbolicLink(socketPath)) return Promise.reject(symbolicLinkRefused(name, socketPath));
  return new Promise((resolve, reject) => {
    const socket = net.connect({
      path: socketPath,
      allowHalfOpen: options.allowHalfOpen ?? false,
      ...(options.onread ? { onread: options.onread } : {}),
    });
    const onError = (err: NodeJS.ErrnoException) => {
      socket.destroy();
      reject(serviceUnavailable(name, socketPath, err));
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

/**
 * {@link connectServicePath} without a JS socket, for the native data plane: the addon
 * connects (non-blocking: a Unix connect completes or fails at once) and returns the
 * descriptor, which the caller owns. Same checks and errors.
 * @throws IpcError `IPC_ERR_SERVICE_UNAVAILABLE` naming the service and the path
 *   (`EAGAIN` too: the service's backlog is full).
 */
export function connectServiceFd(name: string, socketPath: string): number {
  if (isSymbolicLink(socketPath)) throw symbolicLinkRefused(name, socketPath);
  try {
    return connectUnix(socketPath);
  } catch (err) {
    const cause = err instanceof IpcError && err.cause instanceof Error ? (err.cause as NodeJS.ErrnoException) : (err as NodeJS.ErrnoException);
    throw serviceUnavailable(name, socketPath, cause);
  }
}

function symbolicLinkRefused(name: string, socketPath: string): IpcError {
  return ipcError(ErrorCode.SERVICE_UNAVAILABLE, `service '${name}' is not available at ${socketPath}: it is a symbolic link, which is not followed`);
}

function serviceUnavailable(name: string, socketPath: string, err: NodeJS.ErrnoException): IpcError {
  return ipcError(ErrorCode.SERVICE_UNAVAILABLE, `service '${name}' is not available at ${socketPath} (${err.code ?? err.message})`, err);
}

/** True when `file` is a symbolic link; other lstat failures are left to connect to report. */
export function isSymbolicLink(file: string): boolean {
  try {
    return lstatSync(file, { throwIfNoEntry: false })?.isSymbolicLink() === true;
  } catch {
    return false;
  }
}

export interface ConnectIpcOptions extends ConnectOptions {
  /** Routes (default `IPC_NETWORK` from the environment; unset means connect directly). */
  network?: string | undefined;
  /** Time ipcd has to answer the lookup, ms (default 5000). */
  lookupTimeout?: number;
}

/**
 * Connects to the service `name` the way libipc clients do: when IPC_NETWORK is set, ask
 * ipcd (`$RUNDIR/ipc`) with one frame `<name>;<IPC_NETWORK>` and use the descriptor it
 * passes back with `ok`; when it is unset, connect `$RUNDIR/<name>` directly.
 * The lookup socket is created outside Node's event loop so that Node never reads the
 * reply (reading it would drop the descriptor: PROTOCOL.md §4a).
 * @throws IpcError `IPC_ERR_SERVICE_UNAVAILABLE` (no ipcd at `$RUNDIR/ipc`, or the
 *   service itself), `IPC_ERR_NO_ROUTE` (ipcd closed the lookup: no route, or the route
 *   failed; ipcd's log says which), `IPC_ERR_FD_PASSING`.
 */
export async function connectIpc(name: string, options: ConnectIpcOptions = {}): Promise<net.Socket> {
  const network = 'network' in options ? options.network : process.env['IPC_NETWORK'];
  if (network === undefined) return connectService(name, options);
  // The lookup timeout bounds the whole lookup, the wait for a slot included.
  const timeout = options.lookupTimeout ?? 5000;
  const deadline = performance.now() + timeout;
  if (!(await lookupSlots.acquire(timeout))) {
    throw ipcError(ErrorCode.HANDSHAKE_TIMEOUT, `lookup of '${name}' waited ${timeout} ms for one of the ${MAX_CONCURRENT_LOOKUPS} lookup slots`);
  }
  try {
    return await lookup(name, network, options, Math.max(1, Math.round(deadline - performance.now())));
  } finally {
    lookupSlots.release();
  }
}

/**
 * Lookups in progress at once in this process: each waiting receive holds one of libuv's
 * threadpool threads (4 by default, shared with fs and dns: PROTOCOL.md §4a).
 */
export const MAX_CONCURRENT_LOOKUPS = 2;

/** A counting semaphore: waiters are served in order; a wait gives up after its timeout. */
const lookupSlots = (() => {
  let free = MAX_CONCURRENT_LOOKUPS;
  const waiting = new Set<(granted: boolean) => void>();
  return {
    /** Resolves true with a slot, or false once `timeout` ms passed without one. */
    acquire(timeout: number): Promise<boolean> {
      if (free > 0) {
        free--;
        return Promise.resolve(true);
      }
      return new Promise<boolean>((resolve) => {
        const grant = (granted: boolean) => {
          clearTimeout(timer);
          waiting.delete(grant);
          resolve(granted);
        };
        const timer = setTimeout(() => grant(false), timeout);
        waiting.add(grant);
      });
    },
    release(): void {
      // Sets iterate in insertion order: the longest waiter is served first.
      const next = waiting.values().next();
      if (next.done) free++;
      else next.value(true);
    },
  };
})();

async function lookup(name: string, network: string, options: ConnectIpcOptions, timeout: number): Promise<net.Socket> {
  const rundir = options.rundir ?? resolveRundir();
  const ipcPath = servicePath('ipc', rundir);
  let lookupFd: number;
  try {
    lookupFd = connectUnix(ipcPath);
  } catch (err) {
    throw ipcError(
      ErrorCode.SERVICE_UNAVAILABLE,
      `IPC_NETWORK is set but ipcd is not available at ${ipcPath} (${(err as Error).message})`,
      err,
    );
  }
  try {
    writeAll(lookupFd, encodeFrame(formatLookup(name, network)));
    let reply;
    try {
      reply = await receiveFd(lookupFd, timeout);
    } catch (err) {
      if (err instanceof IpcError && (err.cause as NodeJS.ErrnoException | undefined)?.code === 'EOF') {
        throw ipcError(ErrorCode.NO_ROUTE, `ipcd at ${ipcPath} refused the lookup of '${name}' (no route, or the route failed: see ipcd's log)`, err);
      }
      throw err;
    }
    if (reply.fd === null || reply.data.toString('latin1') !== 'ok') {
      if (reply.fd !== null) closeFd(reply.fd);
      throw ipcError(ErrorCode.FD_PASSING, `ipcd answered ${JSON.stringify(reply.data.toString('latin1'))} without a descriptor`);
    }
    try {
      return socketFromFd(reply.fd, { allowHalfOpen: options.allowHalfOpen ?? false });
    } catch (err) {
      closeFd(reply.fd);
      throw err;
    }
  } finally {
    closeFd(lookupFd);
  }
}

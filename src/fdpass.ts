/**
 * Passing descriptors over Unix stream sockets (SCM_RIGHTS), for the ipcd lookup
 * (PROTOCOL.md §4, §4a), through the project's own Node-API addon (native/fdpass.cc,
 * built into build/Release/fdpass.node by `npm ci`).
 *
 * Node's `net` can neither send nor receive descriptors, and if Node's own socket
 * reading ever reads the lookup reply the kernel discards the passed descriptor
 * silently. So the lookup socket is created, written and read by the addon only
 * ({@link connectUnix}, {@link writeAll}, {@link receiveFd}, {@link closeFd}); a
 * received descriptor becomes a `net.Socket` only afterwards ({@link socketFromFd}).
 *
 * Every failure is an IpcError `IPC_ERR_FD_PASSING` (except {@link connectUnix} to an
 * absent service) whose `cause` carries the system error: `code` (`'EPIPE'`,
 * `'ETIMEDOUT'`...), `errno` (positive) and `syscall`.
 */
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import { ErrorCode, IpcError, ipcError } from './errors.js';

/** Default bound of {@link sendFd} and {@link writeAll}, in milliseconds. */
export const DEFAULT_SEND_TIMEOUT = 1000;

/** Default largest reply {@link receiveFd} reads at once, in bytes. */
export const DEFAULT_MAX_REPLY = 4096;

// poll() takes an int of milliseconds; descriptors are ints.
const INT_MAX = 2 ** 31 - 1;
const MAX_REPLY = 1 << 20;

interface Addon {
  sendFd(socketFd: number, fd: number, timeoutMs: number, setBlocking: boolean): void;
  receiveFd(socketFd: number, timeoutMs: number, maxBytes: number): Promise<ReceivedFd>;
  connectUnix(path: string): number;
  writeAll(fd: number, timeoutMs: number, data: Buffer): void;
  socketPair(): [number, number];
  close(fd: number, shutdownOnly: boolean): void;
  notify(socketPath: string, message: string): void;
  /** The native data plane (native/dataplane.cc; src/dataplane.ts wraps it). */
  dataPlane?: unknown;
}

let addon: Addon | undefined;

/** Loads the addon on first use, so importing this module never fails by itself. */
function native(): Addon {
  if (addon) return addon;
  // LIBIPC_NO_ADDON=1: behave as if the build had failed (tests of the paths without it).
  if (process.env['LIBIPC_NO_ADDON'] === '1') throw noAddonError(new Error('LIBIPC_NO_ADDON=1'));
  const require = createRequire(import.meta.url);
  // From src/ under tsx, or from dist/src/ once compiled.
  const candidates = ['../build/Release/fdpass.node', '../../build/Release/fdpass.node'];
  let firstError: unknown;
  for (const candidate of candidates) {
    try {
      addon = require(candidate) as Addon;
      return addon;
    } catch (err) {
      firstError ??= err;
    }
  }
  throw noAddonError(firstError);
}

/**
 * The native data plane's functions from the addon, or the reason it is not there
 * (not built, LIBIPC_NO_ADDON=1, or an addon built before the data plane existed).
 */
export function loadDataPlaneAddon(): { plane: unknown } | { error: Error } {
  try {
    const plane = native().dataPlane;
    if (plane === undefined) return { error: new Error('the addon was built without the data plane: rebuild it (npm run install)') };
    return { plane };
  } catch (err) {
    return { error: err as Error };
  }
}

function noAddonError(cause: unknown): IpcError {
  return ipcError(
    ErrorCode.FD_PASSING,
    'the fdpass addon is not built (build/Release/fdpass.node; the install warned why): descriptor passing ' +
      '(ipcd, connectIpc with IPC_NETWORK) needs it. Install a C++ toolchain (Debian: apt-get install g++ make python3), ' +
      'then run `npm rebuild libipc-gateways` (in this repository: `npm run install`)',
    cause,
  );
}

/**
 * Sends `message` as one datagram to the Unix datagram socket `socketPath` (systemd's
 * NOTIFY_SOCKET; `@name` is in the abstract namespace), through the addon.
 * @returns false when the addon is not available (the caller has a fallback).
 * @throws Error with `code` (`ENOENT`, `ECONNREFUSED`, `EAGAIN`...) when the send fails.
 */
export function notifyDatagram(socketPath: string, message: string): boolean {
  let lib: Addon;
  try {
    lib = native();
  } catch {
    return false;
  }
  try {
    lib.notify(socketPath, message);
  } catch (err) {
    const cause = err as NodeJS.ErrnoException;
    if (typeof cause.errno === 'number') cause.code ??= errnoNames.get(cause.errno);
    throw err;
  }
  return true;
}

const errnoNames = new Map<number, string>(
  Object.entries(os.constants.errno).map(([name, value]) => [value, name]),
);

/** Wraps an addon error; gives its cause the errno name as `code`, like Node's errors. */
function fdError(
  what: string,
  err: unknown,
  code: IpcError['code'] = ErrorCode.FD_PASSING,
): IpcError {
  const cause = err as NodeJS.ErrnoException;
  if (typeof cause.errno === 'number' && cause.code === undefined) {
    cause.code = errnoNames.get(cause.errno);
  }
  return ipcError(code, `${what}: ${cause.message}`, err);
}

function checkFd(fd: number, name: string): void {
  if (!Number.isInteger(fd) || fd < 0 || fd > INT_MAX) {
    throw ipcError(ErrorCode.FD_PASSING, `${name} must be a descriptor number, got ${fd}`);
  }
}

function checkTimeout(timeoutMs: number): number {
  if (!(timeoutMs >= 0 && timeoutMs <= INT_MAX)) {
    throw ipcError(ErrorCode.FD_PASSING, `timeout must be 0 to ${INT_MAX} ms, got ${timeoutMs}`);
  }
  return Math.ceil(timeoutMs);
}

export interface SendFdOptions {
  /**
   * Bound in milliseconds on waiting for room in `socketFd`'s send buffer (default
   * {@link DEFAULT_SEND_TIMEOUT}). The call is synchronous: in practice 2 bytes always
   * fit at once; the bound keeps a stuck peer from holding the event loop.
   */
  timeoutMs?: number;
  /**
   * Clear O_NONBLOCK on `fd` before sending (default true). The mode belongs to the
   * shared file description, and the original ipcd hands over a blocking socket that its
   * clients read as such; a Node receiver does not care (libuv sets its own mode). It is
   * restored if the send fails; after a successful send, only close your copy.
   */
  setBlocking?: boolean;
}

/**
 * Passes `fd` over the connected Unix stream socket `socketFd` with the original's exact
 * layout: one sendmsg of the 2 data bytes `ok` (no frame) and one SCM_RIGHTS control
 * message (cmsg_len 20, msg_controllen 24). Works on blocking and non-blocking sockets.
 * Our copy of `fd` stays open: close it after sending, and never `end()` a socket being
 * handed over (the FIN would reach the receiver's peer): see {@link handOverSocket}.
 * @throws IpcError `IPC_ERR_FD_PASSING` (cause `ETIMEDOUT`, `EPIPE`, `EBADF`...).
 */
export function sendFd(socketFd: number, fd: number, options: SendFdOptions = {}): void {
  checkFd(socketFd, 'socketFd');
  checkFd(fd, 'fd');
  const timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_SEND_TIMEOUT);
  try {
    native().sendFd(socketFd, fd, timeoutMs, options.setBlocking ?? true);
  } catch (err) {
    if (err instanceof IpcError) throw err;
    throw fdError(`cannot pass descriptor ${fd} over ${socketFd}`, err);
  }
}

/**
 * Hands a connected `socket` over `socketFd` ({@link sendFd}), then destroys our copy:
 * close(2) without FIN or RST, so the connection lives on in the receiver. The socket
 * must not have been read by Node (serve with `pauseOnConnect: true`): bytes Node
 * already buffered would be lost to the receiver. On failure the socket is left open.
 * @throws IpcError `IPC_ERR_FD_PASSING`.
 */
export function handOverSocket(
  socketFd: number,
  socket: net.Socket,
  options: SendFdOptions = {},
): void {
  sendFd(socketFd, descriptorOf(socket), options);
  socket.destroy();
}

/** What {@link receiveFd} read: the data bytes, and the descriptor if one came with them. */
export interface ReceivedFd {
  /** The bytes read with the descriptor; a lookup reply is exactly `ok`. */
  data: Buffer;
  /** The received descriptor (close-on-exec, now ours to close), or null if none came. */
  fd: number | null;
}

export interface ReceiveFdOptions {
  /** Largest number of bytes read, in bytes (default {@link DEFAULT_MAX_REPLY}). */
  maxBytes?: number;
}

// Receives in progress, by socket: closeFd() must not free a number under a waiting thread.
const receiving = new Map<number, { closed: boolean }>();

function closedWhileReceiving(socketFd: number): IpcError {
  return ipcError(ErrorCode.FD_PASSING, `descriptor ${socketFd} was closed while receiving`);
}

function closeQuietly(addon: Addon, fd: number): void {
  try {
    addon.close(fd, false);
  } catch {
    // Already gone: nothing left to release.
  }
}

/**
 * Waits up to `timeoutMs` milliseconds (counted from this call) for data on `socketFd`,
 * then reads it with recvmsg(MSG_CMSG_CLOEXEC) once: up to `maxBytes` bytes and the
 * descriptor passed with them, or `fd: null` when data came without one. The caller
 * checks `data` (a lookup reply must be exactly `ok`).
 *
 * The wait occupies a libuv threadpool thread (4 by default, shared with fs and dns):
 * keep timeouts short and limit concurrent lookups. `socketFd` must not be read by Node.
 * One receive at a time per socket; {@link closeFd} on it cancels the receive.
 * @throws IpcError `IPC_ERR_FD_PASSING`: timeout (cause `ETIMEDOUT`), peer closed without
 *   replying, closed by {@link closeFd}, more than one descriptor (all are closed),
 *   system errors.
 */
export async function receiveFd(
  socketFd: number,
  timeoutMs: number,
  options: ReceiveFdOptions = {},
): Promise<ReceivedFd> {
  checkFd(socketFd, 'socketFd');
  const timeout = checkTimeout(timeoutMs);
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_REPLY;
  if (!Number.isInteger(maxBytes) || maxBytes < 1 || maxBytes > MAX_REPLY) {
    throw ipcError(ErrorCode.FD_PASSING, `maxBytes must be 1 to ${MAX_REPLY}, got ${maxBytes}`);
  }
  if (receiving.has(socketFd)) {
    throw ipcError(ErrorCode.FD_PASSING, `a receive is already pending on descriptor ${socketFd}`);
  }
  const state = { closed: false };
  const addon = native();
  receiving.set(socketFd, state);
  let received: ReceivedFd;
  try {
    received = await addon.receiveFd(socketFd, timeout, maxBytes);
  } catch (err) {
    if (state.closed) throw closedWhileReceiving(socketFd);
    const timedOut = (err as NodeJS.ErrnoException).errno === os.constants.errno.ETIMEDOUT;
    const what = timedOut ? `no reply within ${timeout} ms` : 'receive failed';
    throw fdError(`${what} on descriptor ${socketFd}`, err);
  } finally {
    receiving.delete(socketFd);
    if (state.closed) closeQuietly(addon, socketFd);
  }
  if (state.closed) {
    if (received.fd !== null) closeQuietly(addon, received.fd);
    throw closedWhileReceiving(socketFd);
  }
  if (received.data.length === 0 && received.fd === null) {
    // cause.code 'EOF' marks this case for callers (ipcd refusing a lookup closes it).
    throw ipcError(
      ErrorCode.FD_PASSING,
      `peer closed descriptor ${socketFd} without replying`,
      Object.assign(new Error('end of stream'), { code: 'EOF' }),
    );
  }
  return received;
}

/**
 * Creates a Unix stream socket in the addon and connects it to `path` (close-on-exec,
 * non-blocking: it connects at once or fails, never waits). Node never sees it, so it
 * can carry a lookup whose reply passes a descriptor. Write with {@link writeAll}, read
 * with {@link receiveFd}, release with {@link closeFd}.
 * @returns the socket's descriptor.
 * @throws IpcError `IPC_ERR_SERVICE_UNAVAILABLE` when nothing listens at `path` (cause
 *   `ENOENT` or `ECONNREFUSED`); `IPC_ERR_FD_PASSING` otherwise (`EAGAIN`: backlog full,
 *   `ENAMETOOLONG`: over 107 bytes).
 */
export function connectUnix(path: string): number {
  if (typeof path !== 'string' || path.includes('\0')) {
    throw ipcError(ErrorCode.FD_PASSING, 'path must be a string without NUL bytes');
  }
  try {
    return native().connectUnix(path);
  } catch (err) {
    if (err instanceof IpcError) throw err;
    const errno = (err as NodeJS.ErrnoException).errno;
    const absent = errno === os.constants.errno.ENOENT || errno === os.constants.errno.ECONNREFUSED;
    const code = absent ? ErrorCode.SERVICE_UNAVAILABLE : ErrorCode.FD_PASSING;
    throw fdError(`cannot connect to ${path}`, err, code);
  }
}

/**
 * Writes all of `data` to the socket `fd` (e.g. the lookup frame), synchronously,
 * waiting at most `timeoutMs` milliseconds (default {@link DEFAULT_SEND_TIMEOUT}) for
 * room in the send buffer.
 * @throws IpcError `IPC_ERR_FD_PASSING` (cause `ETIMEDOUT`, `EPIPE`, `ENOTSOCK`...); some
 *   bytes may have been written.
 */
export function writeAll(
  fd: number,
  data: Uint8Array,
  timeoutMs: number = DEFAULT_SEND_TIMEOUT,
): void {
  checkFd(fd, 'fd');
  const timeout = checkTimeout(timeoutMs);
  const buffer = Buffer.isBuffer(data)
    ? data
    : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  try {
    native().writeAll(fd, timeout, buffer);
  } catch (err) {
    if (err instanceof IpcError) throw err;
    throw fdError(`cannot write to descriptor ${fd}`, err);
  }
}

/**
 * Closes a descriptor created or received here. If a {@link receiveFd} is waiting on it,
 * the socket is shut down at once (the receive rejects) and closed when the receive
 * ends, so the number is never reused under the waiting thread.
 * @throws IpcError `IPC_ERR_FD_PASSING` (cause `EBADF`).
 */
export function closeFd(fd: number): void {
  checkFd(fd, 'fd');
  try {
    const pending = receiving.get(fd);
    if (pending) pending.closed = true;
    // A waiting receive: shut down now to wake it, close once it has ended.
    native().close(fd, pending !== undefined);
  } catch (err) {
    if (err instanceof IpcError) throw err;
    throw fdError(`cannot close descriptor ${fd}`, err);
  }
}

/**
 * A connected pair of Unix stream sockets (close-on-exec), outside Node's event loop.
 * @throws IpcError `IPC_ERR_FD_PASSING` (cause `EMFILE`...).
 */
export function socketPair(): [number, number] {
  try {
    return native().socketPair();
  } catch (err) {
    if (err instanceof IpcError) throw err;
    throw fdError('cannot create a socket pair', err);
  }
}

/**
 * Wraps a received socket descriptor as a `net.Socket`, which then owns it (destroying
 * the socket closes the descriptor). Add an `'error'` listener at once.
 * @param options.allowHalfOpen passed to the socket (default false).
 * @throws IpcError `IPC_ERR_FD_PASSING` when `fd` is not a socket or pipe.
 */
export function socketFromFd(fd: number, options: { allowHalfOpen?: boolean } = {}): net.Socket {
  checkFd(fd, 'fd');
  try {
    const allowHalfOpen = options.allowHalfOpen ?? false;
    return new net.Socket({ fd, readable: true, writable: true, allowHalfOpen });
  } catch (err) {
    throw fdError(`cannot use descriptor ${fd} as a socket`, err);
  }
}

/**
 * The descriptor under a connected `net.Socket` (TCP or Unix), to pass with
 * {@link sendFd}. The one place that reads Node's internal `socket._handle.fd`
 * (libuv's descriptor; -1 on Windows, absent before connect and after destroy, and
 * meaningless for TLS sockets whose state cannot travel).
 * @throws IpcError `IPC_ERR_FD_PASSING` when the socket has no descriptor.
 */
export function descriptorOf(socket: net.Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    const why = 'not connected, destroyed, or TLS';
    throw ipcError(ErrorCode.FD_PASSING, `the socket has no descriptor (${why})`);
  }
  return fd;
}

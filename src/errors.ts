/**
 * Coded errors. Every error this library raises on purpose carries a stable `code`
 * (listed in docs/errors.md) so callers and tests can tell failures apart without
 * parsing messages.
 */

export const ErrorCode = {
  /** A frame's length field is larger than the connection's maxPayload. */
  PAYLOAD_TOO_LARGE: 'IPC_ERR_PAYLOAD_TOO_LARGE',
  /** The stream ended in the middle of a frame (header or payload). */
  TRUNCATED_FRAME: 'IPC_ERR_TRUNCATED_FRAME',
  /** A service name failed validation (empty, too long, `/`, `..`, control characters...). */
  INVALID_SERVICE_NAME: 'IPC_ERR_INVALID_SERVICE_NAME',
  /** A service name is valid but not in the gateway's allow-list. */
  SERVICE_NOT_ALLOWED: 'IPC_ERR_SERVICE_NOT_ALLOWED',
  /** No service listens at `$RUNDIR/<name>` (absent or stale socket). */
  SERVICE_UNAVAILABLE: 'IPC_ERR_SERVICE_UNAVAILABLE',
  /** Another live process already serves this name. */
  SERVICE_IN_USE: 'IPC_ERR_SERVICE_IN_USE',
  /** The run directory cannot be created or written. */
  RUNDIR_UNUSABLE: 'IPC_ERR_RUNDIR_UNUSABLE',
  /** A peer did not finish its handshake in time. */
  HANDSHAKE_TIMEOUT: 'IPC_ERR_HANDSHAKE_TIMEOUT',
  /** A peer closed before finishing its handshake. */
  HANDSHAKE_ABORTED: 'IPC_ERR_HANDSHAKE_ABORTED',
  /** A peer answered a handshake with something else than expected. */
  HANDSHAKE_REFUSED: 'IPC_ERR_HANDSHAKE_REFUSED',
  /** A gateway URI or IPC_NETWORK entry cannot be parsed. */
  INVALID_URI: 'IPC_ERR_INVALID_URI',
  /** IPC_NETWORK has no entry for the requested service. */
  NO_ROUTE: 'IPC_ERR_NO_ROUTE',
  /** The gateway refused a connection because it is at its connection limit. */
  TOO_MANY_CONNECTIONS: 'IPC_ERR_TOO_MANY_CONNECTIONS',
  /** A connection outlived the drain period while the gateway was stopping. */
  SHUTDOWN: 'IPC_ERR_SHUTDOWN',
  /** A connection was idle for longer than its idle timeout. */
  IDLE_TIMEOUT: 'IPC_ERR_IDLE_TIMEOUT',
  /** A WebSocket peer's connection ended without its closing handshake (reset, or cut mid-frame). */
  CONNECTION_LOST: 'IPC_ERR_CONNECTION_LOST',
  /** A PROXY protocol header was malformed, or missing from a peer that must send one (--accept-proxy, trusted peer). */
  PROXY_HEADER_INVALID: 'IPC_ERR_PROXY_HEADER_INVALID',
  /** A PROXY protocol header came from a peer outside --trusted-proxies. */
  PROXY_NOT_TRUSTED: 'IPC_ERR_PROXY_NOT_TRUSTED',
  /** The client's address has --max-connections-per-ip connections open already. */
  TOO_MANY_CONNECTIONS_PER_IP: 'IPC_ERR_TOO_MANY_CONNECTIONS_PER_IP',
  /** The client's address opened connections faster than --connect-rate-per-ip allows. */
  CONNECT_RATE_EXCEEDED: 'IPC_ERR_CONNECT_RATE_EXCEEDED',
  /** Passing or receiving a file descriptor failed. */
  FD_PASSING: 'IPC_ERR_FD_PASSING',
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** An Error with a stable `code` from {@link ErrorCode}. */
export class IpcError extends Error {
  readonly code: ErrorCodeValue;

  constructor(code: ErrorCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IpcError';
    this.code = code;
  }
}

/** Creates a coded error; the one helper every module uses. */
export function ipcError(code: ErrorCodeValue, message: string, cause?: unknown): IpcError {
  return new IpcError(code, message, cause === undefined ? undefined : { cause });
}

/** True when `err` is an {@link IpcError} with the given code. */
export function hasCode(err: unknown, code: ErrorCodeValue): err is IpcError {
  return err instanceof IpcError && err.code === code;
}

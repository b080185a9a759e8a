/**
 * Connecting to a service: directly at `$RUNDIR/<name>`.
 */
import net from 'node:net';
import { ErrorCode, ipcError } from './errors.js';
import { resolveRundir, servicePath } from './rundir.js';

export interface ConnectOptions {
  /** Run directory (default `$RUNDIR` or `/tmp/.libipc-run/`). */
  rundir?: string;
  /** Passed to the socket; gateways use true to forward half-closes on purpose. */
  allowHalfOpen?: boolean;
}

/**
 * Connects to the service `name` at `$RUNDIR/<name>`. The returned socket is connected
 * and has no listeners but the caller's.
 * @throws IpcError `IPC_ERR_INVALID_SERVICE_NAME`; `IPC_ERR_SERVICE_UNAVAILABLE` when no
 *   process serves the name (absent or stale socket), naming the service and the path.
 */
export function connectService(name: string, options: ConnectOptions = {}): Promise<net.Socket> {
  const socketPath = servicePath(name, options.rundir ?? resolveRundir());
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: socketPath, allowHalfOpen: options.allowHalfOpen ?? false });
    const onError = (err: NodeJS.ErrnoException) => {
      socket.destroy();
      reject(
        ipcError(
          ErrorCode.SERVICE_UNAVAILABLE,
          `service '${name}' is not available at ${socketPath} (${err.code ?? err.message})`,
          err,
        ),
      );
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

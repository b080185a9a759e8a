/**
 * One client's way from accept to its switch, or to its refusal: tracked by the gateway
 * (so close() and destroy() reach it), bounded by a deadline, ended once. Shared by the
 * byte handshake (tcpd, tlsd), the TLS handshake and the outbound URI handshake.
 */
import { ErrorCode, ipcError } from '../src/errors.js';
import type { ConnectionInfo, GatewayCore } from './gateway.js';

export class Handshake {
  readonly info: ConnectionInfo;
  private readonly core: GatewayCore;
  private readonly cleanup: () => void;
  private readonly untrack: () => void;
  private timer: NodeJS.Timeout | null = null;
  private done = false;

  /** @param cleanup closes what the handshake holds when it is refused (no byte is sent). */
  constructor(core: GatewayCore, info: ConnectionInfo, cleanup: () => void) {
    this.core = core;
    this.info = info;
    this.cleanup = cleanup;
    this.untrack = core.track({ close: (reason, err) => this.refuse(err ?? ipcError(ErrorCode.SHUTDOWN, reason)) });
  }

  /** Refuses with `IPC_ERR_HANDSHAKE_TIMEOUT` at `deadline` (a performance.now() time, ms). */
  expireAt(deadline: number, what: string): this {
    this.timer = setTimeout(
      () => this.refuse(ipcError(ErrorCode.HANDSHAKE_TIMEOUT, `${what} not finished within ${this.core.options.handshakeTimeout} ms`)),
      Math.max(0, deadline - performance.now()),
    );
    return this;
  }

  /** True once settled (switched or refused). */
  get settled(): boolean {
    return this.done;
  }

  /** Ends the handshake; false when it had already ended (a refusal or timeout won). */
  settle(): boolean {
    if (this.done) return false;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.untrack();
    return true;
  }

  /** Refuses the client: closes without a byte (what original clients expect) and logs why. */
  refuse(err: Error, extra: Record<string, unknown> = {}): void {
    if (!this.settle()) return;
    this.cleanup();
    this.core.refuse(this.info, err, extra);
  }
}

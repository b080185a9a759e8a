/**
 * gatewayd under a service manager: the listening sockets systemd passes (socket
 * activation, gateways/systemd.ts), and the sd_notify states around start, reloads and
 * stop (src/sd-notify.ts): READY=1 once every gateway serves, RELOADING=1 (with
 * MONOTONIC_USEC, as Type=notify-reload wants) for each reload asked for and READY=1 when
 * the reloads queued are all done, STOPPING=1 when a stop signal arrives.
 * Without NOTIFY_SOCKET and LISTEN_FDS (not run by systemd) all of it is a no-op.
 */
import type net from 'node:net';
import { notify, setNotifyLogger, takeNotifySocket } from '../src/sd-notify.js';
import type { Logger } from '../src/log.js';
import type { GatewaydConfig } from './config.js';
import type { Gatewayd } from './gatewayd.js';
import { takeListenFds, type PassedSockets } from './systemd.js';

export class ServiceManagerLink {
  private readonly logger: Logger;
  private readonly passed: PassedSockets;
  /** Reloads asked for and not finished (a SIGHUP storm queues them). */
  private pendingReloads = 0;
  private reloads = 0;

  /**
   * Takes NOTIFY_SOCKET and LISTEN_* from the environment (so nothing we start inherits
   * them). Call it first thing. @throws ListenFdsError (a passed descriptor that is not
   * a listening stream socket).
   */
  constructor(logger: Logger) {
    this.logger = logger;
    setNotifyLogger(logger);
    takeNotifySocket();
    this.passed = takeListenFds((err, s) => logger.error({ err, fd: s.fd, bound: s.bound }, 'listener error'));
    for (const s of this.passed.sockets) logger.info({ fd: s.fd, name: s.name, bound: s.bound }, 'socket passed by systemd');
  }

  /**
   * The passed sockets for Gatewayd.start, matched to the configuration's addresses.
   * @throws ListenFdsError naming each passed socket no address wants.
   */
  pool(config: GatewaydConfig): Map<string, net.Server> | undefined {
    if (this.passed.sockets.length === 0) return undefined;
    return this.passed.match(config.gateways.flatMap((g) => g.listen));
  }

  /** Serving: clients that connected before the gateways took their sockets are served now. */
  ready(daemon: Gatewayd): Promise<void> {
    this.passed.flush();
    return notify(`READY=1\nSTATUS=${status(daemon)}`);
  }

  /** Startup failed: the passed sockets close, the clients waiting on them too. */
  abandon(): void {
    this.passed.close();
  }

  /** Reloads `daemon` (serialised by Gatewayd.reload), telling systemd around it. */
  reload(daemon: Gatewayd): Promise<void> {
    // One RELOADING=1 per request, stamped now: under Type=notify-reload (systemd 253+)
    // the manager waits for one newer than the SIGHUP it sent, even when a reload is
    // already running. READY=1 comes once the queue is empty.
    this.pendingReloads++;
    void notify(`RELOADING=1\nMONOTONIC_USEC=${process.hrtime.bigint() / 1000n}\nSTATUS=reloading the configuration`);
    return daemon.reload().finally(() => {
      this.reloads++;
      if (--this.pendingReloads === 0) void notify(`READY=1\nSTATUS=${status(daemon)}; ${this.reloads} reloads`);
    });
  }

  /** A stop signal arrived: resolves once systemd was told (before the drain starts). */
  stopping(): Promise<void> {
    return notify('STOPPING=1\nSTATUS=draining connections');
  }
}

function status(daemon: Gatewayd): string {
  const n = daemon.running.length;
  return `serving ${n} gateway${n === 1 ? '' : 's'}`;
}

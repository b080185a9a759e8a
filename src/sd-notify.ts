/**
 * sd_notify(3) without libsystemd: state lines (`READY=1`, `STATUS=...`, `RELOADING=1`,
 * `STOPPING=1`) sent as one datagram to the AF_UNIX SOCK_DGRAM socket systemd names in
 * NOTIFY_SOCKET. Node has no Unix datagram sockets, so the datagram goes through the
 * fdpass addon; where the addon was not built, through `systemd-notify` (a child per
 * message, which is why the unit says NotifyAccess=all). Without NOTIFY_SOCKET (not run
 * by systemd as Type=notify) every call is a no-op.
 *
 * Messages are sent in order: a fallback child finishes before the next one starts, so
 * READY, RELOADING, READY, STOPPING reach the manager in the order they were sent.
 */
import { spawn, spawnSync } from 'node:child_process';
import { notifyDatagram } from './fdpass.js';
import type { Logger } from './log.js';

/** Bound on one `systemd-notify` child (it may wait for the manager). */
const FALLBACK_TIMEOUT = 5000;

let socketPath: string | undefined;
let taken = false;
let queue: Promise<void> = Promise.resolve();
let pidOption: boolean | undefined;
let logger: Logger | undefined;

/**
 * Reads NOTIFY_SOCKET once and removes it from the environment, so processes we start
 * (workers, helpers) do not notify systemd in our name. Called by the first
 * {@link notify}; call it early yourself when children are spawned before that.
 */
export function takeNotifySocket(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (!taken) {
    taken = true;
    const value = env['NOTIFY_SOCKET'];
    socketPath = value !== undefined && value !== '' ? value : undefined;
    delete env['NOTIFY_SOCKET'];
  }
  return socketPath;
}

/** Where failures to notify are logged (default: nowhere; a notification is never fatal). */
export function setNotifyLogger(l: Logger): void {
  logger = l;
}

/**
 * Sends `state` (newline-separated `VAR=value` lines) to the service manager. Resolves
 * once sent (or once the fallback child ended); never rejects: a failure is logged.
 */
export function notify(state: string): Promise<void> {
  const target = takeNotifySocket();
  if (target === undefined) return Promise.resolve();
  queue = queue.then(() => send(target, state));
  return queue;
}

/** false once the addon was found missing (then every message uses systemd-notify). */
let addonWorks: boolean | undefined;

async function send(target: string, state: string): Promise<void> {
  if (addonWorks !== false) {
    try {
      if (notifyDatagram(target, state)) {
        addonWorks = true;
        return;
      }
      addonWorks = false;
      logger?.warn({ method: 'systemd-notify' }, 'sd_notify: the fdpass addon is not built; notifying through systemd-notify (needs NotifyAccess=all)');
    } catch (err) {
      logger?.warn({ err, state: firstLine(state) }, 'sd_notify: sending to NOTIFY_SOCKET failed');
      return;
    }
  }
  await sendWithSystemdNotify(target, state);
}

function firstLine(state: string): string {
  return state.split('\n')[0] ?? '';
}

/** `systemd-notify --pid=<our pid> --no-block VAR=value...`, bounded in time. */
function sendWithSystemdNotify(target: string, state: string): Promise<void> {
  pidOption ??= supportsPidOption();
  const args = [...(pidOption ? [`--pid=${process.pid}`, '--no-block'] : []), ...state.split('\n').filter((l) => l !== '')];
  return new Promise((resolve) => {
    const child = spawn('systemd-notify', args, { env: { ...process.env, NOTIFY_SOCKET: target }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => (stderr += text));
    const timer = setTimeout(() => child.kill('SIGKILL'), FALLBACK_TIMEOUT);
    child.once('error', (err) => {
      clearTimeout(timer);
      logger?.warn({ err, state: firstLine(state) }, 'sd_notify: cannot run systemd-notify');
      resolve();
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) logger?.warn({ code, signal, stderr: stderr.trim(), state: firstLine(state) }, 'sd_notify: systemd-notify failed');
      resolve();
    });
  });
}

/**
 * systemd-notify has had --pid for long (Debian 12's 252 has it, with --no-block), but a
 * minimal one may not: its --help says. --pid matters: without it the message comes
 * from a short-lived child that systemd may no longer be able to attribute.
 */
function supportsPidOption(): boolean {
  const help = spawnSync('systemd-notify', ['--help'], { encoding: 'utf8', timeout: FALLBACK_TIMEOUT });
  return typeof help.stdout === 'string' && help.stdout.includes('--pid') && help.stdout.includes('--no-block');
}

/**
 * ipcd: libipc's network lookup service (service `ipc`, PROTOCOL.md §4).
 *
 * A client sends one frame `<service>;<IPC_NETWORK>`. ipcd picks the last entry for the
 * service and gets a connected socket for it:
 * - `unix://NAME`: it connects `$RUNDIR/NAME` itself;
 * - `<scheme>://host:port/path`: it connects the local gateway serving `<scheme>`, sends
 *   the URI as one frame and waits (bounded) for the framed `ok`.
 * It then passes that socket to the client: sendmsg with the 2 bytes `ok` and the
 * descriptor in SCM_RIGHTS, as the original, and closes its own copies.
 * Every failure closes the lookup without a byte, promptly, logs why, and ipcd keeps
 * serving; lookups never wait on each other.
 */
import net from 'node:net';
import { FrameDecoder, encodeFrame } from '../src/frame.js';
import { ErrorCode, IpcError, ipcError } from '../src/errors.js';
import { parseLookup, parseTarget, routeFor } from '../src/network.js';
import { resolveRundir, servicePath } from '../src/rundir.js';
import { serveService, type ServiceServer } from '../src/service.js';
import { descriptorOf, handOverSocket } from '../src/fdpass.js';
import { silentLogger, type Logger } from '../src/log.js';

/** The framed `ok` a gateway answers once its remote side is switched. */
const FRAMED_OK = encodeFrame('ok');

export interface IpcdOptions {
  /** Run directory (default `$RUNDIR` or `/tmp/.libipc-run/`). */
  rundir?: string;
  /** Service name (default `ipc`, what libipc clients connect to). */
  name?: string;
  /** Time a lookup may take from accept to the passed descriptor, ms (default 5000). */
  lookupTimeout?: number;
  /** Lookups in progress at once; more are refused (default 1024). */
  maxLookups?: number;
  logger?: Logger;
}

export class Ipcd {
  private readonly rundir: string;
  private readonly name: string;
  private readonly lookupTimeout: number;
  private readonly maxLookups: number;
  private readonly logger: Logger;
  private readonly pending = new Set<net.Socket>();
  private server: ServiceServer | null = null;
  private nextId = 1;

  constructor(options: IpcdOptions = {}) {
    this.rundir = options.rundir ?? resolveRundir();
    this.name = options.name ?? 'ipc';
    this.lookupTimeout = options.lookupTimeout ?? 5000;
    this.maxLookups = options.maxLookups ?? 1024;
    this.logger = options.logger ?? silentLogger;
  }

  /** The socket path, once started. */
  get path(): string | undefined {
    return this.server?.path;
  }

  async start(): Promise<void> {
    this.server = await serveService(this.name, {
      rundir: this.rundir,
      // A client may half-close after its lookup and still wait for the answer.
      allowHalfOpen: true,
      onConnection: (socket) => this.onLookup(socket),
    });
    this.logger.info({ service: this.name, path: this.server.path }, 'listening');
  }

  /** Stops accepting; lookups in progress are closed. */
  async close(): Promise<void> {
    for (const socket of this.pending) socket.destroy();
    await this.server?.close();
  }

  private onLookup(client: net.Socket): void {
    client.on('error', noop);
    const id = this.nextId++;
    const started = performance.now();
    let upstream: net.Socket | null = null;
    let done = false;
    // What the lookup asked for, once known: every log line of this lookup carries it.
    const asked: { service?: string; target?: string } = {};
    const log = this.logger.child({ lookup: id });
    if (this.pending.size >= this.maxLookups) {
      log.warn({ reason: `limit of ${this.maxLookups} lookups in progress reached` }, 'lookup refused');
      client.destroy();
      return;
    }
    this.pending.add(client);

    const finish = (): boolean => {
      if (done) return false;
      done = true;
      clearTimeout(timer);
      this.pending.delete(client);
      return true;
    };
    const refuse = (err: Error, fields: Record<string, unknown> = {}) => {
      if (!finish()) return;
      upstream?.destroy();
      // The original's clients expect a close without a byte.
      client.destroy();
      const detail = err instanceof IpcError ? { code: err.code } : { err };
      log.warn({ ...asked, ...fields, ...detail, reason: err.message, durationMs: Math.round(performance.now() - started) }, 'lookup refused');
    };
    const timer = setTimeout(
      () => refuse(ipcError(ErrorCode.HANDSHAKE_TIMEOUT, `lookup not answered within ${this.lookupTimeout} ms`)),
      this.lookupTimeout,
    );

    const decoder = new FrameDecoder();
    client.on('end', () => {
      if (upstream === null) refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client closed before sending its lookup'));
    });
    client.on('close', () => refuse(ipcError(ErrorCode.HANDSHAKE_ABORTED, 'client left before its lookup was answered')));
    client.on('data', (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        refuse(err as Error);
        return;
      }
      const frame = frames[0];
      if (frame === undefined || upstream !== null || done) return;
      client.pause();
      let service = '';
      let target = '';
      try {
        const request = parseLookup(frame.toString('latin1'));
        service = request.service;
        asked.service = service;
        const route = routeFor(request.service, request.network);
        if (route === null) throw ipcError(ErrorCode.NO_ROUTE, `no route for '${request.service}' in IPC_NETWORK`);
        target = route;
        asked.target = target;
        const parsed = parseTarget(route);
        const name = parsed.scheme === 'unix' && 'name' in parsed ? parsed.name : parsed.scheme;
        const socketPath = servicePath(name, this.rundir);
        upstream = parsed.scheme === 'unix' ? this.connectService(socketPath) : this.connectGateway(socketPath, parsed.uri);
        const fields = { service, target };
        (upstream as net.Socket & { ready: Promise<void> }).ready.then(
          () => {
            if (!finish()) return;
            try {
              // Our copy of the service socket is never read nor ended: once the
              // descriptor is passed the client owns the connection; we only close ours.
              handOverSocket(descriptorOf(client), upstream!);
              log.info({ ...fields, durationMs: Math.round(performance.now() - started) }, 'lookup answered');
            } catch (err) {
              log.warn({ ...fields, err }, 'passing the descriptor failed');
              upstream!.destroy();
            }
            client.destroy();
          },
          (err: Error) => refuse(err, fields),
        );
      } catch (err) {
        refuse(err as Error, { service, target });
      }
    });
  }

  /** Connects a local service for `unix://` targets; never reads from it. */
  private connectService(socketPath: string): net.Socket & { ready: Promise<void> } {
    const socket = new net.Socket() as net.Socket & { ready: Promise<void> };
    // Paused before it connects, so Node never starts reading it (PROTOCOL.md §4a).
    socket.pause();
    socket.ready = new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (err: NodeJS.ErrnoException) =>
        reject(ipcError(ErrorCode.SERVICE_UNAVAILABLE, `local service at ${socketPath} unavailable (${err.code ?? err.message})`, err)),
      );
    });
    socket.connect({ path: socketPath });
    return socket;
  }

  /**
   * Connects the local gateway, sends the URI frame and reads exactly the framed `ok`.
   * Reads go into buffers sized to what is still expected, so no byte past the `ok`
   * is ever taken from the socket: what follows belongs to the client.
   */
  private connectGateway(socketPath: string, uri: string): net.Socket & { ready: Promise<void> } {
    const expected = FRAMED_OK.length;
    const answer = Buffer.alloc(expected);
    let have = 0;
    let settle: ((err?: Error) => void) | null = null;
    const socket = net.connect({
      path: socketPath,
      onread: {
        buffer: () => answer.subarray(have),
        callback: (nread: number) => {
          have += nread;
          if (have < expected) return true;
          settle?.(answer.equals(FRAMED_OK) ? undefined : ipcError(ErrorCode.HANDSHAKE_REFUSED, `gateway answered ${answer.toString('hex')} instead of ok`));
          return false; // stop reading: the rest is the client's
        },
      },
    }) as net.Socket & { ready: Promise<void> };
    socket.ready = new Promise<void>((resolve, reject) => {
      settle = (err) => {
        settle = null;
        if (err) reject(err);
        else resolve();
      };
      socket.once('connect', () => socket.write(encodeFrame(uri)));
      socket.once('error', (err: NodeJS.ErrnoException) =>
        settle?.(ipcError(ErrorCode.SERVICE_UNAVAILABLE, `no local gateway at ${socketPath} (${err.code ?? err.message})`, err)),
      );
      socket.once('end', () => settle?.(ipcError(ErrorCode.HANDSHAKE_REFUSED, `local gateway refused ${uri} (closed after ${have} bytes)`)));
    });
    return socket;
  }
}

function noop(): void {}

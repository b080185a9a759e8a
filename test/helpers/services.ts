/**
 * Local services written in the test itself (no project code): a Unix socket at
 * `$RUNDIR/<name>` that answers each complete libipc frame with `reply(payload)`.
 * They stand in for the vectors' "python framed-echo service" and for services that
 * misbehave on purpose.
 */
import net from 'node:net';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { frame } from './raw-client.js';
import { Waiters } from './waiters.js';

export interface TestService {
  readonly path: string;
  /** Connections accepted so far. */
  accepted: number;
  /** Connections open now. */
  readonly open: Set<net.Socket>;
  /** Complete frames received (payloads), every connection. */
  readonly frames: Buffer[];
  /** Bytes received, every connection. */
  bytes: number;
  /** Stops accepting and destroys every connection. */
  close(): Promise<void>;
  /** Resolves once `predicate` holds (checked on every event), or rejects after `timeout`. */
  until(predicate: () => boolean, timeout: number, what: string): Promise<void>;
}

/** Answers each frame with the same frame (a framed echo). */
export const echoReply = (payload: Buffer): Buffer => frame(payload);

/**
 * Serves `name` in `rundir` (created if needed). On the client's FIN the service ends its
 * side too, after its replies.
 */
export async function startFrameService(
  t: ExecutionContext,
  rundir: string,
  name: string,
  reply: (payload: Buffer) => Buffer | null = echoReply,
): Promise<TestService> {
  mkdirSync(rundir, { recursive: true, mode: 0o770 });
  const socketPath = path.join(rundir, name);
  const waiters = new Waiters();
  const wake = () => waiters.wake();
  const service: TestService = {
    path: socketPath,
    accepted: 0,
    open: new Set(),
    frames: [],
    bytes: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of service.open) s.destroy();
        server.close(() => resolve());
      }),
    until: (predicate, timeout, what) =>
      waiters.wait(
        () => (predicate() ? { value: undefined } : undefined),
        timeout,
        () => new Error(`service ${name}: ${what} not within ${timeout} ms`),
      ),
  };
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    service.accepted++;
    service.open.add(socket);
    let buffered: Buffer = Buffer.alloc(0);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      service.bytes += chunk.length;
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 4) {
        const length = buffered.readUInt32BE(0);
        if (buffered.length < 4 + length) break;
        const payload = buffered.subarray(4, 4 + length);
        buffered = buffered.subarray(4 + length);
        service.frames.push(payload);
        const answer = reply(payload);
        if (answer !== null) socket.write(answer);
      }
      wake();
    });
    socket.on('end', () => socket.end());
    socket.on('close', () => {
      service.open.delete(socket);
      wake();
    });
    wake();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  t.teardown(() => service.close());
  return service;
}

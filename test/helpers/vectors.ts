/**
 * The transcripts recorded from the original libipc (shared/vectors): loading them, and
 * replaying their steps with {@link RawClient}s (see vectors/README.md for the format).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { vectorsDir } from './paths.js';
import { pause, RawClient, type Bytes } from './raw-client.js';

/** One step of a transcript. */
export interface VectorStep {
  /** `A->B` (bytes `hex` sent from A to B), or `connect`, `close`, `eof`, `shutdown-write`... */
  dir: string;
  hex?: string;
  note?: string;
  t_ms?: number;
}

export interface Vector {
  scenario: string;
  description: string;
  /** What this project does in the scenario: what the tests assert. */
  ours: string;
  steps: VectorStep[];
  reference_outcome?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface IndexEntry {
  file: string;
  scenario: string;
  description: string;
  ours: string;
}

/** INDEX.json. */
export function loadIndex(dir = vectorsDir()): IndexEntry[] {
  const file = path.join(dir, 'INDEX.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${file} (set IPC_SHARED to the shared directory): ${(err as Error).message}`);
  }
  return JSON.parse(text) as IndexEntry[];
}

/** One transcript. */
export function loadVector(file: string, dir = vectorsDir()): Vector {
  return JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as Vector;
}

/** The hex of the first step whose direction is `dir` (the n-th with `nth`). */
export function stepHex(vector: Vector, dir: string, nth = 0): string {
  const step = vector.steps.filter((s) => s.dir === dir)[nth];
  if (step?.hex === undefined) throw new Error(`${vector.scenario}: no step ${dir} #${nth} with bytes`);
  return step.hex;
}

export interface ReplayOptions {
  /** Opens one client connection (Unix or TCP). */
  connect: () => Promise<RawClient>;
  /** True for the side our daemon plays (`server`, `tcpd`). */
  isServer?: (party: string) => boolean;
  /** Upper bound of each wait, ms. */
  timeout?: number;
  /**
   * Writes recorded this far apart or more (ms) are sent as separate segments: the first
   * is flushed and the replay pauses `splitPause` ms before the next.
   */
  splitGap?: number;
  splitPause?: number;
  /** Rewrites the bytes of a step before they are sent or expected. */
  bytes?: (step: VectorStep) => Bytes;
  /**
   * What `close` does. `graceful` (default): half-close, expect the end of the stream with
   * no byte left unread (so nothing but the recorded bytes came back), then close.
   * `destroy`: close at once, as the recording client did.
   */
  close?: 'graceful' | 'destroy';
}

const ARROW = /^(.+?)->(.+)$/;

/**
 * Replays `steps` in order: `connect` opens the next client, `X->server` writes X's bytes,
 * `server->X` expects exactly those bytes on X, `eof` expects the end of the stream with
 * nothing unread, `shutdown-write` half-closes, `close` closes the next open client.
 * Any other step is an error: such scenarios need their own script. Returns the clients
 * by party name, in the order they connected.
 */
export async function replay(steps: readonly VectorStep[], options: ReplayOptions): Promise<Map<string, RawClient>> {
  const isServer = options.isServer ?? ((party) => party === 'server' || party === 'tcpd');
  const timeout = options.timeout ?? 5000;
  const splitGap = options.splitGap ?? 100;
  const splitPause = options.splitPause ?? 50;
  const bytesOf = options.bytes ?? ((step: VectorStep) => step.hex ?? '');

  // The client parties in order of first appearance; the k-th `connect` opens the k-th.
  const parties: string[] = [];
  for (const step of steps) {
    const arrow = ARROW.exec(step.dir);
    if (!arrow) continue;
    const party = isServer(arrow[1]!) ? arrow[2]! : arrow[1]!;
    if (!parties.includes(party)) parties.push(party);
  }
  const clients = new Map<string, RawClient>();
  const closed = new Set<string>();
  let current: string | undefined;
  let lastWrite: number | undefined;

  const client = (party: string | undefined): RawClient => {
    const c = party === undefined ? undefined : clients.get(party);
    if (!c) throw new Error(`replay: no connected client for ${party ?? 'this step'}`);
    return c;
  };

  for (const step of steps) {
    const arrow = ARROW.exec(step.dir);
    if (arrow) {
      const [from, to] = [arrow[1]!, arrow[2]!];
      if (isServer(to)) {
        current = from;
        if (lastWrite !== undefined && step.t_ms !== undefined && step.t_ms - lastWrite >= splitGap) {
          await pause(splitPause);
        }
        await client(from).write(bytesOf(step));
        lastWrite = step.t_ms;
      } else if (isServer(from)) {
        current = to;
        await client(to).expect(bytesOf(step), timeout);
      } else {
        throw new Error(`replay: step ${step.dir} involves no server`);
      }
      continue;
    }
    switch (step.dir) {
      case 'connect': {
        const party = parties[clients.size] ?? `client${clients.size}`;
        clients.set(party, await options.connect());
        current = party;
        break;
      }
      case 'eof':
        await client(current).expectEof(timeout);
        break;
      case 'shutdown-write':
        client(current).endWrite();
        break;
      case 'close': {
        const party = [...clients.keys()].find((p) => !closed.has(p));
        closed.add(party!);
        const c = client(party);
        if ((options.close ?? 'graceful') === 'graceful' && !c.finished) {
          c.endWrite();
          await c.expectEof(timeout);
        }
        c.destroy();
        break;
      }
      default:
        throw new Error(`replay: cannot replay step '${step.dir}' (${step.note ?? ''})`);
    }
  }
  return clients;
}

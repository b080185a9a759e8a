/**
 * Hostile lookup clients against ipcd (issue 8): one spawned ipcd (--lookup-timeout 1500),
 * our pongd as the local service, and batches of bad lookups on `$RUNDIR/ipc`: garbage,
 * oversize and empty frames, no ';', bad and unknown targets, routes to a missing gateway
 * or service, truncated frames, silence, a slowloris lookup; then lookups that must be
 * answered (a half-close after the lookup, 200 at once). After each batch: one
 * 'lookup refused' line with a code per refused lookup, a fresh lookup through connectIpc
 * gets a verified echo, and ipcd's descriptors and collected RSS are back to the baseline.
 */
import test, { type ExecutionContext } from 'ava';
import type net from 'node:net';
import { connectIpc } from '../src/client.js';
import { ErrorCode } from '../src/errors.js';
import { spawnCli, startPongd, START_TIMEOUT, type Daemon } from './helpers/daemon.js';
import { assertBackToBaseline, baselineOf, HOSTILE_NODE_ARGS, type Baseline } from './helpers/hostile.js';
import { ECHO_FRAME, HOSTILE_WAIT, slowloris } from './helpers/hostile-byte.js';
import { RawClient, frame, pause } from './helpers/raw-client.js';
import { tempRundir } from './helpers/rundir.js';
import { Waiters } from './helpers/waiters.js';

const LOOKUP_TIMEOUT = 1500;
const CONCURRENT = 200;

interface Env {
  rundir: string;
  ipcd: Daemon;
  path: string;
  baseline: Baseline;
  /** Log lines before this index belong to earlier batches. */
  mark: number;
}

/** A lookup frame: `<service>;<IPC_NETWORK>`. */
const lookup = (text: string) => frame(Buffer.from(text, 'latin1'));

function header(length: number): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(length >>> 0, 0);
  return h;
}

/** A lookup through connectIpc (ipcd passes pongd's socket) and a 1000-byte echo on it. */
async function verifiedLookup(t: ExecutionContext, env: Env): Promise<void> {
  const socket = await connectIpc('pong', { rundir: env.rundir, network: 'pong unix://pong', lookupTimeout: HOSTILE_WAIT });
  t.teardown(() => socket.destroy());
  await echoOn(socket, ECHO_FRAME);
  t.pass('verified echo through a looked-up socket');
}

function echoOn(socket: net.Socket, bytes: Buffer): Promise<void> {
  const waiters = new Waiters();
  let got = Buffer.alloc(0);
  let ended = false;
  socket.on('data', (chunk: Buffer) => {
    got = Buffer.concat([got, chunk]);
    waiters.wake();
  });
  socket.on('close', () => {
    ended = true;
    waiters.wake();
  });
  socket.on('error', () => undefined);
  socket.write(bytes);
  return waiters
    .until(() => got.length >= bytes.length || ended, HOSTILE_WAIT, () => new Error(`no echo within ${HOSTILE_WAIT} ms`))
    .then(() => {
      if (!got.subarray(0, bytes.length).equals(bytes)) throw new Error(`echo differs: ${got.length} bytes received`);
      socket.destroy();
    });
}

async function start(t: ExecutionContext): Promise<Env> {
  const rundir = await tempRundir(t);
  await startPongd(t, rundir);
  const ipcd = spawnCli(t, 'ipcd', ['--lookup-timeout', String(LOOKUP_TIMEOUT)], { nodeArgs: HOSTILE_NODE_ARGS, env: { RUNDIR: rundir } });
  const line = await ipcd.listening(() => true, START_TIMEOUT);
  const env: Env = { rundir, ipcd, path: String(line['path']), baseline: { fds: 0, rss: 0 }, mark: 0 };
  await verifiedLookup(t, env);
  // Warm-up with the heaviest batch, so the baseline holds its memory high-water.
  await answeredBatch(t, env, CONCURRENT);
  await waitLines(env, 'lookup answered', CONCURRENT + 1);
  env.baseline = await baselineOf(ipcd);
  env.mark = ipcd.log.lines.length;
  return env;
}

/** Waits until `count` lines with `msg` were logged since the mark; returns them. */
async function waitLines(env: Env, msg: string, count: number) {
  await env.ipcd.log.waitForCount((l) => l.msg === msg && env.ipcd.log.lines.indexOf(l) >= env.mark, count, HOSTILE_WAIT, `${count} '${msg}' lines`);
  return env.ipcd.log.lines.slice(env.mark).filter((l) => l.msg === msg);
}

/**
 * The checks after a batch: `codes` (one per refused lookup) are exactly the codes of
 * the 'lookup refused' lines logged since the mark; `answered` lookups were answered; a
 * verified lookup; the baseline.
 */
async function afterBatch(t: ExecutionContext, env: Env, what: string, codes: string[], answered = 0): Promise<void> {
  const started = Date.now();
  if (codes.length > 0) {
    const refused = await waitLines(env, 'lookup refused', codes.length);
    t.deepEqual(refused.map((l) => l['code']).sort(), [...codes].sort(), `${what}: the codes of the refusals (${JSON.stringify(refused)})`);
  }
  if (answered > 0) await waitLines(env, 'lookup answered', answered);
  await verifiedLookup(t, env);
  await assertBackToBaseline(t, env.ipcd, env.baseline);
  t.log(`${what}: ${codes.length} refused, ${answered} answered, checks ${Date.now() - started} ms`);
  env.mark = env.ipcd.log.lines.length;
}

/** A lookup client that sends `bytes` (then FIN when `fin`) and must be closed without a byte. */
async function refusedLookup(t: ExecutionContext, env: Env, bytes: Buffer | null, fin = false): Promise<void> {
  const client = await RawClient.unix(t, env.path);
  if (bytes !== null) await client.write(bytes).catch(() => undefined);
  if (fin) client.endWrite();
  await client.expectEof(LOOKUP_TIMEOUT + HOSTILE_WAIT);
}

/** `count` lookups of pong at once, each half-closed after its frame: each gets `ok`. */
async function answeredBatch(t: ExecutionContext, env: Env, count: number): Promise<void> {
  await Promise.all(
    Array.from({ length: count }, async () => {
      const client = await RawClient.unix(t, env.path);
      await client.write(lookup('pong;pong unix://pong'));
      client.endWrite();
      // The descriptor rides with `ok`; a Node socket reads the bytes and the kernel
      // drops the descriptor.
      await client.expect(Buffer.from('ok'));
      await client.expectEof();
    }),
  );
}

const BAD: ReadonlyArray<[what: string, bytes: Buffer, code: string]> = [
  ['garbage frame (no ;)', frame(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0, 1, 2])), ErrorCode.INVALID_URI],
  ['plain HTTP (huge length field)', Buffer.from('GET / HTTP/1.1\r\n\r\n'), ErrorCode.PAYLOAD_TOO_LARGE],
  ['oversize lookup frame (1 MiB)', Buffer.concat([header(1 << 20), Buffer.alloc(100, 0x41)]), ErrorCode.PAYLOAD_TOO_LARGE],
  ['oversize lookup frame (0xffffffff)', header(0xffffffff), ErrorCode.PAYLOAD_TOO_LARGE],
  ['empty frame', frame(''), ErrorCode.INVALID_URI],
  ["no ';'", lookup('pong unix://pong'), ErrorCode.INVALID_URI],
  ['no route', lookup('pong;other unix://other'), ErrorCode.NO_ROUTE],
  ['empty network', lookup('pong;'), ErrorCode.NO_ROUTE],
  ['unknown scheme (no gateway serves it)', lookup('pong;pong foo://127.0.0.1:9/pong'), ErrorCode.SERVICE_UNAVAILABLE],
  ['route to a missing gateway (tcp)', lookup('pong;pong tcp://127.0.0.1:9/pong'), ErrorCode.SERVICE_UNAVAILABLE],
  ['route to a missing local service', lookup('nosuch;nosuch unix://nosuch'), ErrorCode.SERVICE_UNAVAILABLE],
  ['no scheme', lookup('pong;pong pong'), ErrorCode.INVALID_URI],
  ["a '/' in a unix target", lookup('pong;pong unix://run/pong'), ErrorCode.INVALID_URI],
  ["'..' as a unix target", lookup('pong;pong unix://..'), ErrorCode.INVALID_URI],
  ['an absolute unix target', lookup('pong;pong unix:///tmp/pong'), ErrorCode.INVALID_URI],
  ['NUL in a unix target', lookup('pong;pong unix://po\0ng'), ErrorCode.INVALID_URI],
  ['a control byte in a unix target', lookup('pong;pong unix://po\x01ng'), ErrorCode.INVALID_URI],
  ['non-ASCII unix target', frame(Buffer.from('pong;pong unix://pöng', 'utf8')), ErrorCode.INVALID_URI],
  ['a remote target without a path', lookup('pong;pong tcp://127.0.0.1:9'), ErrorCode.INVALID_URI],
  ['a remote target with a bad port', lookup('pong;pong tcp://127.0.0.1:99999/pong'), ErrorCode.INVALID_URI],
  ['a 10 KB network', lookup(`pong;${'x unix://x;'.repeat(1000)}`), ErrorCode.NO_ROUTE],
];

test.serial('ipcd: bad lookups are refused with a code, good ones answered, back to the baseline after each batch', async (t) => {
  t.timeout(120_000);
  const env = await start(t);

  await Promise.all(BAD.map(([, bytes]) => refusedLookup(t, env, bytes)));
  await afterBatch(t, env, 'bad lookups', BAD.map(([, , code]) => code));

  // The stream ends inside the lookup, or before it.
  await Promise.all([
    refusedLookup(t, env, Buffer.concat([header(100), Buffer.alloc(10, 0x41)]), true),
    refusedLookup(t, env, Buffer.from([0, 0]), true),
    refusedLookup(t, env, null, true),
    (async () => {
      const client = await RawClient.unix(t, env.path);
      await client.write(Buffer.concat([header(100), Buffer.alloc(10, 0x41)]));
      await pause(50);
      client.destroy();
    })(),
  ]);
  await afterBatch(t, env, 'truncated lookups', Array(4).fill(ErrorCode.HANDSHAKE_ABORTED));

  // Silence, and a lookup sent one byte every 200-500 ms: both cut at the lookup timeout.
  await Promise.all([
    refusedLookup(t, env, null),
    (async () => {
      const client = await RawClient.unix(t, env.path);
      await slowloris(client, lookup('pong;pong unix://pong'), LOOKUP_TIMEOUT + 2000);
      await client.expectEof(HOSTILE_WAIT);
    })(),
  ]);
  await afterBatch(t, env, 'deadlines', [ErrorCode.HANDSHAKE_TIMEOUT, ErrorCode.HANDSHAKE_TIMEOUT]);

  // A half-close after the lookup is not an abort: each of these is answered.
  await answeredBatch(t, env, CONCURRENT);
  await afterBatch(t, env, `${CONCURRENT} concurrent lookups, half-closed`, [], CONCURRENT);
});

/**
 * Issue 8, hostile clients against ONE running wsd (ws) and one wss instance, spawned from
 * dist/ under --expose-gc with pongd behind them. Serial batches throw a catalogue of
 * protocol violations, bad HTTP, refused names, slow and silent clients, TLS garbage,
 * load and churn at the same daemons; after each batch:
 *   (a) a fresh WebSocket client still gets a verified echo,
 *   (b) wsd's open descriptors are exactly back to the baseline and its RSS after a
 *       forced GC within 10 MiB of it (assertBackToBaseline),
 *   (c) each hostile connection produced its log line with a `code` ('connection refused'
 *       with an IPC_ERR_ code, or 'connection closed' with the error's code).
 */
import test, { type ExecutionContext } from 'ava';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ErrorCode } from '../src/errors.js';
import { startPongd, type Daemon } from './helpers/daemon.js';
import { assertBackToBaseline, baselineOf, type Baseline } from './helpers/hostile.js';
import { codeOf, type LogLine } from './helpers/log-sink.js';
import { tempDirSync } from './helpers/rundir.js';
import { openWs, refusedStatus, type WsClient } from './helpers/ws-client.js';
import { devCertificates } from './helpers/ws-fixtures.js';
import { Opcode, RawClient, closeCodeOf, encodeWsFrame, upgradeRequest } from './helpers/ws-raw.js';
import {
  SharedScope,
  captureClientHello,
  closedWithin,
  collectUntilClose,
  connectRaw,
  dribble,
  endingOf,
  linesFrom,
  parseResponse,
  peerOf,
  pool,
  settledFds,
  sleep,
  startHostileWsd,
  type HostileWsd,
} from './helpers/ws-hostile.js';

const ORIGIN = 'http://app.test';
const MAX_PAYLOAD = 1000;
const HANDSHAKE = 2000;

const scope = new SharedScope();
let ws: HostileWsd;
let wss: HostileWsd;
let victim: Daemon;
let ca: string;
let wsBase: Baseline;
let wssBase: Baseline;

test.before(async () => {
  const dir = tempDirSync(scope.context, 'hwsd-');
  const rundir = path.join(dir, 'run');
  mkdirSync(rundir, { mode: 0o700 });
  const certs = devCertificates(dir);
  ca = certs.ca.cert;
  // 'victim' is killed by the last batch; 'nosuch' is allowed and never served (404);
  // anything else is not allowed (403).
  const common = ['--allow', 'pong,victim,nosuch', '--origin', ORIGIN, '--max-payload', String(MAX_PAYLOAD)];
  const started = await Promise.all([
    startPongd(scope.context, rundir),
    startPongd(scope.context, rundir, 'victim'),
    startHostileWsd(scope.context, rundir, [...common, '--handshake-timeout', String(HANDSHAKE)]),
    startHostileWsd(scope.context, rundir, [...common, '--handshake-timeout', String(HANDSHAKE), '--cert', certs.files.cert, '--key', certs.files.key]),
  ]);
  victim = started[1].daemon;
  ws = started[2];
  wss = started[3];
  // Warm both daemons before the baselines (first connections allocate lazily).
  const warm = new SharedScopeTeardown();
  for (let i = 0; i < 20; i++) {
    await freshEcho(warm, ws, `warm ${i}`);
    await freshEcho(warm, wss, `warm ${i}`);
  }
  await burst(warm, 50);
  // Enough churn that V8 and malloc have grown their arenas to the size a churn batch
  // needs (RSS after a forced GC then stays flat; heapUsed never grows): see the note.
  await churn(WARM_CHURN);
  await warm.run();
  await linesFrom(ws.daemon, 0, (l) => l.msg === 'connection closed', 20 + 50 + WARM_CHURN, 30_000, 'teardowns of the warm-up');
  await linesFrom(wss.daemon, 0, (l) => l.msg === 'connection closed', 20, 10_000, 'teardowns of the warm-up');
  await Promise.all([settledFds(ws.daemon), settledFds(wss.daemon)]);
  wsBase = await baselineOf(ws.daemon);
  wssBase = await baselineOf(wss.daemon);
});

test.after.always(async () => {
  await scope.close();
});

/** A teardown list usable outside a test (the warm-up in `before`). */
class SharedScopeTeardown {
  private readonly fns: Array<() => void> = [];
  teardown(fn: () => void): void {
    this.fns.push(fn);
  }
  async run(): Promise<void> {
    for (const fn of this.fns) fn();
  }
}

/** A WebSocket client of `gw` (wss verified against the development CA) to `/pong`. */
async function fresh(t: { teardown(fn: () => void): void }, gw: HostileWsd, service = 'pong'): Promise<WsClient> {
  const secure = gw === wss;
  const url = `${secure ? 'wss' : 'ws'}://127.0.0.1:${gw.port}/${service}`;
  return openWs(t, url, secure ? { origin: ORIGIN, ca } : { origin: ORIGIN });
}

/** (a): a new client gets `text` echoed, then closes normally and wsd logs its end. */
async function freshEcho(t: { teardown(fn: () => void): void }, gw: HostileWsd, text: string): Promise<void> {
  const mark = gw.daemon.log.lines.length;
  const client = await fresh(t, gw);
  const reply = await client.echo(Buffer.from(text));
  if (!reply.data.equals(Buffer.from(text))) throw new Error(`echo of ${text} came back as ${reply.data.toString()}`);
  client.ws.close(1000);
  await client.waitClosed();
  const line = await endingOf(gw.daemon, mark, client.peer);
  if (line.msg !== 'connection closed' || codeOf(line) !== undefined) throw new Error(`echo client ended as ${JSON.stringify(line)}`);
}

const BURST = 520;
const CHURN = 1000;
/** Churn cycles of the warm-up before the baselines. */
const WARM_CHURN = 600;

/** `count` clients upgrade at once, each gets its own echo, all close; resolves their peers. */
async function burst(t: { teardown(fn: () => void): void }, count: number): Promise<string[]> {
  const clients = await Promise.all(Array.from({ length: count }, () => fresh(t, ws)));
  const replies = await Promise.all(clients.map((c, i) => c.echo(`client ${i}`)));
  const wrong = replies.findIndex((r, i) => r.data.toString() !== `client ${i}`);
  if (wrong !== -1) throw new Error(`client ${wrong} got ${replies[wrong]!.data.toString()}`);
  for (const c of clients) c.ws.close(1000);
  await Promise.all(clients.map((c) => c.waitClosed()));
  return clients.map((c) => c.peer);
}

/**
 * `cycles` connect/upgrade/close cycles, 16 at a time: every other one echoes first,
 * every fifth is cut (terminate) instead of closed. Resolves how many failed.
 */
async function churn(cycles: number): Promise<number> {
  let failures = 0;
  await pool(cycles, 16, async (i) => {
    const holder = new SharedScopeTeardown();
    try {
      const client = await fresh(holder, ws);
      if (i % 2 === 0) await client.echo(`cycle ${i}`);
      if (i % 5 === 0) client.ws.terminate();
      else client.ws.close(1000);
      await client.waitClosed();
    } catch {
      failures++;
    } finally {
      await holder.run();
    }
  });
  return failures;
}

/** What a hostile connection must have left in wsd's log. */
interface Expected {
  what: string;
  peer: string;
  /** 'refused': 'connection refused' with this IPC_ERR_ code; 'closed': 'connection closed' with a code (matching, when given). */
  msg: 'connection refused' | 'connection closed';
  code?: string | RegExp;
  /** False where the line rightly has no code (checked by its own test below). */
  coded?: boolean;
}

/** Ending log lines seen by checkLogs, by peer (the tests of single cases read them). */
const endings = new Map<string, LogLine>();

/** (c): each hostile connection's ending log line carries a code. */
async function checkLogs(t: ExecutionContext, gw: HostileWsd, from: number, expected: readonly Expected[]): Promise<void> {
  for (const e of expected) {
    const line: LogLine | null = await endingOf(gw.daemon, from, e.peer).catch(() => null);
    if (line === null) {
      t.fail(`${e.what}: no 'connection refused' or 'connection closed' line for ${e.peer}`);
      continue;
    }
    t.is(line.msg, e.msg, `${e.what}: ${JSON.stringify(line)}`);
    endings.set(e.peer, line);
    if (e.coded === false) continue;
    const code = codeOf(line);
    t.is(typeof code, 'string', `${e.what}: the log line has a code: ${JSON.stringify(line)}`);
    if (e.msg === 'connection refused') t.regex(String(code), /^IPC_ERR_/, `${e.what}: ${JSON.stringify(line)}`);
    if (typeof e.code === 'string') t.is(code, e.code, `${e.what}: ${JSON.stringify(line)}`);
    else if (e.code) t.regex(String(code), e.code, `${e.what}: ${JSON.stringify(line)}`);
  }
}

/** (a), (b) and (c) after a batch; `from` is the log length when the batch started. */
async function afterBatch(t: ExecutionContext, gw: HostileWsd, base: Baseline, from: number, expected: readonly Expected[]): Promise<void> {
  await freshEcho(t, gw, `after ${t.title}`);
  await assertBackToBaseline(t, gw.daemon, base);
  await checkLogs(t, gw, from, expected);
  t.true(gw.daemon.running);
}

/** A raw client upgraded to /pong on the ws instance (Origin allowed). */
async function upgradedRaw(t: ExecutionContext): Promise<RawClient> {
  const raw = await RawClient.connect(ws.port);
  t.teardown(() => raw.destroy());
  const head = await raw.upgrade('/pong', { Origin: ORIGIN });
  if (head.status !== 101) throw new Error(`upgrade answered ${head.statusLine}`);
  return raw;
}

/** Sends `frames` on a fresh upgraded client and expects a close frame with `closeCode`, then the close. */
async function violation(t: ExecutionContext, what: string, frames: Buffer[], closeCode: number, code: RegExp): Promise<Expected> {
  const raw = await upgradedRaw(t);
  raw.write(Buffer.concat(frames));
  const close = await raw.readClose();
  t.is(closeCodeOf(close).code, closeCode, `${what}: close code`);
  await raw.waitClosed();
  return { what, peer: raw.peer, msg: 'connection closed', code };
}

const closePayload = (code: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code);
  return b;
};

/** A frame with RSV bits set (RFC 6455 §5.2: no extension negotiated, so the peer must fail). */
function withRsv(bits: number, frame: Buffer): Buffer {
  frame[0] = frame[0]! | bits;
  return frame;
}

// 1-11: frame-level violations, each on its own upgraded connection, all at once.
test.serial('frame violations: unmasked, reserved opcodes, RSV bits, bad control frames and close codes, oversize, bad UTF-8, stray continuation', async (t) => {
  const mark = ws.daemon.log.lines.length;
  const payload = (n: number, fill = 0x61) => Buffer.alloc(n, fill);
  const cases: Array<Promise<Expected>> = [
    violation(t, 'unmasked frame', [encodeWsFrame(Opcode.BINARY, payload(10), { mask: false })], 1002, /^WS_ERR_EXPECTED_MASK$/),
    violation(t, 'reserved data opcode 0x3', [encodeWsFrame(0x3, payload(4))], 1002, /^WS_ERR_INVALID_OPCODE$/),
    violation(t, 'reserved control opcode 0xB', [encodeWsFrame(0xb, payload(4))], 1002, /^WS_ERR_INVALID_OPCODE$/),
    violation(t, 'RSV1 set', [withRsv(0x40, encodeWsFrame(Opcode.BINARY, payload(4)))], 1002, /^WS_ERR_UNEXPECTED_RSV_1$/),
    violation(t, 'RSV2 set', [withRsv(0x20, encodeWsFrame(Opcode.BINARY, payload(4)))], 1002, /^WS_ERR_UNEXPECTED_RSV_2_3$/),
    violation(t, 'RSV3 set', [withRsv(0x10, encodeWsFrame(Opcode.BINARY, payload(4)))], 1002, /^WS_ERR_UNEXPECTED_RSV_2_3$/),
    violation(t, 'ping of 126 bytes', [encodeWsFrame(Opcode.PING, payload(126))], 1002, /^WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH$/),
    violation(t, 'close of 200 bytes', [encodeWsFrame(Opcode.CLOSE, Buffer.concat([closePayload(1000), payload(198)]))], 1002, /^WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH$/),
    violation(t, 'fragmented ping', [encodeWsFrame(Opcode.PING, payload(4), { fin: false })], 1002, /^WS_ERR_EXPECTED_FIN$/),
    ...[999, 1005, 1006, 5000].map((c) =>
      violation(t, `close code ${c}`, [encodeWsFrame(Opcode.CLOSE, closePayload(c))], 1002, /^WS_ERR_INVALID_CLOSE_CODE$/),
    ),
    violation(t, 'close with a 1-byte payload', [encodeWsFrame(Opcode.CLOSE, Buffer.from([3]))], 1002, /^WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH$/),
    violation(t, 'message over --max-payload', [encodeWsFrame(Opcode.BINARY, payload(MAX_PAYLOAD + 1))], 1009, /^WS_ERR_UNSUPPORTED_MESSAGE_LENGTH$/),
    violation(
      t,
      'fragmented message over --max-payload',
      [encodeWsFrame(Opcode.BINARY, payload(600), { fin: false }), encodeWsFrame(Opcode.CONTINUATION, payload(600))],
      1009,
      /^WS_ERR_UNSUPPORTED_MESSAGE_LENGTH$/,
    ),
    violation(t, 'invalid UTF-8 in a text message', [encodeWsFrame(Opcode.TEXT, Buffer.from([0x68, 0xc3, 0x28, 0xff]))], 1007, /^WS_ERR_INVALID_UTF8$/),
    violation(t, 'continuation without a start', [encodeWsFrame(Opcode.CONTINUATION, payload(8))], 1002, /^WS_ERR_INVALID_OPCODE$/),
  ];
  const expected = await Promise.all(cases);
  await afterBatch(t, ws, wsBase, mark, expected);
});

// 12: a flood of tiny messages, every one echoed in order.
test.serial('10,000 tiny messages sent at once are all echoed in order', async (t) => {
  const mark = ws.daemon.log.lines.length;
  const COUNT = 10_000;
  const client = await fresh(t, ws);
  for (let i = 0; i < COUNT; i++) {
    const m = Buffer.alloc(4);
    m.writeUInt32BE(i);
    client.ws.send(m);
  }
  for (let i = 0; i < COUNT; i++) {
    const m = await client.next();
    if (m.data.readUInt32BE(0) !== i) {
      t.fail(`message ${i} came back as ${m.data.readUInt32BE(0)}`);
      break;
    }
  }
  client.ws.close(1000);
  await client.waitClosed();
  const line = await endingOf(ws.daemon, mark, client.peer);
  // A flood that ends with a normal close is no error: its line has the counts, not a code.
  t.is(line.msg, 'connection closed');
  t.is(line['messagesIn'], COUNT);
  t.is(line['messagesOut'], COUNT);
  await afterBatch(t, ws, wsBase, mark, []);
});

/** A raw request (`text` as given) that must be refused with `status`; its connection is closed by wsd. */
async function refusedRequest(t: ExecutionContext, what: string, text: string, status: number, code: string): Promise<Expected> {
  const socket = await connectRaw(ws.port);
  t.teardown(() => socket.destroy());
  const peer = peerOf(socket);
  const received = collectUntilClose(socket);
  socket.write(text);
  const { data, timedOut } = await received;
  t.false(timedOut, `${what}: wsd closed the connection`);
  const response = parseResponse(data);
  t.is(response.status, status, `${what}: ${JSON.stringify(data.toString('latin1').slice(0, 200))}`);
  return { what, peer, msg: 'connection refused', code };
}

// 13-24: bad HTTP, bad paths and names, refused origin.
test.serial('bad HTTP, bad paths, names not allowed or not served, and a refused origin are answered and closed', async (t) => {
  const mark = ws.daemon.log.lines.length;
  const withOrigin = (p: string, headers: Record<string, string | null> = {}) => upgradeRequest(p, { Origin: ORIGIN, ...headers });
  const R = ErrorCode.HANDSHAKE_REFUSED;
  const N = ErrorCode.INVALID_SERVICE_NAME;
  const expected = await Promise.all([
    refusedRequest(t, 'garbage', '\x16\x03\x01 this is not HTTP \x00\xff\r\n\r\n', 400, R),
    refusedRequest(t, 'Upgrade: h2c', withOrigin('/pong', { Upgrade: 'h2c' }), 400, R),
    refusedRequest(t, 'bad Sec-WebSocket-Key', withOrigin('/pong', { 'Sec-WebSocket-Key': 'short' }), 400, R),
    refusedRequest(t, 'Sec-WebSocket-Key missing', withOrigin('/pong', { 'Sec-WebSocket-Key': null }), 400, R),
    refusedRequest(t, 'Sec-WebSocket-Version 12', withOrigin('/pong', { 'Sec-WebSocket-Version': '12' }), 400, R),
    refusedRequest(t, 'POST upgrade', withOrigin('/pong').replace(/^GET /, 'POST '), 400, R),
    refusedRequest(t, 'headers over 16 KB', withOrigin('/pong', { 'X-Filler': 'f'.repeat(17 * 1024) }), 400, R),
    refusedRequest(t, '%2e%2e path', withOrigin('/%2e%2e/pong'), 400, N),
    refusedRequest(t, '%2e%2e name', withOrigin('/%2e%2e'), 400, N),
    refusedRequest(t, 'NUL in the name', withOrigin('/pong%00'), 400, N),
    refusedRequest(t, '10 KB name', withOrigin(`/${'n'.repeat(10 * 1024)}`), 400, N),
    refusedRequest(t, 'name not allowed', withOrigin('/other'), 403, ErrorCode.SERVICE_NOT_ALLOWED),
    refusedRequest(t, 'unknown service', withOrigin('/nosuch'), 404, ErrorCode.SERVICE_UNAVAILABLE),
    refusedRequest(t, 'origin refused', upgradeRequest('/pong', { Origin: 'http://evil.test' }), 403, R),
    refusedRequest(t, 'no origin', upgradeRequest('/pong'), 403, R),
  ]);
  // Also through a real client library: the statuses it sees.
  t.is((await refusedStatus(t, `ws://127.0.0.1:${ws.port}/other`, { origin: ORIGIN })).status, 403);
  t.is((await refusedStatus(t, `ws://127.0.0.1:${ws.port}/pong`, { origin: 'http://evil.test' })).status, 403);
  await afterBatch(t, ws, wsBase, mark, expected);
});

// 25, 27: slow and silent clients.
test.serial('a slowloris upgrade and silence after connect are cut after --handshake-timeout and logged', async (t) => {
  const mark = ws.daemon.log.lines.length;
  // Slowloris: one byte every 300 ms; the whole request would take ~40 s.
  const slow = await connectRaw(ws.port);
  t.teardown(() => slow.destroy());
  const slowPeer = peerOf(slow);
  const drip = dribble(slow, upgradeRequest('/pong', { Origin: ORIGIN }), 300, 10_000);
  // Silence.
  const silent = await connectRaw(ws.port);
  t.teardown(() => silent.destroy());
  const silentPeer = peerOf(silent);

  t.true(await closedWithin(silent, HANDSHAKE + 4000), 'the silent client is cut after --handshake-timeout');
  const dripped = await drip.done;
  t.true(dripped.closedByPeer, `the slowloris client is cut (sent ${dripped.sent} bytes)`);
  t.true(performance.now() - drip.first < HANDSHAKE + 4000, 'the slowloris client is cut near --handshake-timeout');
  await afterBatch(t, ws, wsBase, mark, [
    { what: 'slowloris', peer: slowPeer, msg: 'connection refused', code: ErrorCode.HANDSHAKE_TIMEOUT },
    { what: 'silence', peer: silentPeer, msg: 'connection refused', code: ErrorCode.HANDSHAKE_TIMEOUT },
  ]);
});

// 28: a reset in the middle of a frame.
let resetPeer = '';
test.serial('a reset in the middle of a frame is torn down and logged', async (t) => {
  const mark = ws.daemon.log.lines.length;
  const rst = await upgradedRaw(t);
  rst.write(encodeWsFrame(Opcode.BINARY, Buffer.from('whole')));
  t.is((await rst.readFrame()).payload.toString(), 'whole', 'a whole frame first is echoed');
  const frame = encodeWsFrame(Opcode.BINARY, Buffer.alloc(500, 0x72));
  rst.write(frame.subarray(0, 250));
  await sleep(200);
  rst.socket.resetAndDestroy(); // RST (SO_LINGER 0)
  resetPeer = rst.peer;
  await afterBatch(t, ws, wsBase, mark, [{ what: 'reset mid-frame', peer: rst.peer, msg: 'connection closed', coded: false }]);
  t.is(endings.get(rst.peer)?.['messagesIn'], 1, 'the half frame was not passed on');
});

// Defect found by this suite (not in issue 8's list): the reset above is logged as an
// ordinary `reason: 'client closed'` with no code (docs/errors.md: IPC_ERR_TRUNCATED_FRAME,
// "the stream ended inside a frame", or the socket's ECONNRESET). (Fixed: IPC_ERR_CONNECTION_LOST.)
test.serial('the reset in the middle of a frame is logged with a code', (t) => {
  const line = endings.get(resetPeer);
  t.truthy(line, 'the previous test saw the line');
  t.regex(String(codeOf(line!)), /^(IPC_ERR_|WS_ERR_|E[A-Z]+$)/, JSON.stringify(line));
});

// 26: issue 8 defect 3 (failed before the lifecycle redesign).
test.serial('slowloris after a page request on the same keep-alive connection is cut by the handshake deadline', async (t) => {
  const mark = ws.daemon.log.lines.length;
  const socket = await connectRaw(ws.port);
  t.teardown(() => socket.destroy());
  const peer = peerOf(socket);
  socket.write('GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  // Read the whole response (content-length) so the connection is idle, keep-alive.
  let data = Buffer.alloc(0);
  const onData = (c: Buffer) => (data = Buffer.concat([data, c]));
  socket.on('data', onData);
  for (let i = 0; i < 500 && !parseResponse(data).complete; i++) await sleep(10);
  t.is(parseResponse(data).status, 200, 'the page request is served');
  const drip = dribble(socket, upgradeRequest('/pong', { Origin: ORIGIN }), 300, 6000);
  const dripped = await drip.done;
  t.true(dripped.closedByPeer, `wsd cut the dribbling client within 6 s of its first byte (it sent ${dripped.sent} bytes)`);
  socket.destroy();
  await afterBatch(t, ws, wsBase, mark, [{ what: 'slowloris after a page', peer, msg: 'connection refused', code: ErrorCode.HANDSHAKE_TIMEOUT }]);
});

// 29, 30: TLS garbage and a truncated ClientHello on the wss instance.
test.serial('wss: TLS garbage and a truncated ClientHello are closed and logged', async (t) => {
  const mark = wss.daemon.log.lines.length;
  const hello = await captureClientHello();
  t.is(hello[0], 0x16, 'a TLS handshake record');
  const garbage = await connectRaw(wss.port);
  t.teardown(() => garbage.destroy());
  const garbagePeer = peerOf(garbage);
  const garbageDone = collectUntilClose(garbage);
  garbage.write('GET /pong HTTP/1.1\r\nHost: x\r\n\r\n' + '\x00\xff'.repeat(100));
  const truncated = await connectRaw(wss.port);
  t.teardown(() => truncated.destroy());
  const truncatedPeer = peerOf(truncated);
  truncated.write(hello.subarray(0, Math.floor(hello.length / 2)));
  // A handshake record whose body is random bytes.
  const junk = await connectRaw(wss.port);
  t.teardown(() => junk.destroy());
  const junkPeer = peerOf(junk);
  const body = Buffer.alloc(300, 0xa5);
  junk.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x01, 0x2c]), body]));

  const g = await garbageDone;
  t.false(g.timedOut, 'garbage: closed by wsd');
  t.false(g.data.toString('latin1').includes('HTTP/'), 'garbage: no HTTP answer on the TLS port');
  t.true(await closedWithin(truncated, HANDSHAKE + 4000), 'truncated ClientHello: cut after --handshake-timeout');
  t.true(await closedWithin(junk, HANDSHAKE + 4000), 'junk handshake record: closed');
  await afterBatch(t, wss, wssBase, mark, [
    { what: 'TLS garbage', peer: garbagePeer, msg: 'connection refused', code: ErrorCode.HANDSHAKE_REFUSED },
    { what: 'truncated ClientHello', peer: truncatedPeer, msg: 'connection refused', code: ErrorCode.HANDSHAKE_TIMEOUT },
    { what: 'junk handshake record', peer: junkPeer, msg: 'connection refused', code: ErrorCode.HANDSHAKE_REFUSED },
  ]);
});

// 31: many upgrades at once.
test.serial(`${BURST} concurrent upgrades each get their own echo`, async (t) => {
  const mark = ws.daemon.log.lines.length;
  const peers = await burst(t, BURST);
  t.is(peers.length, BURST);
  const set = new Set(peers);
  await linesFrom(ws.daemon, mark, (l) => l.msg === 'connection closed' && set.has(String(l['peer'])), BURST, 20_000, 'teardowns of the burst');
  await afterBatch(t, ws, wsBase, mark, []);
});

// 32: connection churn.
test.serial(`${CHURN} connect/upgrade/echo/close cycles leave nothing behind`, async (t) => {
  const mark = ws.daemon.log.lines.length;
  t.is(await churn(CHURN), 0, 'every cycle upgraded and closed');
  await linesFrom(ws.daemon, mark, (l) => l.msg === 'connection closed', CHURN, 20_000, 'teardowns of the cycles');
  await afterBatch(t, ws, wsBase, mark, []);
});

// 33: the service dies mid-stream.
let idlePeer = '';
test.serial('a service killed mid-stream closes its clients with 1011 or 1001, each logged', async (t) => {
  const mark = ws.daemon.log.lines.length;
  const clients = await Promise.all(Array.from({ length: 6 }, () => fresh(t, ws, 'victim')));
  for (const c of clients) t.is((await c.echo('alive')).data.toString(), 'alive');
  // Messages in flight when it dies, on all but the last client (idle: nothing pending,
  // so its service socket ends with a clean EOF).
  for (const c of clients.slice(0, -1)) for (let i = 0; i < 200; i++) c.ws.send(Buffer.alloc(MAX_PAYLOAD, i));
  victim.kill('SIGKILL');
  const closes = await Promise.all(clients.map((c) => c.waitClosed()));
  for (const c of closes) t.true([1001, 1011].includes(c.code), `close code ${c.code}`);
  idlePeer = clients.at(-1)!.peer;
  await afterBatch(
    t,
    ws,
    wsBase,
    mark,
    clients.map((c) => ({ what: 'service killed', peer: c.peer, msg: 'connection closed' as const, coded: false })),
  );
});

// Defect found by this suite (not in issue 8's list): when the service ends (here the
// idle client's, killed: clean EOF), wsd sends 1001, the client answers the close, and the
// teardown line says `endedBy: 'client', reason: 'client closed'` with no code
// (src/switch.ts transportClosed: the client's input never "ended"). The line must name
// the service (endedBy 'service') or carry a code. (Clients with messages in flight may
// get a code from a write error instead: racy, so only the idle one is checked.)
// (Fixed: IPC_ERR_CONNECTION_LOST.)
test.serial('the idle client of a killed service is logged as ended by the service, or with a code', (t) => {
  const line = endings.get(idlePeer);
  t.truthy(line, 'the previous test saw the line');
  t.true(line!['endedBy'] === 'service' || typeof codeOf(line!) === 'string', JSON.stringify(line));
});

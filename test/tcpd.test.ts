/**
 * tcpd inbound against bad input: in-process with `new TcpGateway({...})` (fast, logs
 * captured), and spawned from dist/ where the command line or signals matter. Each test
 * has its own RUNDIR and ephemeral port; services are the tests' own framed echo
 * (test/helpers/services.ts) or our pongd when it must be killed.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, lstatSync, renameSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Gateway as TcpGateway } from '../gateways/gateway.js';
import { ConnectionTable, PendingConnection } from '../gateways/lifecycle.js';
import { createTcpGateway } from '../gateways/tcp.js';
import type { GatewayInput as TcpGatewayOptions } from '../gateways/options.js';
import { startPongd, startTcpd, type Tcpd } from './helpers/daemon.js';
import { byMsg, captureLogger, codeOf, type LogLine, type LogSink } from './helpers/log-sink.js';
import { frame, pause, probeEcho, RawClient, tcpSession, WAIT } from './helpers/raw-client.js';
import { tempDir, tempRundir } from './helpers/rundir.js';
import { startFrameService, type TestService } from './helpers/services.js';

const BOUNCE = frame('bounce me');

interface Gateway {
  gateway: TcpGateway;
  port: number;
  log: LogSink;
  rundir: string;
  /** A TCP client that named `service` and got `ok`. */
  session: (service?: string) => Promise<RawClient>;
  connect: () => Promise<RawClient>;
}

/**
 * An in-process tcpd on 127.0.0.1:0 (default: client-named services, any valid name),
 * logging into a sink; destroyed at teardown.
 */
async function startGateway(t: ExecutionContext, options: Partial<TcpGatewayOptions> = {}, rundir?: string): Promise<Gateway> {
  const dir = rundir ?? (await tempRundir(t));
  const { logger, sink } = captureLogger();
  const gateway = createTcpGateway({
    listen: [{ host: '127.0.0.1', port: 0 }],
    ...(options.service === undefined && options.allow === undefined ? { allow: '*' as const } : {}),
    rundir: dir,
    logger,
    ...options,
  });
  await gateway.listen();
  t.teardown(() => gateway.destroy());
  const port = gateway.addresses[0]!.port;
  return {
    gateway,
    port,
    log: sink,
    rundir: dir,
    session: (service = 'pong') => tcpSession(t, port, service),
    connect: () => RawClient.tcp(t, port),
  };
}

/** A gateway and a framed echo service `pong` in its RUNDIR. */
async function gatewayWithPong(
  t: ExecutionContext,
  options: Partial<TcpGatewayOptions> = {},
): Promise<Gateway & { pong: TestService }> {
  const rundir = await tempRundir(t);
  const pong = await startFrameService(t, rundir, 'pong');
  return { ...(await startGateway(t, options, rundir)), pong };
}

async function refused(t: ExecutionContext, log: LogSink, client: RawClient, code: string): Promise<LogLine> {
  const line = await log.waitFor(byMsg('connection refused', client.peer), WAIT, `refusal of ${client.peer}`);
  t.is(codeOf(line), code);
  t.is(typeof line['reason'], 'string');
  return line;
}

async function closed(t: ExecutionContext, log: LogSink, client: RawClient, code?: string): Promise<LogLine> {
  const line = await log.waitFor(byMsg('connection closed', client.peer), WAIT, `teardown of ${client.peer}`);
  for (const field of ['bytesIn', 'bytesOut', 'messagesIn', 'messagesOut', 'durationMs']) {
    t.is(typeof line[field], 'number', `${field} is logged`);
  }
  if (code !== undefined) t.is(codeOf(line), code);
  return line;
}

async function closeCleanly(client: RawClient): Promise<void> {
  client.endWrite();
  await client.expectEof();
  client.destroy();
}

// ---------------------------------------------------------------------------------------
// Frames

test('closes a connection whose length field exceeds maxPayload, and the others keep their echo', async (t) => {
  const gw = await gatewayWithPong(t);
  const other = await gw.session();
  const client = await gw.session();
  await client.write('000186a1616263').catch(() => undefined);
  await client.expectEof();
  const line = await closed(t, gw.log, client, 'IPC_ERR_PAYLOAD_TOO_LARGE');
  t.regex(String(line['reason']), /100001/);
  await probeEcho(other);
  t.deepEqual(
    gw.pong.frames.map((p) => p.toString()),
    ['ping'],
    'nothing of the oversized frame reached the service as a message',
  );
});

test('honours a smaller maxPayload: a frame of exactly maxPayload passes, one byte more closes', async (t) => {
  const gw = await gatewayWithPong(t, { maxPayload: 16 });
  const client = await gw.session();
  const largest = frame('x'.repeat(16));
  await client.write(largest);
  await client.expect(largest);
  await client.write(frame('x'.repeat(17))).catch(() => undefined);
  await client.expectEof();
  await closed(t, gw.log, client, 'IPC_ERR_PAYLOAD_TOO_LARGE');
  await probeEcho(await gw.session());
});

test('a frame truncated by the end of the stream is logged and nothing is echoed', async (t) => {
  const gw = await gatewayWithPong(t);
  const client = await gw.session();
  await client.write('00000010616263');
  client.endWrite();
  await client.expectEof();
  await closed(t, gw.log, client, 'IPC_ERR_TRUNCATED_FRAME');
  t.is(client.received, 2, 'only the ok');
  t.is(gw.pong.frames.length, 0);
});

test('reassembles a frame split at every byte boundary', async (t) => {
  const gw = await gatewayWithPong(t);
  const client = await gw.session();
  for (let cut = 1; cut < BOUNCE.length; cut++) {
    await client.write(BOUNCE.subarray(0, cut));
    await pause(10);
    await client.write(BOUNCE.subarray(cut));
    await client.expect(BOUNCE);
  }
  await closeCleanly(client);
  const line = await closed(t, gw.log, client);
  t.is(line['messagesIn'], BOUNCE.length - 1);
  t.is(line['messagesOut'], BOUNCE.length - 1);
});

test('passes frames coalesced in one segment, in order', async (t) => {
  const gw = await gatewayWithPong(t);
  const client = await gw.session();
  await client.write(Buffer.concat([frame('one'), frame(''), frame('three')]));
  await client.expect(frame('one'));
  await client.expect(frame(''));
  await client.expect(frame('three'));
  await closeCleanly(client);
  t.deepEqual(
    gw.pong.frames.map((p) => p.toString()),
    ['one', '', 'three'],
  );
});

test('forwards and echoes a zero-length frame', async (t) => {
  const gw = await gatewayWithPong(t);
  const client = await gw.session();
  await client.write('00000000');
  await client.expect('00000000');
  await closeCleanly(client);
  const line = await closed(t, gw.log, client);
  t.is(line['messagesIn'], 1);
  t.is(line['messagesOut'], 1);
});

test('a client closing mid-frame tears both legs down, logged once', async (t) => {
  const gw = await gatewayWithPong(t);
  const client = await gw.session();
  await client.write(BOUNCE.subarray(0, 6));
  await gw.pong.until(() => gw.pong.bytes === 6, WAIT, 'the partial frame forwarded');
  client.destroy();
  await closed(t, gw.log, client);
  await gw.pong.until(() => gw.pong.open.size === 0, WAIT, 'the service connection closed');
  t.is(gw.gateway.core.connections, 0);
  t.is(gw.pong.frames.length, 0);
  t.is(gw.log.filter(byMsg('connection closed', client.peer)).length, 1);
});

test('a reply to frames sent with the client\'s FIN still reaches the client (half-close)', async (t) => {
  const rundir = await tempRundir(t);
  await startPongd(t, rundir);
  const gw = await startGateway(t, {}, rundir);
  // As `printf 'pong<frame>' | nc -N host port` does: everything, then FIN at once.
  const client = await gw.connect();
  await client.write(Buffer.concat([Buffer.from('pong'), BOUNCE, frame('last')]));
  client.endWrite();
  await client.expect('6f6b');
  await client.expect(BOUNCE);
  await client.expect(frame('last'));
  t.is(await client.expectEof(), 'eof');
  const line = await closed(t, gw.log, client);
  t.is(line['messagesIn'], 2);
  t.is(line['messagesOut'], 2);
});

test('a service sending a frame over maxPayload closes that connection, logged', async (t) => {
  const rundir = await tempRundir(t);
  // Answers with a header announcing 100001 bytes (the original's limit is 99992).
  await startFrameService(t, rundir, 'liar', () => Buffer.from('000186a1616263', 'hex'));
  await startFrameService(t, rundir, 'pong');
  const gw = await startGateway(t, {}, rundir);
  const client = await gw.session('liar');
  await client.write(BOUNCE);
  await client.expectEof();
  t.is(client.received, 2, 'only the ok: nothing of the oversized frame');
  await closed(t, gw.log, client, 'IPC_ERR_PAYLOAD_TOO_LARGE');
  await probeEcho(await gw.session('pong'));
});

// ---------------------------------------------------------------------------------------
// Service names

test('closes an unknown service without a byte and logs why', async (t) => {
  const gw = await startGateway(t);
  const client = await gw.connect();
  await client.write(Buffer.from('nosuchservice'));
  await client.expectEof();
  const line = await refused(t, gw.log, client, 'IPC_ERR_SERVICE_UNAVAILABLE');
  t.is(line['service'], 'nosuchservice');
});

const traversal = test.macro({
  async exec(t, name: (base: string) => string) {
    const base = await tempDir(t);
    const rundir = path.join(base, 'run');
    // Live services where a traversal would lead, so a leak would show as a connection.
    const targets = [
      await startFrameService(t, base, 'x'),
      await startFrameService(t, path.join(base, 'run-other'), 'pong'),
      await startFrameService(t, rundir, 'abs'),
    ];
    const gw = await startGateway(t, {}, rundir);
    const client = await gw.connect();
    await client.write(Buffer.from(name(base)));
    await client.expectEof();
    await refused(t, gw.log, client, 'IPC_ERR_INVALID_SERVICE_NAME');
    t.deepEqual(
      targets.map((s) => s.accepted),
      [0, 0, 0],
      'no service was reached',
    );
  },
  title: (label = '') => `refuses the name ${label} without a byte, before any path is built`,
});

test('../x', traversal, () => '../x');
test('/abs', traversal, () => '/abs');
test('../run-other/pong', traversal, () => '../run-other/pong');
test('of an absolute path to a live socket', traversal, (base) => `${base}/run-other/pong`);
test('./x', traversal, () => './x');

const badName = test.macro({
  async exec(t, name: string) {
    const gw = await gatewayWithPong(t);
    const client = await gw.connect();
    await client.write(Buffer.from(name, 'latin1'));
    await client.expectEof();
    await refused(t, gw.log, client, 'IPC_ERR_INVALID_SERVICE_NAME');
    t.is(gw.pong.accepted, 0, 'pong was not reached');
  },
  title: (label = '') => `refuses ${label} without a byte`,
});

test('a name with a trailing newline', badName, 'pong\n');
test('a name with CRLF', badName, 'pong\r\n');
test('a name with a space', badName, 'pong ');
test('a name longer than maxNameLength', badName, 'p'.repeat(65));

test('keeps the bytes that follow the name in the same segment, and forwards them after ok', async (t) => {
  const gw = await gatewayWithPong(t);
  const whole = await gw.connect();
  await whole.write(Buffer.concat([Buffer.from('pong'), BOUNCE, frame('again')]));
  await whole.expect('6f6b');
  await whole.expect(BOUNCE);
  await whole.expect(frame('again'));
  // The name, then only part of a frame in the same segment; the rest later.
  const partial = await gw.connect();
  await partial.write(Buffer.concat([Buffer.from('pong'), BOUNCE.subarray(0, 6)]));
  await partial.expect('6f6b');
  await partial.write(BOUNCE.subarray(6));
  await partial.expect(BOUNCE);
  await closeCleanly(partial);
  t.is((await closed(t, gw.log, partial))['messagesIn'], 1);
});

// ---------------------------------------------------------------------------------------
// Handshake bounds and limits

test('a silent client times out alone while another gets ok and its echo', async (t) => {
  const gw = await gatewayWithPong(t, { handshakeTimeout: 1500 });
  const silent = await gw.connect();
  const other = await gw.session();
  t.false(silent.finished, 'the other client was served while the silent one still waits');
  await probeEcho(other);
  await silent.expectEof(1500 + WAIT);
  await refused(t, gw.log, silent, 'IPC_ERR_HANDSHAKE_TIMEOUT');
  await probeEcho(other);
});

test('fixed service: frames pass without a name and without ok', async (t) => {
  const gw = await gatewayWithPong(t, { service: 'pong' });
  const client = await gw.connect();
  await client.write(BOUNCE);
  await client.expect(BOUNCE);
  await closeCleanly(client);
  t.is(client.received, BOUNCE.length);
  t.is((await closed(t, gw.log, client))['service'], 'pong');
});

test('fixed service absent at connect: the client is closed without a byte, logged', async (t) => {
  const gw = await startGateway(t, { service: 'pong' });
  const client = await gw.connect();
  await client.expectEof();
  const line = await refused(t, gw.log, client, 'IPC_ERR_SERVICE_UNAVAILABLE');
  t.is(line['service'], 'pong');
});

test('an allow list refuses a valid name not in it, without a byte, and passes a listed one', async (t) => {
  const rundir = await tempRundir(t);
  const other = await startFrameService(t, rundir, 'other');
  await startFrameService(t, rundir, 'pong');
  const gw = await startGateway(t, { allow: ['pong'] }, rundir);
  const client = await gw.connect();
  await client.write(Buffer.from('other'));
  await client.expectEof();
  await refused(t, gw.log, client, 'IPC_ERR_SERVICE_NOT_ALLOWED');
  t.is(other.accepted, 0);
  await probeEcho(await gw.session('pong'));
});

test('maxConnections refuses the extra client without a byte, and admits again once one leaves', async (t) => {
  const gw = await gatewayWithPong(t, { maxConnections: 1 });
  const first = await gw.session();
  const extra = await gw.connect();
  await extra.expectEof();
  await refused(t, gw.log, extra, 'IPC_ERR_TOO_MANY_CONNECTIONS');
  await probeEcho(first);
  await closeCleanly(first);
  await closed(t, gw.log, first);
  await probeEcho(await gw.session());
});

// ---------------------------------------------------------------------------------------
// Spawned: signals and the command line

test('a service killed mid-stream: the client gets EOF, logged, and the gateway keeps serving', async (t) => {
  const rundir = await tempRundir(t);
  const pongd = await startPongd(t, rundir);
  const gw = await startGateway(t, {}, rundir);
  const client = await gw.session();
  await probeEcho(client);
  pongd.daemon.kill('SIGKILL');
  await pongd.daemon.waitExit(WAIT);
  t.is(await client.expectEof(), 'eof');
  t.is((await closed(t, gw.log, client))['endedBy'], 'service');
  // Its stale socket: a new client is refused without a byte; a restart serves again.
  const late = await gw.connect();
  await late.write(Buffer.from('pong'));
  await late.expectEof();
  await refused(t, gw.log, late, 'IPC_ERR_SERVICE_UNAVAILABLE');
  await startPongd(t, rundir);
  await probeEcho(await gw.session());
});

test('listens on [::1]:0 and 127.0.0.1:0 at once with a repeated --listen', async (t) => {
  const rundir = await tempRundir(t);
  await startFrameService(t, rundir, 'pong');
  const { daemon } = await startTcpd(t, rundir, ['--listen', '[::1]:0', '--listen', '127.0.0.1:0', '--allow', '*']);
  const lines = await daemon.log.waitForCount((l) => l.msg === 'listening' && typeof l['port'] === 'number', 2, WAIT);
  const byHost = new Map(lines.map((l) => [String(l['address']).replace(/:\d+$/, ''), l['port'] as number]));
  t.deepEqual([...byHost.keys()].sort(), ['127.0.0.1', '[::1]']);
  await probeEcho(await tcpSession(t, byHost.get('[::1]')!, 'pong', '::1'));
  await probeEcho(await tcpSession(t, byHost.get('127.0.0.1')!, 'pong', '127.0.0.1'));
});

test('ADDRESS from the environment is the default listen address', async (t) => {
  const rundir = await tempRundir(t);
  await startFrameService(t, rundir, 'pong');
  const { daemon, port } = await startTcpd(t, rundir, ['--allow', '*'], { env: { ADDRESS: '127.0.0.1:0' } });
  const line = await daemon.listening((l) => typeof l['port'] === 'number');
  t.is(line['address'], `127.0.0.1:${port}`);
  await probeEcho(await tcpSession(t, port));
});

/** A spawned tcpd with a framed echo `pong`, fully started and serving. */
async function tcpdForSignals(t: ExecutionContext, args: string[]): Promise<Tcpd & { rundir: string }> {
  const rundir = await tempRundir(t);
  await startFrameService(t, rundir, 'pong');
  const tcpd = await startTcpd(t, rundir, ['--listen', '127.0.0.1:0', '--allow', '*', ...args]);
  // The last startup line, then one round trip.
  await tcpd.daemon.listening((l) => l['role'] === 'outbound');
  const probe = await tcpSession(t, tcpd.port);
  await probeEcho(probe);
  await closeCleanly(probe);
  await tcpd.daemon.log.waitFor(byMsg('connection closed', probe.peer), WAIT, 'teardown of the probe');
  return { ...tcpd, rundir };
}

test('SIGTERM drains: an open connection finishes its echo, new ones are refused, exit 0', async (t) => {
  const tcpd = await tcpdForSignals(t, ['--drain-timeout', '20000']);
  const open = await tcpSession(t, tcpd.port);
  tcpd.daemon.kill('SIGTERM');
  await tcpd.daemon.log.waitFor(byMsg('stopping'), WAIT, "'stopping'");
  // New connections are refused: not accepted at all, reset (the kernel completed the
  // handshake into the backlog just before the listening socket closed), or closed
  // without a byte.
  const late = await RawClient.tcp(t, tcpd.port).then(
    async (client) => {
      await client.write(Buffer.from('pong')).catch(() => undefined);
      await client.expectEof();
      return 'closed without a byte';
    },
    (err: NodeJS.ErrnoException) => err.code,
  );
  t.true(['ECONNREFUSED', 'ECONNRESET', 'closed without a byte'].includes(String(late)), String(late));
  t.true(tcpd.daemon.running, 'still draining');
  await probeEcho(open);
  await closeCleanly(open);
  t.deepEqual(await tcpd.daemon.waitExit(20_000), { code: 0, signal: null });
  t.false(existsSync(path.join(tcpd.rundir, 'tcp')), 'outbound socket removed');
});

test('SIGTERM closes what is still open when the drain timeout expires, then exits 0', async (t) => {
  const tcpd = await tcpdForSignals(t, ['--drain-timeout', '300']);
  const open = await tcpSession(t, tcpd.port);
  tcpd.daemon.kill('SIGTERM');
  await open.expectEof(300 + WAIT);
  const line = await tcpd.daemon.log.waitFor(byMsg('connection closed', open.peer), WAIT, 'teardown');
  t.is(codeOf(line), 'IPC_ERR_SHUTDOWN');
  t.deepEqual(await tcpd.daemon.waitExit(WAIT), { code: 0, signal: null });
});

// ---------------------------------------------------------------------------------------
// Idle timeout

const IDLE = 1000;

test('idleTimeout closes a switched connection without traffic, logged with IPC_ERR_IDLE_TIMEOUT, and spares a busy one', async (t) => {
  const gw = await gatewayWithPong(t, { idleTimeout: IDLE });
  const quiet = await gw.session();
  const busy = await gw.session();
  await probeEcho(quiet);
  // The busy client echoes every ~100 ms until the quiet one is closed, then for 1.5
  // idle periods more (bounded in count either way).
  let quietClosed = false;
  const busyLoop = (async () => {
    let after = 0;
    for (let i = 0; i < 500 && after < (1.5 * IDLE) / 100; i++) {
      await probeEcho(busy);
      await pause(100);
      if (quietClosed) after++;
    }
    return after;
  })().catch((err: Error) => err);
  await quiet.expectEof(IDLE + WAIT);
  quietClosed = true;
  const line = await closed(t, gw.log, quiet, 'IPC_ERR_IDLE_TIMEOUT');
  t.is(line['level'], 40, 'logged as a warning');
  t.is(line['messagesIn'], 1);
  t.is(await busyLoop, 15, 'the busy client kept echoing after the quiet one was closed');
  t.false(busy.finished, 'the busy connection is still open');
  t.deepEqual(gw.log.filter(byMsg('connection closed', busy.peer)), []);
  await closeCleanly(busy);
  t.is(codeOf(await closed(t, gw.log, busy)), undefined);
});

for (const [what, options] of [
  ['by default', {}],
  ['with idleTimeout 0', { idleTimeout: 0 }],
] as const) {
  test(`a quiet switched connection is never closed for idleness ${what}`, async (t) => {
    const gw = await gatewayWithPong(t, options);
    const client = await gw.session();
    await probeEcho(client);
    // Quiet for longer than the idle timeout used above.
    await pause(1.5 * IDLE);
    t.false(client.finished);
    await probeEcho(client);
    t.deepEqual(gw.log.filter(byMsg('connection closed', client.peer)), []);
  });
}

test('tcpd --idle-timeout closes a quiet connection with IPC_ERR_IDLE_TIMEOUT in its log line', async (t) => {
  const tcpd = await tcpdForSignals(t, ['--idle-timeout', '500']);
  const client = await tcpSession(t, tcpd.port);
  await probeEcho(client);
  await client.expectEof(500 + WAIT);
  const line = await tcpd.daemon.log.waitFor(byMsg('connection closed', client.peer), WAIT, 'teardown');
  t.is(codeOf(line), 'IPC_ERR_IDLE_TIMEOUT');
  t.is(line['service'], 'pong');
  t.true(tcpd.daemon.running);
  await probeEcho(await tcpSession(t, tcpd.port));
});

// ---------------------------------------------------------------------------------------
// ConnectionTable: drain and deadlines

/** Resolves `promise`, or rejects once `ms` passed. */
async function settledWithin<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

test('ConnectionTable.close() called twice: both calls resolve once the last connection leaves', async (t) => {
  const table = new ConnectionTable(60_000);
  t.teardown(() => table.destroy());
  const pending = new PendingConnection(table, { conn: 1, peer: undefined }, 60_000, () => {});
  const first = table.close(60_000);
  const second = table.close(60_000);
  let settled = 0;
  void first.then(() => settled++);
  void second.then(() => settled++);
  await pause(50);
  t.is(settled, 0, 'both wait for the open connection');
  t.true(pending.handOver());
  await settledWithin(Promise.all([first, second]), WAIT, 'both close() calls');
  await settledWithin(table.close(60_000), WAIT, 'a third close()');
});

test('ConnectionTable.close() called twice: both calls resolve when the drain timeout cuts the connections', async (t) => {
  const table = new ConnectionTable(60_000);
  t.teardown(() => table.destroy());
  const codes: string[] = [];
  new PendingConnection(table, { conn: 1, peer: undefined }, 60_000, (_pending, err) => codes.push(err.code));
  await settledWithin(Promise.all([table.close(100), table.close(100)]), 100 + WAIT, 'both close() calls');
  t.deepEqual(codes, ['IPC_ERR_SHUTDOWN']);
  t.is(table.size, 0);
});

test('ConnectionTable: a connection handed over to its switch during the drain keeps the drain open until the switch ends', async (t) => {
  const table = new ConnectionTable(60_000);
  t.teardown(() => table.destroy());
  const pending = new PendingConnection(table, { conn: 1, peer: undefined }, 60_000, () => {});
  const closed = table.close(60_000);
  let done = false;
  void closed.then(() => (done = true));
  const reasons: string[] = [];
  const sw = { close: (reason: string) => reasons.push(reason) };
  t.true(pending.handOver(sw), 'hand-over while draining');
  await pause(50);
  t.false(done, 'the switch is drained like any connection');
  table.delete(sw);
  await settledWithin(closed, WAIT, 'close() once the switch ended');
  t.deepEqual(reasons, []);
});

test('ConnectionTable: the sweep refuses a pending connection at its deadline with IPC_ERR_HANDSHAKE_TIMEOUT', async (t) => {
  const table = new ConnectionTable(100);
  t.teardown(() => table.destroy());
  const codes: string[] = [];
  const pending = new PendingConnection(table, { conn: 1, peer: undefined }, 100, (_pending, err) => codes.push(err.code));
  let destroyed = false;
  pending.hold({ destroy: () => (destroyed = true) });
  await settledWithin(
    (async () => {
      while (!pending.settled) await pause(10);
    })(),
    WAIT,
    'the deadline',
  );
  t.deepEqual(codes, ['IPC_ERR_HANDSHAKE_TIMEOUT']);
  t.true(destroyed, 'what it held is closed');
  t.is(table.size, 0);
});

test('ConnectionTable.close() called twice with no connection: both resolve', async (t) => {
  const table = new ConnectionTable(5000);
  await settledWithin(Promise.all([table.close(100), table.close(100)]), WAIT, 'both close() calls');
  t.true(table.closing);
});

// ---------------------------------------------------------------------------------------
// --listen unix:/path

test('--listen unix:/path serves the name handshake on a Unix socket of mode 0660, replaces a stale socket, refuses a live one', async (t) => {
  const rundir = await tempRundir(t);
  await startFrameService(t, rundir, 'pong');
  const dir = await tempDir(t);
  const socketPath = path.join(dir, 'tcpd.sock');
  // A socket file left by a process that died (nothing listens on it): replaced.
  const stale = net.createServer();
  await new Promise<void>((resolve) => stale.listen(socketPath, resolve));
  renameSync(socketPath, `${socketPath}.keep`);
  stale.close();
  renameSync(`${socketPath}.keep`, socketPath);
  t.true(lstatSync(socketPath).isSocket(), 'a stale socket file is in the way');

  const { logger, sink } = captureLogger();
  const gateway = createTcpGateway({ listen: [`unix:${socketPath}`, '127.0.0.1:0'], allow: ['pong'], rundir, logger });
  await gateway.listen();
  t.teardown(() => gateway.destroy());
  t.deepEqual(gateway.paths, [socketPath]);
  t.is(statSync(socketPath).mode & 0o777, 0o660);
  t.truthy(sink.lines.find((l) => l.msg === 'listening' && l['address'] === `unix:${socketPath}`));

  const client = await RawClient.unix(t, socketPath);
  await client.write(Buffer.from('pong'));
  await client.expect(Buffer.from('ok'));
  await probeEcho(client);

  // A second gateway on the same live path is refused, the first untouched.
  const second = createTcpGateway({ listen: [`unix:${socketPath}`], allow: ['pong'], rundir });
  await t.throwsAsync(second.listen(), { message: /another process serves it/ });
  await probeEcho(client);
  client.destroy();
  await gateway.close();
  t.false(existsSync(socketPath), 'the socket file is removed on close');
});

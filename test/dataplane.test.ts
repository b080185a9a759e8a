/**
 * The native data plane (src/dataplane.ts, native/dataplane.cc) on its own: what the tcpd
 * test files (which run with it, the default, and again with LIBIPC_DATA_PLANE=js) do not reach. Backpressure both ways with
 * a reader that stops, the half-close timeout, a limit crossed inside a pipelined burst,
 * counts read live, closes from JS while the thread is writing (drain, idle), descriptors
 * released, and the fallback to the JS switch when the addon is absent.
 *
 * In-process gateways with `dataPlane: 'native'`, real sockets, a temp RUNDIR per test.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Gateway } from '../gateways/gateway.js';
import { createTcpGateway } from '../gateways/tcp.js';
import type { GatewayInput } from '../gateways/options.js';
import { spawnCli, startPongd } from './helpers/daemon.js';
import { byMsg, captureLogger, codeOf, type LogLine, type LogSink } from './helpers/log-sink.js';
import { frame, pattern, probeEcho, RawClient, tcpSession, WAIT } from './helpers/raw-client.js';
import { tempDir, tempRundir } from './helpers/rundir.js';
import { startFrameService } from './helpers/services.js';
import { metricValue } from './helpers/admin.js';

interface Rig {
  gateway: Gateway;
  port: number;
  log: LogSink;
  rundir: string;
  session: (service?: string) => Promise<RawClient>;
}

async function nativeGateway(t: ExecutionContext, options: Partial<GatewayInput> = {}, rundir?: string): Promise<Rig> {
  const dir = rundir ?? (await tempRundir(t));
  const { logger, sink } = captureLogger();
  const gateway = createTcpGateway({ listen: [{ host: '127.0.0.1', port: 0 }], allow: '*', rundir: dir, logger, dataPlane: 'native', ...options });
  await gateway.listen();
  t.teardown(() => gateway.destroy());
  t.not(gateway.core.dataPlane, null, 'the native data plane is in use');
  const port = gateway.addresses[0]!.port;
  return { gateway, port, log: sink, rundir: dir, session: (service = 'pong') => tcpSession(t, port, service) };
}

function closedLine(log: LogSink, client: RawClient): Promise<LogLine> {
  return log.waitFor(byMsg('connection closed', client.peer), WAIT, `teardown of ${client.peer}`);
}

/** A Unix service `name` whose connections are handed to `onConnection` (no framing). */
async function rawService(t: ExecutionContext, rundir: string, name: string, onConnection: (s: net.Socket) => void): Promise<net.Server> {
  mkdirSync(rundir, { recursive: true, mode: 0o770 });
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    onConnection(s);
  });
  await new Promise<void>((resolve) => server.listen(path.join(rundir, name), resolve));
  t.teardown(() => server.close());
  return server;
}

function frameHeader(length: number): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(length);
  return header;
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

test('a pipelined burst (name, ok, 200 frames in one write) is echoed in order, counted live and at teardown', async (t) => {
  const rundir = await tempRundir(t);
  await startFrameService(t, rundir, 'pong');
  const rig = await nativeGateway(t, {}, rundir);
  const client = await RawClient.tcp(t, rig.port);
  const frames = Array.from({ length: 200 }, (_, i) => frame(`m${i}`));
  const burst = Buffer.concat(frames);
  await client.write(Buffer.concat([Buffer.from('pong'), burst]));
  await client.expect('6f6b');
  await client.expect(burst);
  // Still open: the metrics read the thread's counters.
  const text = await rig.gateway.core.metrics.registry.metrics();
  const labels = { transport: 'tcp', listener: `127.0.0.1:${rig.port}`, service: 'pong' };
  t.is(metricValue(text, 'libipc_messages_total', { ...labels, direction: 'in' }), 200);
  t.is(metricValue(text, 'libipc_messages_total', { ...labels, direction: 'out' }), 200);
  t.is(metricValue(text, 'libipc_bytes_total', { ...labels, direction: 'in' }), burst.length);
  t.is(metricValue(text, 'libipc_bytes_total', { ...labels, direction: 'out' }), burst.length, 'the ok is not counted');
  client.endWrite();
  t.is(await client.expectEof(), 'eof');
  const line = await closedLine(rig.log, client);
  t.is(line['reason'], 'client closed');
  t.is(line['endedBy'], 'client');
  t.is(line['messagesIn'], 200);
  t.is(line['messagesOut'], 200);
  t.is(line['bytesIn'], burst.length);
  t.is(line['bytesOut'], burst.length);
});

test('a header over the limit inside a burst: the frames before it reach the service, then both sides close with IPC_ERR_PAYLOAD_TOO_LARGE', async (t) => {
  const rundir = await tempRundir(t);
  const pong = await startFrameService(t, rundir, 'pong');
  const rig = await nativeGateway(t, { maxPayload: 100 }, rundir);
  const client = await rig.session();
  const good = Buffer.concat([frame('a'), frame(''), frame('b'.repeat(100))]);
  // Unsigned: 0x80000000 must not pass as negative.
  await client.write(Buffer.concat([good, Buffer.from('80000000ffff', 'hex')])).catch(() => undefined);
  // As the JS switch: the client is cut at once (its echoes are not waited for).
  await client.expectEof();
  await pong.until(() => pong.frames.length === 3, WAIT, 'the three frames');
  const line = await closedLine(rig.log, client);
  t.is(codeOf(line), 'IPC_ERR_PAYLOAD_TOO_LARGE');
  t.regex(String(line['reason']), /2147483648/);
  t.is(line['endedBy'], 'client');
  t.is(line['messagesIn'], 3);
  t.deepEqual(pong.frames.map((p) => p.length), [1, 0, 100]);
  await probeEcho(await rig.session());
});

for (const direction of ['service to client', 'client to service'] as const) {
  test(`a reader that stops pauses its writer (${direction}), then every byte arrives intact`, async (t) => {
    const rundir = await tempRundir(t);
    const total = 16 * 1024 * 1024;
    const data = pattern(total, 7, 3, 251);
    let serviceSocket: net.Socket | null = null;
    const received: Buffer[] = [];
    await rawService(t, rundir, 'bulk', (s) => {
      serviceSocket = s;
      if (direction === 'client to service') {
        s.pause();
        s.on('data', (d: Buffer) => received.push(d));
      }
    });
    const rig = await nativeGateway(t, { maxPayload: 0xffffffff }, rundir);
    const client = await rig.session('bulk');
    const message = Buffer.concat([frameHeader(total), data]);
    let paused: Buffer;
    if (direction === 'service to client') {
      client.socket.pause();
      serviceSocket!.write(message);
      await new Promise((r) => setTimeout(r, 300));
      // The writer is held back (the gateway keeps only a partial write aside): much of
      // the stream still waits in the writer's own socket, beyond every kernel buffer.
      t.true(serviceSocket!.writableLength > total / 4, `service still holds ${serviceSocket!.writableLength} bytes`);
      client.socket.resume();
      paused = await client.read(message.length, 20_000);
    } else {
      client.socket.write(message);
      await new Promise((r) => setTimeout(r, 300));
      t.true(client.socket.writableLength > total / 4, `client still holds ${client.socket.writableLength} bytes`);
      serviceSocket!.resume();
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('service did not get everything')), 20_000);
        const check = () => {
          if (received.reduce((n, b) => n + b.length, 0) >= message.length) {
            clearTimeout(timer);
            resolve();
          } else setTimeout(check, 20);
        };
        check();
      });
      paused = Buffer.concat(received);
    }
    t.true(paused.equals(message), 'every byte, in order');
  });
}

test('half-close: the client FIN reaches the service, its late reply reaches the client, and the other direction is cut at halfCloseTimeout', async (t) => {
  const rundir = await tempRundir(t);
  await rawService(t, rundir, 'late', (s) => {
    s.on('data', () => undefined);
    // Replies after the client's FIN, then never closes.
    s.on('end', () => s.write(frame('late reply')));
  });
  const rig = await nativeGateway(t, { halfCloseTimeout: 300 }, rundir);
  const client = await rig.session('late');
  client.endWrite();
  await client.expect(frame('late reply'));
  await client.expectEof();
  const line = await closedLine(rig.log, client);
  t.is(line['reason'], 'client closed');
  t.is(line['endedBy'], 'client');
  t.is(line['messagesOut'], 1);
  t.is(codeOf(line), undefined);
});

test('a frame cut by the client FIN is IPC_ERR_TRUNCATED_FRAME (header bytes and payload bytes)', async (t) => {
  const rundir = await tempRundir(t);
  await startFrameService(t, rundir, 'pong');
  const rig = await nativeGateway(t, {}, rundir);
  for (const [bytes, what] of [['0000', /2 of 4 header bytes/], ['0000000561', /4 payload bytes missing/]] as const) {
    const client = await rig.session();
    await client.write(bytes);
    client.endWrite();
    await client.expectEof();
    const line = await closedLine(rig.log, client);
    t.is(codeOf(line), 'IPC_ERR_TRUNCATED_FRAME');
    t.regex(String(line['reason']), what);
  }
});

test('closes from JS while the thread streams (idle sweep spares busy ones; destroy cuts all): no crash, each logged once, every descriptor released', async (t) => {
  const rundir = await tempRundir(t);
  const streams = new Set<net.Socket>();
  await rawService(t, rundir, 'flood', (s) => {
    streams.add(s);
    s.on('close', () => streams.delete(s));
    const chunk = frame(Buffer.alloc(60_000, 1));
    const pump = () => {
      while (!s.destroyed && s.write(chunk));
    };
    s.on('drain', pump);
    pump();
  });
  const baseline = openFds();
  const rig = await nativeGateway(t, { idleTimeout: 200, maxPayload: 60_000 }, rundir);
  const clients = await Promise.all(Array.from({ length: 20 }, () => rig.session('flood')));
  // Half read slowly (writes stay partial), half not at all.
  clients.forEach((c, i) => (i % 2 === 0 ? c.socket.pause() : undefined));
  await new Promise((r) => setTimeout(r, 400));
  // Busy connections are not idle: the sweep left the readers alone.
  const early = rig.log.lines.filter((l) => l.msg === 'connection closed');
  t.true(early.every((l) => codeOf(l) === 'IPC_ERR_IDLE_TIMEOUT'), JSON.stringify(early.map((l) => l['reason'])));
  rig.gateway.destroy();
  await rig.log.waitForCount((l) => l.msg === 'connection closed', clients.length, WAIT, 'every teardown');
  for (const c of clients) c.destroy();
  const lines = rig.log.lines.filter((l) => l.msg === 'connection closed');
  t.is(lines.length, clients.length, 'one line per connection');
  t.is(new Set(lines.map((l) => l['conn'])).size, clients.length);
  // The thread closes what it held within the finish grace; the services saw their end.
  const deadline = Date.now() + 8000;
  while ((openFds() > baseline + 2 || streams.size > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.is(streams.size, 0, 'every service connection ended');
  t.true(openFds() <= baseline + 2, `descriptors back near ${baseline}: ${openFds()}`);
});

test('a close from JS while a write to the service is partial: the client closes now, the service gets the rest then a FIN', async (t) => {
  const rundir = await tempRundir(t);
  let service: net.Socket | null = null;
  let received = 0;
  let ended = false;
  await rawService(t, rundir, 'slow', (s) => {
    service = s;
    s.pause();
    s.on('data', (d: Buffer) => (received += d.length));
    s.on('end', () => (ended = true));
  });
  const rig = await nativeGateway(t, { maxPayload: 1 << 20 }, rundir);
  const client = await rig.session('slow');
  const chunk = frame(Buffer.alloc(1 << 20, 2));
  for (let i = 0; i < 8; i++) client.socket.write(chunk);
  const until = Date.now() + WAIT;
  while (client.socket.writableLength === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  t.true(client.socket.writableLength > 0, 'the client is held back');
  rig.gateway.destroy();
  const line = await closedLine(rig.log, client);
  t.is(codeOf(line), 'IPC_ERR_SHUTDOWN');
  await client.expectEof();
  const forwarded = line['bytesIn'] as number;
  service!.resume();
  const deadline = Date.now() + WAIT;
  while (!ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.true(ended, 'the service got a FIN after what the gateway had accepted');
  // Everything read from the client reached it, the rest of the partial write included
  // (the thread may have read one more buffer after the counts were taken).
  t.true(received >= forwarded && received <= forwarded + 64 * 1024, `received ${received}, read from the client ${forwarded}`);
});

test('the service connected by the addon: a fixed target that is a symbolic link or absent is refused with the reason, a live one serves', async (t) => {
  const rundir = await tempRundir(t);
  const elsewhere = await tempRundir(t);
  await startFrameService(t, elsewhere, 'real');
  mkdirSync(rundir, { recursive: true, mode: 0o700 });
  symlinkSync(path.join(elsewhere, 'real'), path.join(rundir, 'linked'));
  await startFrameService(t, rundir, 'pong');
  for (const [service, reason] of [
    ['linked', /symbolic link, which is not followed/],
    ['absent', /not available at .*absent \(ENOENT\)$/],
  ] as const) {
    const rig = await nativeGateway(t, { allow: undefined, service }, rundir);
    const client = await RawClient.tcp(t, rig.port);
    await client.expectEof();
    const line = await rig.log.waitFor(byMsg('connection refused', client.peer), WAIT, `refusal of ${client.peer}`);
    t.is(codeOf(line), 'IPC_ERR_SERVICE_UNAVAILABLE');
    t.regex(String(line['reason']), reason);
  }
  const rig = await nativeGateway(t, { allow: undefined, service: 'pong' }, rundir);
  const client = await RawClient.tcp(t, rig.port);
  await probeEcho(client);
  client.destroy();
  t.is(codeOf(await closedLine(rig.log, client)), undefined);
});

test('an idle connection is closed by the idle sweep with IPC_ERR_IDLE_TIMEOUT; one that keeps talking stays', async (t) => {
  const rundir = await tempRundir(t);
  await startFrameService(t, rundir, 'pong');
  const rig = await nativeGateway(t, { idleTimeout: 400 }, rundir);
  const idle = await rig.session();
  const busy = await rig.session();
  const until = Date.now() + 1200;
  while (Date.now() < until) await probeEcho(busy);
  await idle.expectEof();
  t.is(codeOf(await closedLine(rig.log, idle)), 'IPC_ERR_IDLE_TIMEOUT');
  await probeEcho(busy);
});

test('--data-plane native without the addon: a warning, and the JS switch carries the connection', async (t) => {
  const dir = await tempDir(t, 'dpn-');
  const rundir = path.join(dir, 'run');
  await startPongd(t, rundir);
  const daemon = spawnCli(t, 'tcpd', ['--listen', '127.0.0.1:0', '--allow', 'pong', '--data-plane', 'native'], {
    env: { RUNDIR: rundir, LIBIPC_NO_ADDON: '1' },
  });
  const port = (await daemon.listening((l) => l['transport'] === 'tcp'))['port'] as number;
  const warning = await daemon.log.waitFor((l) => l.msg === 'native data plane unavailable: the JS switch carries every connection', WAIT, 'the warning');
  t.regex(String(warning['reason']), /addon is not built/);
  await probeEcho(await tcpSession(t, port));
});

test('a bad --data-plane value is refused with the option named', async (t) => {
  const daemon = spawnCli(t, 'tcpd', ['--listen', '127.0.0.1:0', '--allow', 'pong', '--data-plane', 'fast']);
  const exit = await daemon.waitExit(WAIT);
  t.not(exit.code, 0);
  t.regex(daemon.stderr, /data-plane/);
});

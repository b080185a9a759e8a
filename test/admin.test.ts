/**
 * The admin listener (--admin): /metrics checked by the real `promtool` and against the
 * traffic the test made (live connections included, at scrape time), /healthz, /readyz
 * following the services in $RUNDIR and the drain, refusal codes, label cardinality
 * under client-chosen names, the admin port's own bad input, and scrapes 100 times a
 * second while clients echo.
 */
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { connectIpc } from '../src/client.js';
import { spawnCli, startPongd, type Daemon } from './helpers/daemon.js';
import { tempDir } from './helpers/rundir.js';
import { frame, probeEcho, RawClient, tcpSession } from './helpers/raw-client.js';
import { adminPort, metricValue, scrape, seriesOf } from './helpers/admin.js';
import { makeMaterial } from './helpers/tls-certs.js';
import { openWs } from './helpers/ws-client.js';

const WAIT = 15_000;

async function tcpdWithAdmin(t: ExecutionContext, args: readonly string[] = ['--allow', 'pong,nosuch']) {
  const dir = await tempDir(t, 'adm-');
  const rundir = path.join(dir, 'run');
  const pongd = await startPongd(t, rundir);
  const daemon = spawnCli(t, 'tcpd', ['--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', ...args], { env: { RUNDIR: rundir } });
  const port = (await daemon.listening((l) => l['transport'] === 'tcp'))['port'] as number;
  const admin = await adminPort(daemon);
  return { rundir, pongd, daemon, port, admin, listener: `127.0.0.1:${port}` };
}

test('after N verified echoes libipc_messages_total{direction="in"} grew by N, counted while the connection is still open, and promtool accepts the output', async (t) => {
  const gw = await tcpdWithAdmin(t);
  const labels = { transport: 'tcp', listener: gw.listener, service: 'pong' };
  const before = metricValue(await scrape(gw.admin), 'libipc_messages_total', { ...labels, direction: 'in' }) ?? 0;
  const client = await tcpSession(t, gw.port);
  const N = 25;
  for (let i = 0; i < N; i++) await probeEcho(client);
  // Still open: the counts come from the live switch at scrape time.
  const live = await scrape(gw.admin);
  t.is(metricValue(live, 'libipc_messages_total', { ...labels, direction: 'in' }), before + N);
  t.is(metricValue(live, 'libipc_messages_total', { ...labels, direction: 'out' }), before + N);
  t.is(metricValue(live, 'libipc_bytes_total', { ...labels, direction: 'in' }), N * 8);
  t.is(metricValue(live, 'libipc_connections_open', { transport: 'tcp', listener: gw.listener }), 1);
  t.is(metricValue(live, 'libipc_service_connections_open', labels), 1);
  t.is(metricValue(live, 'libipc_handshake_duration_seconds_count', { transport: 'tcp', listener: gw.listener }), 1);

  const check = spawnSync('promtool', ['check', 'metrics'], { input: live, encoding: 'utf8' });
  t.is(check.status, 0, `promtool: ${check.stdout}${check.stderr}`);
  t.truthy(metricValue(live, 'process_resident_memory_bytes', {}), 'the default process metrics are there');

  // Closed: the totals stay (counters never go down), the gauges drop.
  client.socket.end();
  await client.expectEof();
  await gw.daemon.log.waitFor((l) => l.msg === 'connection closed', WAIT, 'teardown');
  const after = await scrape(gw.admin);
  t.is(metricValue(after, 'libipc_messages_total', { ...labels, direction: 'in' }), before + N);
  t.is(metricValue(after, 'libipc_connections_open', { transport: 'tcp', listener: gw.listener }), 0);
});

test('refusals are counted by code, and client-chosen service names never become label values', async (t) => {
  const gw = await tcpdWithAdmin(t, ['--allow', '*']);
  await probeEcho(await tcpSession(t, gw.port));
  const libipcSeries = (text: string) => seriesOf(text).filter((s) => s.name.startsWith('libipc_')).length;
  const seriesBefore = libipcSeries(await scrape(gw.admin));
  const names = Array.from({ length: 30 }, (_, i) => `nosuch-${i}-${Math.random().toString(36).slice(2)}`);
  for (const name of names) {
    const client = await RawClient.tcp(t, gw.port);
    await client.write(Buffer.from(name));
    await client.expectEof();
  }
  const text = await scrape(gw.admin);
  t.is(metricValue(text, 'libipc_refusals_total', { transport: 'tcp', listener: gw.listener, code: 'IPC_ERR_SERVICE_UNAVAILABLE' }), names.length);
  for (const name of names) t.false(text.includes(name), `${name} is not a label value`);
  // One new series: the refusal code (the connection counters existed already).
  t.is(libipcSeries(text), seriesBefore + 1, 'no series per name asked for');
});

test('/readyz is 200 while every configured service answers, 503 naming the one that stopped, and 503 while draining; /healthz stays 200', async (t) => {
  const gw = await tcpdWithAdmin(t, ['--allow', 'pong', '--drain-timeout', '20000']);
  const ready = await fetch(`http://127.0.0.1:${gw.admin}/readyz`);
  t.is(ready.status, 200);
  t.is(((await ready.json()) as { status: string }).status, 'ready');

  gw.pongd.daemon.kill('SIGTERM');
  await gw.pongd.daemon.waitExit(WAIT);
  // Probes are cached for a second: the verdict changes within the next one.
  let body: { status: string; failing: { what: string; service?: string; reason: string }[] } | undefined;
  for (let i = 0; i < 40; i++) {
    const res = await fetch(`http://127.0.0.1:${gw.admin}/readyz`);
    body = (await res.json()) as typeof body;
    if (res.status === 503) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  t.is(body?.status, 'not ready');
  t.deepEqual(body?.failing.map((f) => [f.what, f.service]), [['service', 'pong']]);
  t.regex(body!.failing[0]!.reason, /no socket|nobody listening/);
  t.is((await fetch(`http://127.0.0.1:${gw.admin}/healthz`)).status, 200);

  // Restarted: ready again; then SIGTERM with a connection open: draining.
  await startPongd(t, gw.rundir);
  const open = await waitReady(gw.admin).then(() => tcpSession(t, gw.port));
  gw.daemon.kill('SIGTERM');
  await gw.daemon.log.waitFor((l) => l.msg === 'stopping', WAIT, 'stopping');
  const draining = await fetch(`http://127.0.0.1:${gw.admin}/readyz`);
  t.is(draining.status, 503);
  t.deepEqual(((await draining.json()) as { failing: unknown[] }).failing[0], { what: 'process', reason: 'draining (stopping)' });
  t.is((await fetch(`http://127.0.0.1:${gw.admin}/healthz`)).status, 200, 'alive while draining');
  await probeEcho(open);
  open.socket.end();
  t.is((await gw.daemon.waitExit(WAIT)).code, 0);
});

async function waitReady(port: number): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if ((await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('never ready');
}

test('the admin port answers an unknown path with 404, another method with 405 (Allow: GET, HEAD), HEAD without a body, and bad requests without harm', async (t) => {
  const gw = await tcpdWithAdmin(t);
  const base = `http://127.0.0.1:${gw.admin}`;
  const missing = await fetch(`${base}/nope`);
  t.is(missing.status, 404);
  t.regex(await missing.text(), /no such path: \/nope/);
  const post = await fetch(`${base}/metrics`, { method: 'POST', body: 'x' });
  t.is(post.status, 405);
  t.is(post.headers.get('allow'), 'GET, HEAD');
  const head = await fetch(`${base}/metrics`, { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(await head.text(), '');
  // Garbage instead of HTTP, and a request that never ends its headers: closed, nothing else.
  const garbage = await RawClient.tcp(t, gw.admin);
  await garbage.write(Buffer.from('\x00\x01\x02 not http\r\n\r\n'));
  await garbage.expectEof();
  t.is((await fetch(`${base}/healthz`)).status, 200);
  // The data path did not notice.
  await probeEcho(await tcpSession(t, gw.port));
});

test('/metrics scraped 100 times a second while clients echo: every scrape answers, every echo arrives', async (t) => {
  const gw = await tcpdWithAdmin(t);
  const clients = await Promise.all(Array.from({ length: 8 }, () => tcpSession(t, gw.port)));
  let stop = false;
  const echoes = clients.map(async (client) => {
    let n = 0;
    for (let i = 0; i < 2000 && !stop; i++) {
      await client.write(frame(`m${i}`));
      await client.expect(frame(`m${i}`));
      n++;
    }
    return n;
  });
  const statuses: number[] = [];
  const started = performance.now();
  for (let i = 0; i < 200; i++) {
    const due = started + i * 10;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - performance.now())));
    statuses.push((await fetch(`http://127.0.0.1:${gw.admin}/metrics`)).status);
  }
  stop = true;
  const counts = await Promise.all(echoes);
  t.deepEqual([...new Set(statuses)], [200]);
  const total = counts.reduce((a, b) => a + b, 0);
  t.true(total > 0);
  // The counters add up to what the clients did (each probe is one message each way).
  const text = await scrape(gw.admin);
  t.is(metricValue(text, 'libipc_messages_total', { transport: 'tcp', listener: gw.listener, service: 'pong', direction: 'in' }), total);
});

test('an --admin address that does not parse stops the daemon at start with the reason', async (t) => {
  const dir = await tempDir(t, 'adm-');
  const daemon: Daemon = spawnCli(t, 'tcpd', ['--listen', '127.0.0.1:0', '--allow', 'pong', '--admin', 'nowhere'], { env: { RUNDIR: path.join(dir, 'run') } });
  const exit = await daemon.waitExit(WAIT);
  t.is(exit.code, 1);
  t.regex(daemon.stderr, /--admin: invalid listen address 'nowhere'/);
});

test('gatewayd with admin: TLS handshakes by result, WebSocket messages, ipcd lookups and reloads by result, all in one registry', async (t) => {
  const dir = await tempDir(t, 'adm-');
  const rundir = path.join(dir, 'run');
  await startPongd(t, rundir);
  const material = makeMaterial(dir);
  const config = (allow: string) =>
    [
      'admin: 127.0.0.1:0',
      'ipcd: true',
      'gateways:',
      '  - type: tls',
      '    listen: 127.0.0.1:0',
      `    cert: ${material.files.cert}`,
      `    key: ${material.files.key}`,
      `    allow: [${allow}]`,
      '  - type: ws',
      '    listen: 127.0.0.1:0',
      `    allow: [${allow}]`,
      '',
    ].join('\n');
  const file = path.join(dir, 'gatewayd.yaml');
  writeFileSync(file, config('pong'));
  const daemon = spawnCli(t, 'gatewayd', ['--config', file], { env: { RUNDIR: rundir } });
  await daemon.log.waitFor((l) => l.msg === 'gatewayd started', WAIT, 'gatewayd started');
  const admin = await adminPort(daemon);
  const portOf = (transport: string) => daemon.log.lines.find((l) => l.msg === 'listening' && l['transport'] === transport)!['port'] as number;
  const tlsPort = portOf('tls');
  const wsPort = portOf('ws');

  // TLS: one good client (an echo), one that fails its handshake (plain bytes).
  const secure = tls.connect({ host: '127.0.0.1', port: tlsPort, ca: readFileSync(material.files.ca), servername: 'localhost' });
  secure.on('error', () => undefined);
  await once(secure, 'secureConnect');
  secure.write('pong');
  await once(secure, 'data');
  secure.end();
  const plain = await RawClient.tcp(t, tlsPort);
  await plain.write(Buffer.from('GET / HTTP/1.0\r\n\r\n'));
  await plain.expectEof();

  // WebSocket: three messages.
  const ws = await openWs(t, `ws://127.0.0.1:${wsPort}/pong`);
  for (let i = 0; i < 3; i++) {
    ws.ws.send(Buffer.from(`m${i}`));
    await ws.next();
  }

  // ipcd: one lookup answered, one refused (no route).
  const found = await connectIpc('pong', { rundir, network: 'pong unix://pong' });
  found.destroy();
  await t.throwsAsync(connectIpc('nosuch', { rundir, network: 'pong unix://pong' }));

  // Reloads: a good file, then a broken one.
  writeFileSync(file, config('pong, other'));
  daemon.kill('SIGHUP');
  await daemon.log.waitFor((l) => l.msg === 'reloaded', WAIT, 'reloaded');
  writeFileSync(file, 'gateways: [');
  daemon.kill('SIGHUP');
  await daemon.log.waitFor((l) => String(l.msg).startsWith('reload refused'), WAIT, 'reload refused');

  const text = await scrape(admin);
  const tlsListener = `127.0.0.1:${tlsPort}`;
  t.is(metricValue(text, 'libipc_tls_handshakes_total', { listener: tlsListener, result: 'ok' }), 1);
  t.is(metricValue(text, 'libipc_tls_handshakes_total', { listener: tlsListener, result: 'failed' }), 1);
  t.is(metricValue(text, 'libipc_refusals_total', { transport: 'tls', listener: tlsListener, code: 'IPC_ERR_HANDSHAKE_REFUSED' }), 1);
  t.is(metricValue(text, 'libipc_messages_total', { transport: 'ws', listener: `127.0.0.1:${wsPort}`, service: 'pong', direction: 'in' }), 3);
  t.is(metricValue(text, 'libipc_lookups_total', { result: 'ok' }), 1);
  t.is(metricValue(text, 'libipc_lookups_total', { result: 'IPC_ERR_NO_ROUTE' }), 1);
  t.is(metricValue(text, 'libipc_reloads_total', { result: 'ok' }), 1);
  t.is(metricValue(text, 'libipc_reloads_total', { result: 'refused' }), 1);
  const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  t.is(check.status, 0, `promtool: ${check.stdout}${check.stderr}`);
  ws.ws.terminate();
  daemon.kill('SIGTERM');
  t.is((await daemon.waitExit(WAIT)).code, 0);
});

test('per-IP refusals are counted in libipc_refusals_total under their own code', async (t) => {
  const gw = await tcpdWithAdmin(t, ['--allow', 'pong', '--max-connections-per-ip', '1']);
  const first = await tcpSession(t, gw.port);
  const second = await RawClient.tcp(t, gw.port);
  await second.expectEof();
  await probeEcho(first);
  const text = await scrape(gw.admin);
  t.is(metricValue(text, 'libipc_refusals_total', { transport: 'tcp', listener: gw.listener, code: 'IPC_ERR_TOO_MANY_CONNECTIONS_PER_IP' }), 1);
  t.is(metricValue(text, 'libipc_connections_total', { transport: 'tcp', listener: gw.listener }), 2);
});

test('one address cannot take the admin listener\'s slots: its ninth idle connection is closed at once, and others are still answered', async (t) => {
  const gw = await tcpdWithAdmin(t);
  const hog = (): Promise<net.Socket> =>
    new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port: gw.admin, localAddress: '127.0.0.2' });
      t.teardown(() => socket.destroy());
      socket.once('connect', () => resolve(socket));
      socket.once('error', reject);
    });
  const held = [];
  for (let i = 0; i < 8; i++) held.push(await hog());
  const ninth = await hog();
  await once(ninth, 'close');
  t.true(held.every((s) => !s.destroyed), 'the first eight are kept (until idle for 5 s)');
  t.is((await fetch(`http://127.0.0.1:${gw.admin}/healthz`)).status, 200);
});

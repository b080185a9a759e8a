/**
 * wsd, spawned from dist/ with pongd (or a test service) in a private run directory:
 * echo over ws and wss, the page, refusals (HTTP status + log line), close codes for
 * bad frames, ping keepalive, a failing service, limits, backpressure, and a second
 * WebSocket implementation (Debian's python3-websockets) as client.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import type { ClientOptions } from 'ws';
import { ErrorCode } from '../src/errors.js';
import { FrameDecoder, encodeFrame } from '../src/frame.js';
import {
  START_TIMEOUT,
  WAIT,
  rssBytes,
  sleep,
  slot,
  spawnCli,
  startPongd,
  startWsd,
  tempDir,
  type Line,
  type Proc,
} from './helpers/ws-procs.js';
import { Opcode, RawClient, closeCodeOf, encodeWsFrame, upgradeRequest } from './helpers/ws-raw.js';
import { openWs, refusedStatus } from './helpers/ws-client.js';
import { devCertificates, httpGet, numbered, peakRss, pythonClient, rawGet, rawService } from './helpers/ws-fixtures.js';

const MiB = 1024 * 1024;

/** Waits for a slot, then makes a temp dir holding an empty run directory `run` (0700). */
async function slotRundir(t: ExecutionContext): Promise<{ dir: string; rundir: string }> {
  await slot(t);
  const dir = await tempDir(t);
  const rundir = path.join(dir, 'run');
  mkdirSync(rundir, { mode: 0o700 });
  return { dir, rundir };
}

/** A run directory (created by the first daemon), pongd `pong` in it unless `pong` is false, and wsd with `args`. */
async function setup(t: ExecutionContext, args: readonly string[] = ['--allow', 'pong'], pong = true) {
  const { dir, rundir } = await slotRundir(t);
  const [pongd, wsd] = await Promise.all([pong ? startPongd(t, rundir) : Promise.resolve(null), startWsd(t, rundir, args)]);
  return { dir, rundir, pongd, wsd, url: (p: string) => `ws://127.0.0.1:${wsd.port}${p}` };
}

const refusedBy = (peer: string) => (l: Line) => l.msg === 'connection refused' && l['peer'] === peer;
const closedBy = (peer: string) => (l: Line) => l.msg === 'connection closed' && l['peer'] === peer;
const serviceConnections = (pongd: Proc) => pongd.filter((l) => l.msg === 'connection').length;

/** wsd still serves: a new client to /pong gets its echo. */
async function stillServes(t: ExecutionContext, port: number): Promise<void> {
  const client = await openWs(t, `ws://127.0.0.1:${port}/pong`);
  t.is((await client.echo('still serving')).data.toString(), 'still serving');
  client.ws.close();
}

// Echo

test('echoes a binary message with the same bytes, as a binary message', async (t) => {
  const { url } = await setup(t);
  const client = await openWs(t, url('/pong'));
  const bytes = Buffer.from([...Array(256).keys()]); // every byte value, not valid UTF-8
  const reply = await client.echo(bytes);
  t.true(reply.binary);
  t.deepEqual(reply.data, bytes);
});

test("echoes a text message's UTF-8 bytes, as a binary message by default", async (t) => {
  const { url } = await setup(t);
  const client = await openWs(t, url('/pong'));
  const reply = await client.echo('héllo ✓ wörld');
  t.true(reply.binary);
  t.deepEqual(reply.data, Buffer.from('héllo ✓ wörld', 'utf8'));
});

test('with --text, replies that are valid UTF-8 come back as text messages', async (t) => {
  const { url } = await setup(t, ['--allow', 'pong', '--text']);
  const client = await openWs(t, url('/pong'));
  const fromText = await client.echo('héllo ✓');
  t.false(fromText.binary);
  t.is(fromText.data.toString('utf8'), 'héllo ✓');
  const fromBinary = await client.echo(Buffer.from('plain bytes'));
  t.false(fromBinary.binary);
  t.is(fromBinary.data.toString('utf8'), 'plain bytes');
});

test('with --text, a reply that is not valid UTF-8 still comes back as a binary message', async (t) => {
  const { url } = await setup(t, ['--allow', 'pong', '--text']);
  const client = await openWs(t, url('/pong'));
  const bytes = Buffer.from([0x61, 0xff, 0xfe, 0xc3, 0x28]);
  const reply = await client.echo(bytes);
  t.true(reply.binary);
  t.deepEqual(reply.data, bytes);
});

test('echoes many messages in order, an empty one and one of exactly --max-payload bytes included', async (t) => {
  const { url } = await setup(t, ['--allow', 'pong', '--max-payload', '5000']);
  const client = await openWs(t, url('/pong'));
  const messages = [
    ...Array.from({ length: 100 }, (_, i) => Buffer.from(`message ${i}`)),
    Buffer.alloc(0),
    Buffer.alloc(5000, 0x5a),
    Buffer.from('last'),
  ];
  for (const message of messages) client.ws.send(message);
  for (const [i, message] of messages.entries()) {
    const reply = await client.next();
    t.deepEqual(reply.data, message, `message ${i}`);
  }
});

test('a message in several fragments under --max-payload is echoed as one message', async (t) => {
  const { wsd } = await setup(t, ['--allow', 'pong', '--max-payload', '1000']);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  const head = await raw.upgrade('/pong');
  t.is(head.status, 101);
  // RFC 6455 §1.3's worked example: this key's accept value.
  t.is(head.headers['sec-websocket-accept'], 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  raw.write(encodeWsFrame(Opcode.BINARY, Buffer.alloc(400, 0x61), { fin: false }));
  raw.write(encodeWsFrame(Opcode.CONTINUATION, Buffer.alloc(300, 0x62), { fin: false }));
  raw.write(encodeWsFrame(Opcode.CONTINUATION, Buffer.alloc(300, 0x63)));
  const reply = await raw.readFrame();
  t.true(reply.fin);
  t.false(reply.masked, 'server frames are not masked');
  t.is(reply.opcode, Opcode.BINARY);
  t.deepEqual(reply.payload, Buffer.concat([Buffer.alloc(400, 0x61), Buffer.alloc(300, 0x62), Buffer.alloc(300, 0x63)]));
});

test('the default --max-payload is 99,992 bytes: that size is echoed, one byte more closes with 1009', async (t) => {
  const { url } = await setup(t);
  const client = await openWs(t, url('/pong'));
  const largest = Buffer.alloc(99_992, 0x41);
  largest.write('first', 0);
  t.deepEqual((await client.echo(largest)).data, largest);
  client.ws.send(Buffer.alloc(99_993));
  t.is((await client.waitClosed()).code, 1009);
});

test('a frame sent in the same packet as the upgrade request is echoed', async (t) => {
  const { wsd } = await setup(t);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  raw.write(Buffer.concat([Buffer.from(upgradeRequest('/pong')), encodeWsFrame(Opcode.BINARY, Buffer.from('eager'))]));
  t.is((await raw.readHead()).status, 101);
  const reply = await raw.readFrame();
  t.is(reply.opcode, Opcode.BINARY);
  t.is(reply.payload.toString(), 'eager');
});

test('fifty clients at once each get their own replies', async (t) => {
  const { url, pongd } = await setup(t);
  const clients = await Promise.all(Array.from({ length: 50 }, () => openWs(t, url('/pong'))));
  for (const [i, client] of clients.entries()) for (let m = 0; m < 10; m++) client.ws.send(`client ${i} message ${m}`);
  await Promise.all(
    clients.map(async (client, i) => {
      for (let m = 0; m < 10; m++) t.is((await client.next()).data.toString(), `client ${i} message ${m}`);
    }),
  );
  t.is(serviceConnections(pongd!), 50);
});

test('a normal close by the client is logged once, with who ended it and the message counts', async (t) => {
  const { wsd, url } = await setup(t);
  const client = await openWs(t, url('/pong'));
  for (const m of ['a', 'bb', 'ccc']) await client.echo(m);
  client.ws.close(1000, 'bye');
  t.is((await client.waitClosed()).code, 1000);
  const line = await wsd.proc.waitFor(closedBy(client.peer), 'the teardown');
  t.is(line['service'], 'pong');
  t.is(line['endedBy'], 'client');
  t.is(line['messagesIn'], 3);
  t.is(line['messagesOut'], 3);
  t.is(line['bytesIn'], 6);
  t.is(line['bytesOut'], 6);
  t.is(wsd.proc.filter(closedBy(client.peer)).length, 1);
});

test('a query string does not change the service the path names', async (t) => {
  const { url } = await setup(t);
  const client = await openWs(t, url('/pong?token=abc&x=%2e%2e'));
  t.is((await client.echo('with a query')).data.toString(), 'with a query');
});

test('with --service, every path reaches the fixed service', async (t) => {
  const { url, pongd } = await setup(t, ['--service', 'pong']);
  for (const p of ['/', '/pong', '/anything/else', '/..']) {
    const client = await openWs(t, url(p));
    t.is((await client.echo(`to ${p}`)).data.toString(), `to ${p}`, p);
    client.ws.close();
    await client.waitClosed();
  }
  t.is(serviceConnections(pongd!), 4);
});

// wss

async function setupWss(t: ExecutionContext) {
  const { dir, rundir } = await slotRundir(t);
  const { ca, files } = devCertificates(dir);
  const [, wsd] = await Promise.all([
    startPongd(t, rundir),
    startWsd(t, rundir, ['--allow', 'pong', '--cert', files.cert, '--key', files.key]),
  ]);
  return { ca, files, wsd, url: (p: string) => `wss://127.0.0.1:${wsd.port}${p}` };
}

test('wss: echoes over TLS with a development certificate the client verifies', async (t) => {
  const { ca, wsd, url } = await setupWss(t);
  t.true(wsd.proc.lines.some((l) => l.msg === 'listening' && l['transport'] === 'wss'));
  const client = await openWs(t, url('/pong'), { ca: ca.cert });
  const reply = await client.echo(Buffer.from('over TLS'));
  t.deepEqual(reply.data, Buffer.from('over TLS'));
  // And by name: the certificate's SAN holds localhost too.
  const byName = await openWs(t, url('/pong'), { ca: ca.cert, servername: 'localhost' } as ClientOptions);
  t.is((await byName.echo('by name')).data.toString(), 'by name');
});

test('wss: a client that does not trust the development CA fails verification', async (t) => {
  const { url } = await setupWss(t);
  const err = await t.throwsAsync(openWs(t, url('/pong')));
  t.regex(String((err as NodeJS.ErrnoException).code), /SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/);
});

test('wss: a plain ws:// client on the wss port does not get through', async (t) => {
  const { wsd } = await setupWss(t);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  raw.write(upgradeRequest('/pong'));
  await raw.waitClosed();
  t.is(raw.pending.length, 0, 'closed without a byte');
  t.is((await wsd.proc.waitFor(refusedBy(raw.peer), 'the refusal'))['code'], ErrorCode.HANDSHAKE_REFUSED);
});

test('wss: a TCP client that never starts TLS is dropped after --handshake-timeout', async (t) => {
  await slot(t);
  const dir = await tempDir(t);
  const { files } = devCertificates(dir);
  const tls = ['--cert', files.cert, '--key', files.key];
  const wsd = await startWsd(t, path.join(dir, 'run'), ['--allow', 'pong', ...tls, '--handshake-timeout', '300']);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  await raw.waitClosed();
  t.is((await wsd.proc.waitFor(refusedBy(raw.peer), 'the refusal'))['code'], ErrorCode.HANDSHAKE_TIMEOUT);
});

// The page and plain HTTP

test('a plain HTTP GET gets the bundled page by default', async (t) => {
  const { wsd } = await setup(t, ['--allow', 'pong'], false);
  const page = await httpGet(wsd.port, '/');
  t.is(page.status, 200);
  t.regex(String(page.headers['content-type']), /^text\/html/);
  t.regex(page.body, /id="replies"/);
  t.regex(page.body, /app\.js/);
  const script = await httpGet(wsd.port, '/app.js');
  t.is(script.status, 200);
  t.regex(String(script.headers['content-type']), /^text\/javascript/);
});

test('--static DIR serves the files of DIR and nothing outside it', async (t) => {
  await slot(t);
  const dir = await tempDir(t);
  const site = path.join(dir, 'site');
  mkdirSync(site);
  writeFileSync(path.join(site, 'hello.txt'), 'hello from the static directory\n');
  writeFileSync(path.join(dir, 'secret.txt'), 'must not be served\n');
  const { port } = await startWsd(t, path.join(dir, 'run'), ['--allow', 'pong', '--static', site]);
  const hello = await httpGet(port, '/hello.txt');
  t.is(hello.status, 200);
  t.is(hello.body, 'hello from the static directory\n');
  for (const p of ['/../secret.txt', '/%2e%2e/secret.txt', '/..%2fsecret.txt', '/%2e%2e%2fsecret.txt', '/missing.txt']) {
    const res = await rawGet(port, p);
    t.is(res.status, 404, p);
    t.notRegex(res.body, /must not be served/, p);
  }
});

test('with --no-static, a plain HTTP request gets 426 Upgrade Required and is closed', async (t) => {
  const { wsd } = await setup(t, ['--allow', 'pong', '--no-static'], false);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  raw.write('GET /pong HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  const head = await raw.readHead();
  t.is(head.status, 426);
  t.is(head.headers['connection'], 'close');
  await raw.waitClosed();
});

// A browser fetches the page over keep-alive connections and leaves them idle: that is
// not a stalled upgrade, and must not be cut at the upgrade deadline and logged as a
// refused connection (warn, IPC_ERR_HANDSHAKE_TIMEOUT) on every page view.
test('a connection that fetched the page and stays idle is not logged as a refused connection', async (t) => {
  const { wsd } = await setup(t, ['--allow', 'pong', '--handshake-timeout', '300'], false);
  const agent = new http.Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  const { socket, peer } = await new Promise<{ socket: net.Socket; peer: string }>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: wsd.port, path: '/', agent }, (res) => {
        t.is(res.statusCode, 200);
        const socket = res.socket; // the agent takes it back at the end of the response
        res.resume();
        res.on('end', () => resolve({ socket, peer: `127.0.0.1:${socket.localPort}` }));
      })
      .on('error', reject);
  });
  // Wait until wsd is done with the idle connection (keep-alive's end, past the upgrade
  // deadline), or close it ourselves after a while...
  if (!socket.destroyed) await Promise.race([once(socket, 'close'), sleep(WAIT)]);
  socket.destroy();
  // ...then for a line logged after anything about it (log lines come in order).
  const marker = await RawClient.connect(wsd.port);
  t.teardown(() => marker.destroy());
  t.is((await marker.upgrade('/..')).status, 400);
  await wsd.proc.waitFor(refusedBy(marker.peer), 'the marker refusal');
  t.deepEqual(wsd.proc.filter(refusedBy(peer)), []);
});

// Refused upgrades

const badKeys: Array<[string, string | null]> = [
  ['a missing Sec-WebSocket-Key', null],
  ['a Sec-WebSocket-Key that is not base64 of 16 bytes', 'short'],
  ['a Sec-WebSocket-Key of 15 bytes', Buffer.alloc(15, 1).toString('base64')],
  ['a Sec-WebSocket-Key of 17 bytes', Buffer.alloc(17, 1).toString('base64')],
  ['a Sec-WebSocket-Key with characters outside base64', '!!!!!!!!!!!!!!!!!!!!!!=='],
];

for (const [what, key] of badKeys) {
  test(`refuses ${what} with 400, before connecting the service`, async (t) => {
    const { wsd, pongd } = await setup(t);
    const raw = await RawClient.connect(wsd.port);
    t.teardown(() => raw.destroy());
    const head = await raw.upgrade('/pong', { 'Sec-WebSocket-Key': key });
    t.is(head.status, 400);
    await raw.waitClosed();
    const line = await wsd.proc.waitFor(refusedBy(raw.peer), 'the refusal');
    t.is(line['status'], 400);
    t.is(line['code'], ErrorCode.HANDSHAKE_REFUSED);
    t.is(serviceConnections(pongd!), 0);
  });
}

test('refuses an upgrade request that is not GET with 400', async (t) => {
  const { wsd } = await setup(t);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  raw.write(
    'POST /pong HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n',
  );
  t.is((await raw.readHead()).status, 400);
  await raw.waitClosed();
  t.is((await wsd.proc.waitFor(refusedBy(raw.peer), 'the refusal'))['code'], ErrorCode.HANDSHAKE_REFUSED);
});

test('refuses an unsupported Sec-WebSocket-Version with 400', async (t) => {
  const { wsd } = await setup(t);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  const head = await raw.upgrade('/pong', { 'Sec-WebSocket-Version': '12' });
  t.is(head.status, 400);
  await raw.waitClosed();
  t.is((await wsd.proc.waitFor(refusedBy(raw.peer), 'the refusal'))['code'], ErrorCode.HANDSHAKE_REFUSED);
});

// RFC 6455 §4.2.2 (4): a server refusing the version MUST send a Sec-WebSocket-Version
// header naming the versions it understands, so a client can retry.
test('a refusal of an unsupported Sec-WebSocket-Version names the supported versions', async (t) => {
  const { wsd } = await setup(t);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  const head = await raw.upgrade('/pong', { 'Sec-WebSocket-Version': '12' });
  t.regex(head.headers['sec-websocket-version'] ?? '', /\b13\b/);
});

test('refuses a malformed HTTP request with 400 and logs it', async (t) => {
  const { wsd } = await setup(t, ['--allow', 'pong'], false);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  raw.write('THIS IS NOT HTTP\r\n\r\n');
  t.is((await raw.readHead()).status, 400);
  await raw.waitClosed();
  t.is((await wsd.proc.waitFor(refusedBy(raw.peer), 'the refusal'))['code'], ErrorCode.HANDSHAKE_REFUSED);
});

test('refuses a service not in --allow with 403 and a log line', async (t) => {
  const { rundir, wsd, url } = await setup(t);
  const other = await startPongd(t, rundir, 'other');
  const refused = await refusedStatus(t, url('/other'));
  t.is(refused.status, 403);
  const line = await wsd.proc.waitFor((l) => l.msg === 'connection refused' && l['path'] === '/other', 'the refusal');
  t.is(line['status'], 403);
  t.is(line['code'], ErrorCode.SERVICE_NOT_ALLOWED);
  t.is(serviceConnections(other), 0);
});

test('refuses a service that is not running with 404 and a log line', async (t) => {
  const { wsd, url } = await setup(t, ['--allow', 'pong,nosuch'], false);
  const refused = await refusedStatus(t, url('/nosuch'));
  t.is(refused.status, 404);
  const line = await wsd.proc.waitFor((l) => l.msg === 'connection refused' && l['service'] === 'nosuch', 'the refusal');
  t.is(line['status'], 404);
  t.is(line['code'], ErrorCode.SERVICE_UNAVAILABLE);
});

test('refuses an invalid service name with 400', async (t) => {
  const { url } = await setup(t, ['--allow', '*'], false);
  for (const p of ['/', '/.hidden', '/a%20b', '/%00', `/${'x'.repeat(65)}`]) {
    t.is((await refusedStatus(t, url(p))).status, 400, p);
  }
});

// Path traversal: sent raw over TCP so no client normalises the path. A live service `x`
// sits beside the run directory, where `../x` would lead.
const traversals = ['/../x', '/%2e%2e', '/%2e%2e%2fx', '/..%2fx', '/%2E%2E/x', '/.%2e/x', '/%2fx', '/..', '/run/../x'];

for (const p of traversals) {
  test(`refuses the path ${p} with 400 and a log line, reaching nothing`, async (t) => {
    const { dir, rundir } = await slotRundir(t);
    const [beside, wsd] = await Promise.all([startPongd(t, dir, 'x'), startWsd(t, rundir, ['--allow', '*'])]);
    const raw = await RawClient.connect(wsd.port);
    t.teardown(() => raw.destroy());
    const head = await raw.upgrade(p);
    t.is(head.status, 400);
    await raw.waitClosed();
    const line = await wsd.proc.waitFor(refusedBy(raw.peer), 'the refusal');
    t.is(line['status'], 400);
    t.is(line['code'], ErrorCode.INVALID_SERVICE_NAME);
    t.is(line['path'], p);
    t.is(serviceConnections(beside), 0);
  });
}

test('decodes the path once: a double-encoded traversal names a literal service and reaches nothing', async (t) => {
  const { dir, rundir } = await slotRundir(t);
  const [beside, wsd] = await Promise.all([startPongd(t, dir, 'x'), startWsd(t, rundir, ['--allow', '*'])]);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  t.is((await raw.upgrade('/%252e%252e%252fx')).status, 404);
  const line = await wsd.proc.waitFor(refusedBy(raw.peer), 'the refusal');
  t.is(line['service'], '%2e%2e%2fx');
  t.is(line['code'], ErrorCode.SERVICE_UNAVAILABLE);
  t.is(serviceConnections(beside), 0);
});

test('refuses an Origin not in --origin with 403, and without Origin too', async (t) => {
  const { wsd, pongd, url } = await setup(t, ['--allow', 'pong', '--origin', 'http://good.example,https://also.example']);
  t.is((await refusedStatus(t, url('/pong'), { origin: 'http://evil.example' })).status, 403);
  const line = await wsd.proc.waitFor(
    (l) => l.msg === 'connection refused' && /evil\.example/.test(String(l['reason'])),
    'the refusal',
  );
  t.is(line['status'], 403);
  t.is(line['code'], ErrorCode.HANDSHAKE_REFUSED);
  t.is((await refusedStatus(t, url('/pong'), { origin: 'http://good.example.evil' })).status, 403);
  t.is((await refusedStatus(t, url('/pong'))).status, 403);
  t.is(serviceConnections(pongd!), 0);
});

test('accepts an Origin listed in --origin', async (t) => {
  const { url } = await setup(t, ['--allow', 'pong', '--origin', 'http://good.example,https://also.example']);
  const client = await openWs(t, url('/pong'), { origin: 'https://also.example' });
  t.is((await client.echo('allowed')).data.toString(), 'allowed');
});

// Bad frames

/** A raw client upgraded to /pong on `port`. */
async function upgraded(t: ExecutionContext, port: number): Promise<RawClient> {
  const raw = await RawClient.connect(port);
  t.teardown(() => raw.destroy());
  const head = await raw.upgrade('/pong');
  if (head.status !== 101) throw new Error(`upgrade refused: ${head.statusLine}`);
  return raw;
}

test('closes with 1002 when a client sends an unmasked frame, forwarding nothing', async (t) => {
  const { wsd } = await setup(t);
  const raw = await upgraded(t, wsd.port);
  raw.write(encodeWsFrame(Opcode.BINARY, Buffer.from('not masked'), { mask: false }));
  const close = await raw.readClose();
  t.is(closeCodeOf(close).code, 1002);
  await raw.waitClosed();
  const line = await wsd.proc.waitFor(closedBy(raw.peer), 'the teardown');
  t.is(line['messagesIn'], 0);
  await stillServes(t, wsd.port);
});

test('closes with 1009 when a message is larger than --max-payload', async (t) => {
  const { wsd, url } = await setup(t, ['--allow', 'pong', '--max-payload', '1000']);
  const client = await openWs(t, url('/pong'));
  t.is((await client.echo(Buffer.alloc(1000, 1))).data.length, 1000);
  client.ws.send(Buffer.alloc(1001, 2));
  t.is((await client.waitClosed()).code, 1009);
  const line = await wsd.proc.waitFor(closedBy(client.peer), 'the teardown');
  t.is(line['messagesIn'], 1);
});

test('closes with 1009 when a fragmented message grows over --max-payload', async (t) => {
  const { wsd } = await setup(t, ['--allow', 'pong', '--max-payload', '1000']);
  const raw = await upgraded(t, wsd.port);
  raw.write(encodeWsFrame(Opcode.BINARY, Buffer.alloc(600, 0x61), { fin: false }));
  raw.write(encodeWsFrame(Opcode.CONTINUATION, Buffer.alloc(600, 0x62)));
  const close = await raw.readClose();
  t.is(closeCodeOf(close).code, 1009);
  await raw.waitClosed();
  t.is((await wsd.proc.waitFor(closedBy(raw.peer), 'the teardown'))['messagesIn'], 0);
});

test('closes with 1009 as soon as a frame header announces more than --max-payload', async (t) => {
  const { wsd } = await setup(t, ['--allow', 'pong', '--max-payload', '1000']);
  const raw = await upgraded(t, wsd.port);
  // Only the header of a 2 GiB frame: wsd must not wait for (or buffer) the body.
  const header = encodeWsFrame(Opcode.BINARY, Buffer.alloc(0));
  header[1] = 0x80 | 127;
  const length = Buffer.alloc(8);
  length.writeBigUInt64BE(2n ** 31n);
  raw.write(Buffer.concat([header.subarray(0, 2), length, Buffer.from([1, 2, 3, 4])]));
  t.is(closeCodeOf(await raw.readClose()).code, 1009);
  await raw.waitClosed();
});

test('closes with 1007 on invalid UTF-8 in a text message', async (t) => {
  const { wsd } = await setup(t);
  const raw = await upgraded(t, wsd.port);
  raw.write(encodeWsFrame(Opcode.TEXT, Buffer.from([0x6f, 0x6b, 0xc3, 0x28])));
  t.is(closeCodeOf(await raw.readClose()).code, 1007);
  await raw.waitClosed();
  t.is((await wsd.proc.waitFor(closedBy(raw.peer), 'the teardown'))['messagesIn'], 0);
  await stillServes(t, wsd.port);
});

test('closes with 1007 on invalid UTF-8 split across the fragments of a text message', async (t) => {
  const { wsd } = await setup(t);
  const raw = await upgraded(t, wsd.port);
  raw.write(encodeWsFrame(Opcode.TEXT, Buffer.from([0x6f, 0x6b, 0xe2, 0x82]), { fin: false }));
  raw.write(encodeWsFrame(Opcode.CONTINUATION, Buffer.from([0x28])));
  t.is(closeCodeOf(await raw.readClose()).code, 1007);
  await raw.waitClosed();
});

// Liveness and failures

test('drops a client that never answers pings', async (t) => {
  const { wsd } = await setup(t, ['--allow', 'pong', '--ping-interval', '200']);
  const raw = await upgraded(t, wsd.port);
  // Read every frame (pings) but answer none.
  const frames: number[] = [];
  const reading = (async () => {
    for (let i = 0; i < 1000; i++) {
      const frame = await raw.readFrame(WAIT).catch(() => null);
      if (!frame) return;
      frames.push(frame.opcode);
    }
  })();
  await raw.waitClosed();
  await reading;
  t.true(frames.includes(Opcode.PING), `frames received: ${frames.join(',')}`);
  await wsd.proc.waitFor((l) => l.msg === 'dropping dead WebSocket peer', 'the drop');
  await wsd.proc.waitFor(closedBy(raw.peer), 'the teardown');
});

test('keeps a client that answers pings across several ping intervals', async (t) => {
  // Not shorter: a pong must come back within one interval, even on a loaded machine.
  const { url } = await setup(t, ['--allow', 'pong', '--ping-interval', '1000']);
  const client = await openWs(t, url('/pong'));
  let pings = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${pings} pings within ${WAIT} ms`)), WAIT);
    client.ws.on('ping', () => {
      if (++pings === 3) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  t.is(client.closed, null);
  t.is((await client.echo('still here')).data.toString(), 'still here');
});

test('a service that closes gives its client 1001', async (t) => {
  const { pongd, url } = await setup(t);
  const client = await openWs(t, url('/pong'));
  t.is((await client.echo('before')).data.toString(), 'before');
  pongd!.kill('SIGTERM');
  const closed = await client.waitClosed();
  t.is(closed.code, 1001);
  t.is(closed.reason, 'service closed');
});

test('a service killed mid-conversation closes its clients with 1001 or 1011, and wsd keeps serving others', async (t) => {
  const { rundir, pongd, wsd, url } = await setup(t, ['--allow', 'pong,other']);
  const other = await startPongd(t, rundir, 'other');
  const doomed = await openWs(t, url('/pong'));
  const survivor = await openWs(t, url('/other'));
  t.is((await doomed.echo('one')).data.toString(), 'one');
  t.is((await survivor.echo('one')).data.toString(), 'one');
  // Messages in flight when the service dies.
  for (let i = 0; i < 20; i++) doomed.ws.send(Buffer.alloc(10_000, i));
  pongd!.kill('SIGKILL');
  const closed = await doomed.waitClosed();
  t.true([1001, 1011].includes(closed.code), `close code ${closed.code}`);
  await wsd.proc.waitFor(closedBy(doomed.peer), 'the teardown');
  t.is((await survivor.echo('two')).data.toString(), 'two');
  const newcomer = await openWs(t, url('/other'));
  t.is((await newcomer.echo('three')).data.toString(), 'three');
  t.is((await refusedStatus(t, url('/pong'))).status, 404);
  t.true(wsd.proc.running);
  t.true(other.running);
});

test('a service reply larger than --max-payload closes the client with 1009', async (t) => {
  const { dir, rundir } = await slotRundir(t);
  await rawService(t, rundir, 'big', (socket) => {
    socket.write(encodeFrame('fine'));
    // A header announcing 2000 bytes, over wsd's limit of 1000: wsd must not wait for them.
    const header = Buffer.alloc(4);
    header.writeUInt32BE(2000);
    socket.write(header);
  });
  const wsd = await startWsd(t, rundir, ['--allow', 'big', '--max-payload', '1000']);
  const client = await openWs(t, `ws://127.0.0.1:${wsd.port}/big`);
  t.is((await client.next()).data.toString(), 'fine');
  t.is((await client.waitClosed()).code, 1009);
  const line = await wsd.proc.waitFor(closedBy(client.peer), 'the teardown');
  t.is(line['code'], ErrorCode.PAYLOAD_TOO_LARGE);
});

test('a good reply and an oversized header in one write: the good reply arrives, then 1009', async (t) => {
  const { dir, rundir } = await slotRundir(t);
  await rawService(t, rundir, 'big', (socket) => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(2000);
    socket.write(Buffer.concat([encodeFrame('fine'), header]));
  });
  const wsd = await startWsd(t, rundir, ['--allow', 'big', '--max-payload', '1000']);
  const client = await openWs(t, `ws://127.0.0.1:${wsd.port}/big`);
  t.is((await client.next()).data.toString(), 'fine');
  t.is((await client.waitClosed()).code, 1009);
  t.is((await wsd.proc.waitFor(closedBy(client.peer), 'the teardown'))['code'], ErrorCode.PAYLOAD_TOO_LARGE);
});

test('a service that ends in the middle of a frame closes the client with 1011', async (t) => {
  const { dir, rundir } = await slotRundir(t);
  await rawService(t, rundir, 'cut', (socket) => {
    socket.end(Buffer.concat([encodeFrame('whole'), encodeFrame('cut short').subarray(0, 7)]));
  });
  const wsd = await startWsd(t, rundir, ['--allow', 'cut']);
  const client = await openWs(t, `ws://127.0.0.1:${wsd.port}/cut`);
  t.is((await client.next()).data.toString(), 'whole');
  t.is((await client.waitClosed()).code, 1011);
  const line = await wsd.proc.waitFor(closedBy(client.peer), 'the teardown');
  t.is(line['code'], ErrorCode.TRUNCATED_FRAME);
});

// While a slow service holds a client back, wsd stops reading the client (ws.pause()),
// so the client's pongs stay unread in the socket: the ping sweep must not take that
// for a dead peer.
test('a client held back by a slow service is not dropped by the ping check', async (t) => {
  const { dir, rundir } = await slotRundir(t);
  await rawService(t, rundir, 'sink', (socket) => {
    socket.pause(); // reads nothing until the end of the test
  });
  const wsd = await startWsd(t, rundir, ['--allow', 'sink', '--ping-interval', '500']);
  const client = await openWs(t, `ws://127.0.0.1:${wsd.port}/sink`);
  const ws = client.ws;
  // Send until the client's own socket holds 4 MiB wsd does not take (bounded: 256 MiB).
  for (let seq = 0; ws.bufferedAmount < 4 * MiB && seq < 4096; seq++) {
    ws.send(numbered(seq, 64 * 1024));
    if (seq % 16 === 15) await sleep(10);
  }
  t.true(ws.bufferedAmount >= 4 * MiB, 'wsd never held the client back');
  // The client answers every ping (ws does it itself); wait for several.
  let pings = 0;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, WAIT);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    ws.on('ping', () => {
      if (++pings >= 4) done();
    });
    ws.once('close', done);
  });
  const drops = wsd.proc.filter((l) => l.msg === 'dropping dead WebSocket peer').length;
  t.is(client.closed, null, `closed after ${pings} pings; ${drops} drop(s) logged`);
});

// Limits

test('drops a TCP client that sends no request within --handshake-timeout', async (t) => {
  const { wsd } = await setup(t, ['--allow', 'pong', '--handshake-timeout', '300'], false);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  await raw.waitClosed();
  t.is(raw.pending.length, 0);
  const line = await wsd.proc.waitFor(refusedBy(raw.peer), 'the refusal');
  t.is(line['code'], ErrorCode.HANDSHAKE_TIMEOUT);
});

test('drops a TCP client whose request never ends within --handshake-timeout', async (t) => {
  const { wsd } = await setup(t, ['--allow', 'pong', '--handshake-timeout', '300']);
  const raw = await RawClient.connect(wsd.port);
  t.teardown(() => raw.destroy());
  raw.write('GET /pong HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n');
  await raw.waitClosed();
  const line = await wsd.proc.waitFor(refusedBy(raw.peer), 'the refusal');
  t.is(line['code'], ErrorCode.HANDSHAKE_TIMEOUT);
});

test('refuses connections over --max-connections, and accepts again once one closes', async (t) => {
  const { wsd, url } = await setup(t, ['--allow', 'pong', '--max-connections', '2']);
  const first = await openWs(t, url('/pong'));
  const second = await openWs(t, url('/pong'));
  const extra = await RawClient.connect(wsd.port);
  t.teardown(() => extra.destroy());
  await extra.waitClosed();
  t.is(extra.pending.length, 0);
  const line = await wsd.proc.waitFor(refusedBy(extra.peer), 'the refusal');
  t.is(line['code'], ErrorCode.TOO_MANY_CONNECTIONS);
  t.is((await second.echo('second still works')).data.toString(), 'second still works');
  first.ws.close();
  await first.waitClosed();
  await wsd.proc.waitFor(closedBy(first.peer), 'the teardown of the first');
  const third = await openWs(t, url('/pong'));
  t.is((await third.echo('third')).data.toString(), 'third');
});

test('connections still in their handshake count toward --max-connections', async (t) => {
  const { wsd, url } = await setup(t, ['--allow', 'pong', '--max-connections', '2', '--handshake-timeout', '30000']);
  const idle = [await RawClient.connect(wsd.port), await RawClient.connect(wsd.port)];
  t.teardown(() => idle.forEach((c) => c.destroy()));
  const err = await t.throwsAsync(openWs(t, url('/pong')));
  t.truthy(err);
  await wsd.proc.waitFor((l) => l.msg === 'connection refused' && l['code'] === ErrorCode.TOO_MANY_CONNECTIONS, 'the refusal');
  for (const c of idle) c.destroy();
  // Once the idle ones are gone (wsd sees their close), a client gets in again.
  let client = null;
  for (let i = 0; i < 50 && client === null; i++) {
    client = await openWs(t, url('/pong')).catch(() => null);
    if (client === null) await sleep(100);
  }
  t.truthy(client, 'no connection accepted after the idle ones left');
  t.is((await client!.echo('in')).data.toString(), 'in');
});

// Backpressure. Without it, wsd would buffer whatever one side sends while the other
// does not take it: these budgets (256 MiB) would show in its RSS. Each run is bounded
// in time; the assertions are about amounts, never durations.

const BUDGET = 256 * MiB;
const RUN_MS = 4000;
const RSS_BOUND = 64 * MiB;
const mib = (bytes: number) => (bytes / MiB).toFixed(1);

test('a client that stops reading while the service floods does not make wsd buffer without bound', async (t) => {
  const { dir, rundir } = await slotRundir(t);
  const size = 64 * 1024;
  const flood = { written: 0, frames: 0, stop: false };
  await rawService(t, rundir, 'flood', (socket) => {
    // Writes numbered frames as fast as wsd takes them, honouring its own backpressure.
    const pump = () => {
      while (!flood.stop && flood.written < BUDGET) {
        const frame = encodeFrame(numbered(flood.frames, size));
        flood.frames++;
        flood.written += frame.length;
        if (!socket.write(frame)) {
          socket.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });
  const wsd = await startWsd(t, rundir, ['--allow', 'flood', '--ping-interval', '0']);
  const baseline = rssBytes(wsd.proc.pid);
  const client = await openWs(t, `ws://127.0.0.1:${wsd.port}/flood`);
  client.ws.pause(); // stops reading its socket
  const peak = await peakRss(wsd.proc.pid, async () => {
    const end = performance.now() + RUN_MS;
    while (performance.now() < end && flood.written < BUDGET) await sleep(50);
  });
  flood.stop = true;
  t.log(`flooded ${mib(flood.written)} MiB; wsd RSS ${mib(baseline)} -> peak ${mib(peak)} MiB`);
  t.true(flood.written < BUDGET / 2, `the service could write ${flood.written} bytes to a client that reads nothing`);
  t.true(peak - baseline < RSS_BOUND, `wsd RSS grew by ${mib(peak - baseline)} MiB`);
  // Nothing was lost: once the client reads again, every frame comes, in order.
  client.ws.resume();
  const frames = flood.frames;
  for (let seq = 0; seq < frames; seq++) {
    const message = await client.next();
    if (message.data.length !== size || message.data.readUInt32BE(0) !== seq) {
      t.fail(`message ${seq}: ${message.data.length} bytes, number ${message.data.readUInt32BE(0)}`);
      return;
    }
  }
  t.pass();
});

test('a slow service while a client keeps sending does not make wsd buffer without bound', async (t) => {
  const { dir, rundir } = await slotRundir(t);
  const size = 64 * 1024;
  const sink = { frames: 0, bad: null as string | null, fast: false, socket: null as net.Socket | null };
  await rawService(t, rundir, 'sink', (socket) => {
    sink.socket = socket;
    const decoder = new FrameDecoder(size + 16);
    socket.on('data', (chunk: Buffer) => {
      for (const payload of decoder.push(chunk)) {
        if (payload.length !== size || payload.readUInt32BE(0) !== sink.frames) {
          sink.bad ??= `frame ${sink.frames}: ${payload.length} bytes`;
        }
        sink.frames++;
      }
      // Slow: one read, then a pause of 200 ms (until told to read fast).
      if (!sink.fast) {
        socket.pause();
        setTimeout(() => socket.resume(), 200).unref();
      }
    });
  });
  const wsd = await startWsd(t, rundir, ['--allow', 'sink', '--ping-interval', '0']);
  const baseline = rssBytes(wsd.proc.pid);
  const client = await openWs(t, `ws://127.0.0.1:${wsd.port}/sink`);
  const ws = client.ws;
  let sent = 0;
  const peak = await peakRss(wsd.proc.pid, async () => {
    // Sends while its own socket takes the bytes (bufferedAmount: what it could not write yet).
    const end = performance.now() + RUN_MS;
    while (performance.now() < end && sent * size < BUDGET) {
      if (ws.bufferedAmount < 4 * MiB) ws.send(numbered(sent++, size));
      else await sleep(20);
      if (sent % 64 === 0) await sleep(0);
    }
  });
  const left = sent * size - ws.bufferedAmount;
  t.log(`sent ${mib(left)} MiB; wsd RSS ${mib(baseline)} -> peak ${mib(peak)} MiB`);
  t.true(left < BUDGET / 2, `the client could push ${left} bytes to a service that reads slowly`);
  t.true(peak - baseline < RSS_BOUND, `wsd RSS grew by ${mib(peak - baseline)} MiB`);
  // Nothing was lost: once the service reads fast, every message arrives, in order.
  sink.fast = true;
  sink.socket?.resume();
  for (let i = 0; i < 400 && sink.frames < sent; i++) await sleep(25);
  t.is(sink.bad, null);
  t.is(sink.frames, sent);
});

// Another WebSocket implementation: Debian's python3-websockets.

test('python3-websockets: a text message comes back as binary by default', async (t) => {
  const { url } = await setup(t);
  const { code, record } = await pythonClient(t, [url('/pong'), 'hello from python ✓']);
  t.is(code, 0);
  t.deepEqual(record, { event: 'reply', type: 'binary', data: 'hello from python ✓' });
});

test('python3-websockets: with --text a message comes back as text', async (t) => {
  const { url } = await setup(t, ['--allow', 'pong', '--text']);
  const { code, record } = await pythonClient(t, [url('/pong'), 'bytes from python', '--binary']);
  t.is(code, 0);
  t.deepEqual(record, { event: 'reply', type: 'text', data: 'bytes from python' });
});

test('python3-websockets: echoes over wss with the development CA', async (t) => {
  const { files, url } = await setupWss(t);
  const { code, record } = await pythonClient(t, [url('/pong'), 'over TLS', '--cafile', files.ca]);
  t.is(code, 0);
  t.deepEqual(record, { event: 'reply', type: 'binary', data: 'over TLS' });
});

test('python3-websockets: sees the 404 of a service that is not running and the 1009 of an oversized message', async (t) => {
  const { url } = await setup(t, ['--allow', 'pong,nosuch', '--max-payload', '10']);
  const refused = await pythonClient(t, [url('/nosuch'), 'x']);
  t.is(refused.code, 2);
  t.deepEqual(refused.record, { event: 'refused', status: 404 });
  const tooBig = await pythonClient(t, [url('/pong'), 'eleven char']);
  t.is(tooBig.code, 3);
  t.is(tooBig.record['code'], 1009);
});

// The daemon's life

test('SIGTERM stops wsd with exit code 0 and removes its outbound service sockets', async (t) => {
  await slot(t);
  const dir = await tempDir(t);
  const rundir = path.join(dir, 'run');
  const proc = spawnCli(t, 'wsd', ['--listen', '127.0.0.1:0', '--allow', 'pong'], { RUNDIR: rundir });
  await proc.waitFor((l) => l.msg === 'listening' && typeof l['port'] === 'number', "wsd 'listening'", START_TIMEOUT);
  // The outbound side serves ws and wss in the run directory.
  const served = () => existsSync(path.join(rundir, 'ws')) && existsSync(path.join(rundir, 'wss'));
  for (let i = 0; i < 100 && !served(); i++) await sleep(50);
  t.true(existsSync(path.join(rundir, 'ws')));
  t.true(existsSync(path.join(rundir, 'wss')));
  proc.kill('SIGTERM');
  t.deepEqual(await proc.waitExit(), { code: 0, signal: null });
  t.false(existsSync(path.join(rundir, 'ws')));
  t.false(existsSync(path.join(rundir, 'wss')));
});

test('on SIGTERM, a connection still open after --drain-timeout is closed with 1001', async (t) => {
  const { wsd, url } = await setup(t, ['--allow', 'pong', '--drain-timeout', '300']);
  const client = await openWs(t, url('/pong'));
  t.is((await client.echo('before')).data.toString(), 'before');
  wsd.proc.kill('SIGTERM');
  const closed = await client.waitClosed();
  t.is(closed.code, 1001);
  t.deepEqual(await wsd.proc.waitExit(), { code: 0, signal: null });
});

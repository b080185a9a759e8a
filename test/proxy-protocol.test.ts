/**
 * PROXY protocol in (--accept-proxy, --trusted-proxies) and per-IP limits on real
 * gateways in process (tcpd, tlsd, wsd on 127.0.0.1 and Unix listeners, a framed echo
 * service in a temp RUNDIR), wsd's forwarding headers, and --send-proxy-v2 out of the
 * outbound services into a gateway that accepts it. Every bad input gets its coded
 * refusal, and the gateway keeps serving others.
 */
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { WebSocket } from 'ws';
import type { Gateway } from '../gateways/gateway.js';
import { createTcpGateway } from '../gateways/tcp.js';
import { createTlsGateway } from '../gateways/tls.js';
import { createWsGateway } from '../gateways/ws.js';
import type { GatewayInput } from '../gateways/options.js';
import { V2_SIGNATURE, encodeProxyV2 } from '../gateways/proxy-protocol.js';
import { byMsg, captureLogger, codeOf, type LogLine, type LogSink } from './helpers/log-sink.js';
import { frame, pause, probeEcho, PROBE, RawClient, WAIT } from './helpers/raw-client.js';
import { tempDir, tempRundir } from './helpers/rundir.js';
import { startFrameService } from './helpers/services.js';
import { makeMaterial } from './helpers/tls-certs.js';
import { spawnCli, startPongd, startTcpd } from './helpers/daemon.js';

interface Running {
  gateway: Gateway;
  port: number;
  log: LogSink;
  rundir: string;
}

type Kind = 'tcp' | 'tls' | 'ws';

/** A gateway of `kind` on 127.0.0.1:0 (or its own listen addresses), with a framed echo `pong`. */
async function start(t: ExecutionContext, options: Partial<GatewayInput> = {}, kind: Kind = 'tcp', rundir?: string): Promise<Running> {
  const dir = rundir ?? (await tempRundir(t));
  if (rundir === undefined) await startFrameService(t, dir, 'pong');
  const { logger, sink } = captureLogger();
  const input: GatewayInput = { listen: [{ host: '127.0.0.1', port: 0 }], allow: 'pong', rundir: dir, logger, ...options };
  const gateway = kind === 'tcp' ? createTcpGateway(input) : kind === 'tls' ? createTlsGateway(input) : createWsGateway(input);
  await gateway.listen();
  t.teardown(() => gateway.destroy());
  return { gateway, port: gateway.addresses[0]?.port ?? 0, log: sink, rundir: dir };
}

function v1(source: string, port = 4242): Buffer {
  const family = net.isIPv6(source) ? 'TCP6' : 'TCP4';
  const destination = family === 'TCP6' ? '::1' : '127.0.0.1';
  return Buffer.from(`PROXY ${family} ${source} ${destination} ${port} 8998\r\n`, 'latin1');
}

function v2(source: string, port = 4242): Buffer {
  const family = net.isIPv6(source) ? 'IPv6' : 'IPv4';
  return encodeProxyV2({
    kind: 'proxy',
    source: { address: source, port, family },
    destination: { address: family === 'IPv6' ? '::1' : '127.0.0.1', port: 8998, family },
  });
}

/** A TCP client that sent `header`, named pong and got ok. */
async function proxiedSession(t: ExecutionContext, port: number, header: Buffer): Promise<RawClient> {
  const client = await RawClient.tcp(t, port);
  await client.write(Buffer.concat([header, Buffer.from('pong')]));
  await client.expect(Buffer.from('ok'));
  return client;
}

/** The refusal of the client whose TCP peer is `tcpPeer` (logged under `peer` or `proxiedBy`). */
async function refusalOf(t: ExecutionContext, log: LogSink, tcpPeer: string, code: string): Promise<LogLine> {
  const line = await log.waitFor(
    (l) => l.msg === 'connection refused' && (l['peer'] === tcpPeer || l['proxiedBy'] === tcpPeer),
    WAIT,
    `refusal of ${tcpPeer}`,
  );
  t.is(codeOf(line), code, JSON.stringify(line));
  return line;
}

async function endCleanly(client: RawClient): Promise<void> {
  client.endWrite();
  await client.expectEof();
  client.destroy();
}

// ---------------------------------------------------------------------------------------
// Headers that are read

test('v1 header, name and a frame in one write: the client address is the header\'s, the TCP peer is proxiedBy', async (t) => {
  const gw = await start(t, { acceptProxy: true });
  const client = await RawClient.tcp(t, gw.port);
  await client.write(Buffer.concat([v1('203.0.113.7', 5555), Buffer.from('pong'), Buffer.from(PROBE, 'hex')]));
  await client.expect(Buffer.concat([Buffer.from('ok'), Buffer.from(PROBE, 'hex')]));
  await endCleanly(client);
  const line = await gw.log.waitFor(byMsg('connection closed', '203.0.113.7:5555'), WAIT, 'teardown');
  t.is(line['proxiedBy'], client.peer);
  t.is(line['messagesIn'], 1);
});

test('fixed target: the first frame in the header\'s segment reaches the service', async (t) => {
  const gw = await start(t, { acceptProxy: true, allow: undefined, service: 'pong' });
  const client = await RawClient.tcp(t, gw.port);
  await client.write(Buffer.concat([v2('192.0.2.77', 7700), Buffer.from(PROBE, 'hex')]));
  await client.expect(PROBE);
  await endCleanly(client);
  t.truthy(await gw.log.waitFor(byMsg('connection closed', '192.0.2.77:7700'), WAIT, 'teardown'));
});

test('v2 IPv6 header split over one write per byte, then the name', async (t) => {
  const gw = await start(t, { acceptProxy: true });
  const client = await RawClient.tcp(t, gw.port);
  const header = v2('2001:db8::42', 6000);
  for (const byte of header) {
    await client.write(Buffer.from([byte]));
    await pause(1);
  }
  await client.write(Buffer.from('pong'));
  await client.expect(Buffer.from('ok'));
  await probeEcho(client);
  await endCleanly(client);
  const line = await gw.log.waitFor(byMsg('connection closed', '[2001:db8::42]:6000'), WAIT, 'teardown');
  t.is(line['proxiedBy'], client.peer);
});

test('v2 LOCAL (health checks), UNSPEC and UNIX keep the TCP peer address; TLVs are skipped', async (t) => {
  const gw = await start(t, { acceptProxy: true });
  const local = encodeProxyV2({ kind: 'local' });
  const unspec = Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x00, 0, 3, 0xe0, 0, 0])]);
  const unix = encodeProxyV2({ kind: 'unix', source: '', destination: '/run/x/tcp' });
  const cases: Array<[Buffer, string]> = [
    [local, 'local'],
    [unspec, 'unspec'],
    [unix, 'unix'],
  ];
  for (const [header, kind] of cases) {
    const client = await proxiedSession(t, gw.port, header);
    await probeEcho(client);
    await endCleanly(client);
    const line = await gw.log.waitFor(byMsg('connection closed', client.peer), WAIT, `teardown of ${kind}`);
    t.is(line['proxy'], kind);
    t.is(line['proxiedBy'], undefined);
    if (kind === 'unix') t.is(line['proxyPath'], '/run/x/tcp');
  }
});

test('an IPv4-mapped source address is logged and limited as the IPv4 address', async (t) => {
  const gw = await start(t, { acceptProxy: true, maxConnectionsPerIp: 1 });
  const a = await proxiedSession(t, gw.port, v1('::ffff:198.51.100.9', 7000));
  const b = await RawClient.tcp(t, gw.port);
  await b.write(Buffer.concat([v1('198.51.100.9', 7001), Buffer.from('pong')]));
  await b.expectEof();
  await refusalOf(t, gw.log, b.peer, 'IPC_ERR_TOO_MANY_CONNECTIONS_PER_IP');
  await endCleanly(a);
  t.truthy(await gw.log.waitFor(byMsg('connection closed', '198.51.100.9:7000'), WAIT, 'teardown of a'));
});

// ---------------------------------------------------------------------------------------
// Bad input

test('a PROXY header from a peer outside --trusted-proxies is refused; without a header it is served', async (t) => {
  const gw = await start(t, { acceptProxy: true, trustedProxies: ['10.0.0.0/8'] });
  for (const header of [v1('203.0.113.1'), v2('203.0.113.1')]) {
    const client = await RawClient.tcp(t, gw.port);
    await client.write(Buffer.concat([header, Buffer.from('pong')]));
    await client.expectEof();
    const line = await refusalOf(t, gw.log, client.peer, 'IPC_ERR_PROXY_NOT_TRUSTED');
    t.is(line['peer'], client.peer, 'the header was not believed');
  }
  const plain = await RawClient.tcp(t, gw.port);
  await plain.write(Buffer.from('pong'));
  await plain.expect(Buffer.from('ok'));
  await probeEcho(plain);
});

test('malformed headers from a trusted peer are refused with IPC_ERR_PROXY_HEADER_INVALID, others keep being served', async (t) => {
  const gw = await start(t, { acceptProxy: true });
  const badSignature = Buffer.from(v2('192.0.2.1'));
  badSignature[9] = 0x58;
  const unknownVersion = Buffer.from(v2('192.0.2.1'));
  unknownVersion[12] = 0x31;
  const unknownCommand = Buffer.from(v2('192.0.2.1'));
  unknownCommand[12] = 0x25;
  const cases: Array<[string, Buffer, RegExp]> = [
    ['v1 over 107 bytes', Buffer.from(`PROXY TCP4 ${'1'.repeat(110)}`), /longer than 107/],
    ['v1 with a missing field', Buffer.from('PROXY TCP4 192.0.2.1 127.0.0.1 1\r\npong'), /expected PROXY/],
    ['v2 bad signature', badSignature, /bad v2 signature/],
    ['v2 unknown version', unknownVersion, /unknown version 3/],
    ['v2 unknown command', unknownCommand, /unknown command 5/],
    ['no header at all (a service name)', Buffer.from('pong'), /no PROXY header/],
  ];
  for (const [what, bytes, reason] of cases) {
    const client = await RawClient.tcp(t, gw.port);
    await client.write(bytes).catch(() => undefined);
    await client.expectEof();
    const line = await refusalOf(t, gw.log, client.peer, 'IPC_ERR_PROXY_HEADER_INVALID');
    t.regex(String(line['reason']), reason, what);
  }
  await probeEcho(await proxiedSession(t, gw.port, v1('192.0.2.2')));
});

test('a v1 line cut short by the client\'s FIN is refused as truncated', async (t) => {
  const gw = await start(t, { acceptProxy: true });
  const client = await RawClient.tcp(t, gw.port);
  await client.write(Buffer.from('PROXY TCP4 192.0.2.1 127.0.0.1 40'));
  client.endWrite();
  await client.expectEof();
  const line = await refusalOf(t, gw.log, client.peer, 'IPC_ERR_PROXY_HEADER_INVALID');
  t.regex(String(line['reason']), /truncated/);
});

test('no header, or a v2 length beyond what arrives, ends at the handshake deadline', async (t) => {
  const gw = await start(t, { acceptProxy: true, handshakeTimeout: 300 });
  const silent = await RawClient.tcp(t, gw.port);
  const short = await RawClient.tcp(t, gw.port);
  const header = v2('192.0.2.1');
  header.writeUInt16BE(500, 14);
  await short.write(header);
  for (const client of [silent, short]) {
    await client.expectEof();
    const line = await refusalOf(t, gw.log, client.peer, 'IPC_ERR_HANDSHAKE_TIMEOUT');
    t.regex(String(line['reason']), /PROXY header not finished within 300 ms/);
  }
});

// ---------------------------------------------------------------------------------------
// TLS and WebSocket behind a PROXY header

test('tlsd: the header comes before the ClientHello', async (t) => {
  const material = makeMaterial(await tempDir(t));
  const gw = await start(t, { acceptProxy: true, cert: material.files.cert, key: material.files.key }, 'tls');
  const raw = net.connect({ host: '127.0.0.1', port: gw.port });
  t.teardown(() => raw.destroy());
  raw.write(v2('198.51.100.20', 9000));
  const secure = tls.connect({ socket: raw, ca: material.ca.cert, servername: 'localhost' });
  secure.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
  secure.write(Buffer.from('pong'));
  const got = await new Promise<Buffer>((resolve) => secure.once('data', resolve));
  t.is(got.toString(), 'ok');
  secure.end();
  const line = await gw.log.waitFor(byMsg('connection closed', '198.51.100.20:9000'), WAIT, 'teardown');
  t.is(typeof (line['tls'] as Record<string, unknown>)['protocol'], 'string');
  t.regex(String(line['proxiedBy']), /^127\.0\.0\.1:/);
});

test('tlsd and wsd with --accept-proxy serve an untrusted peer that sends no header (its ClientHello or request goes on)', async (t) => {
  const material = makeMaterial(await tempDir(t));
  const tlsGw = await start(t, { acceptProxy: true, trustedProxies: ['10.0.0.0/8'], cert: material.files.cert, key: material.files.key }, 'tls');
  const secure = tls.connect({ host: '127.0.0.1', port: tlsGw.port, ca: material.ca.cert, servername: 'localhost' });
  t.teardown(() => secure.destroy());
  await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
  secure.write(Buffer.from('pong'));
  t.is((await new Promise<Buffer>((resolve) => secure.once('data', resolve))).toString(), 'ok');
  secure.end();
  const wsGw = await start(t, { acceptProxy: true, trustedProxies: ['10.0.0.0/8'], static: false }, 'ws');
  const { ws, status } = await openWs(wsGw.port);
  t.is(status, 101);
  await wsEcho(t, ws);
});

/** Opens a WebSocket to `port`/pong; `header` first on the TCP connection when given. Resolves on open or refusal status. */
function openWs(port: number, options: { header?: Buffer; headers?: Record<string, string> } = {}): Promise<{ ws: WebSocket; status: number }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/pong`, {
    ...(options.headers ? { headers: options.headers } : {}),
    ...(options.header
      ? {
          createConnection: ((opts: net.NetConnectOpts) => {
            const socket = net.connect({ host: '127.0.0.1', port });
            socket.write(options.header!);
            return socket;
          }) as typeof net.createConnection,
        }
      : {}),
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, status: 101 }));
    ws.once('unexpected-response', (_req, res) => resolve({ ws, status: res.statusCode ?? 0 }));
    ws.once('error', reject);
  });
}

async function wsEcho(t: ExecutionContext, ws: WebSocket): Promise<void> {
  ws.send(Buffer.from('ping'));
  const reply = await new Promise<Buffer>((resolve) => ws.once('message', (data: Buffer) => resolve(data)));
  t.is(reply.toString(), 'ping');
  ws.close();
}

test('wsd: the header comes before the HTTP upgrade', async (t) => {
  const gw = await start(t, { acceptProxy: true, static: false }, 'ws');
  const { ws, status } = await openWs(gw.port, { header: v1('198.51.100.30', 9100) });
  t.is(status, 101);
  await wsEcho(t, ws);
  const line = await gw.log.waitFor(byMsg('connection closed', '198.51.100.30:9100'), WAIT, 'teardown');
  t.regex(String(line['proxiedBy']), /^127\.0\.0\.1:/);
});

test('wsd takes X-Forwarded-For (or, when told, Forwarded) from a trusted peer only when --trusted-proxies is given', async (t) => {
  const trusting = await start(t, { trustedProxies: ['127.0.0.0/8'], static: false }, 'ws');
  const forwarded = await openWs(trusting.port, { headers: { 'x-forwarded-for': '6.6.6.6, 203.0.113.50' } });
  await wsEcho(t, forwarded.ws);
  const line = await trusting.log.waitFor(byMsg('connection closed', '203.0.113.50'), WAIT, 'teardown');
  t.is(line['forwardedBy'], 'x-forwarded-for');
  t.regex(String(line['proxiedBy']), /^127\.0\.0\.1:/);
  // Forwarded is read only when the proxies are said to write it (--forwarded-header forwarded).
  const rfcTrusting = await start(t, { trustedProxies: ['127.0.0.0/8'], forwardedHeader: 'forwarded', static: false }, 'ws');
  const rfc = await openWs(rfcTrusting.port, { headers: { forwarded: 'for="[2001:db8::9]:1234"', 'x-forwarded-for': '203.0.113.99' } });
  await wsEcho(t, rfc.ws);
  const rfcLine = await rfcTrusting.log.waitFor(byMsg('connection closed', '[2001:db8::9]:1234'), WAIT, 'teardown (Forwarded)');
  t.is(rfcLine['forwardedBy'], 'forwarded');

  // Forged: the peer is not a trusted proxy, or no proxy is trusted with forwarding headers.
  for (const options of [{ trustedProxies: ['10.0.0.0/8'] }, {}]) {
    const gw = await start(t, { ...options, static: false }, 'ws');
    const forged = await openWs(gw.port, { headers: { 'x-forwarded-for': '203.0.113.66' } });
    await wsEcho(t, forged.ws);
    const closed = await gw.log.waitFor(byMsg('connection closed'), WAIT, 'teardown');
    t.regex(String(closed['peer']), /^127\.0\.0\.1:\d+$/, JSON.stringify(options));
    t.is(closed['proxiedBy'], undefined);
  }
});

test('wsd behind an HTTP proxy: per-IP limits apply to the forwarded address, refused with 429', async (t) => {
  const gw = await start(t, { trustedProxies: ['127.0.0.1'], maxConnectionsPerIp: 1, static: false }, 'ws');
  const first = await openWs(gw.port, { headers: { 'x-forwarded-for': '203.0.113.70' } });
  t.is(first.status, 101);
  const second = await openWs(gw.port, { headers: { 'x-forwarded-for': '203.0.113.70' } });
  t.is(second.status, 429);
  const line = await gw.log.waitFor(byMsg('connection refused', '203.0.113.70'), WAIT, 'refusal');
  t.is(codeOf(line), 'IPC_ERR_TOO_MANY_CONNECTIONS_PER_IP');
  const other = await openWs(gw.port, { headers: { 'x-forwarded-for': '203.0.113.71' } });
  t.is(other.status, 101, 'the proxy\'s own address is not what is limited');
  await wsEcho(t, first.ws);
  await wsEcho(t, other.ws);
});

// ---------------------------------------------------------------------------------------
// Per-IP limits

test('per-IP connections: refused at the limit by PROXY address, other addresses served, the slot comes back at the end', async (t) => {
  const gw = await start(t, { acceptProxy: true, maxConnectionsPerIp: 2 });
  const a = await proxiedSession(t, gw.port, v1('198.51.100.1', 1001));
  const b = await proxiedSession(t, gw.port, v2('198.51.100.1', 1002));
  const c = await RawClient.tcp(t, gw.port);
  await c.write(Buffer.concat([v1('198.51.100.1', 1003), Buffer.from('pong')]));
  await c.expectEof();
  const line = await refusalOf(t, gw.log, c.peer, 'IPC_ERR_TOO_MANY_CONNECTIONS_PER_IP');
  t.is(line['peer'], '198.51.100.1:1003', 'logged with the client address');
  await probeEcho(await proxiedSession(t, gw.port, v1('198.51.100.2', 1004)));
  await endCleanly(a);
  await gw.log.waitFor(byMsg('connection closed', '198.51.100.1:1001'), WAIT, 'teardown of a');
  await probeEcho(await proxiedSession(t, gw.port, v1('198.51.100.1', 1005)));
  await probeEcho(b);
});

test('per-IP slots come back after a refusal and after the handshake deadline', async (t) => {
  const gw = await start(t, { acceptProxy: true, maxConnectionsPerIp: 1, handshakeTimeout: 300 });
  const badName = await RawClient.tcp(t, gw.port);
  await badName.write(Buffer.concat([v1('198.51.100.5'), Buffer.from('../etc')]));
  await badName.expectEof();
  await refusalOf(t, gw.log, badName.peer, 'IPC_ERR_INVALID_SERVICE_NAME');
  const slow = await RawClient.tcp(t, gw.port);
  await slow.write(v1('198.51.100.5'));
  await slow.expectEof();
  await refusalOf(t, gw.log, slow.peer, 'IPC_ERR_HANDSHAKE_TIMEOUT');
  await probeEcho(await proxiedSession(t, gw.port, v1('198.51.100.5')));
});

test('per-IP connect rate: a burst of N, then refused with its code', async (t) => {
  const gw = await start(t, { acceptProxy: true, connectRatePerIp: 2 });
  await proxiedSession(t, gw.port, v1('198.51.100.9'));
  await proxiedSession(t, gw.port, v1('198.51.100.9'));
  const third = await RawClient.tcp(t, gw.port);
  await third.write(Buffer.concat([v1('198.51.100.9'), Buffer.from('pong')]));
  await third.expectEof();
  await refusalOf(t, gw.log, third.peer, 'IPC_ERR_CONNECT_RATE_EXCEEDED');
  await probeEcho(await proxiedSession(t, gw.port, v1('198.51.100.10')));
});

test('without --accept-proxy the TCP peer address is limited', async (t) => {
  const gw = await start(t, { maxConnectionsPerIp: 1 });
  const first = await RawClient.tcp(t, gw.port);
  await first.write(Buffer.from('pong'));
  await first.expect(Buffer.from('ok'));
  const second = await RawClient.tcp(t, gw.port);
  await second.expectEof();
  await refusalOf(t, gw.log, second.peer, 'IPC_ERR_TOO_MANY_CONNECTIONS_PER_IP');
  await probeEcho(first);
});

test('on a unix: listener per-IP limits apply only to PROXY addresses', async (t) => {
  const dir = await tempDir(t);
  const socketPath = path.join(dir, 'gw.sock');
  const plain = await start(t, { listen: [`unix:${socketPath}`], maxConnectionsPerIp: 1 });
  const clients: RawClient[] = [];
  for (let i = 0; i < 3; i++) {
    const client = await RawClient.unix(t, socketPath);
    await client.write(Buffer.from('pong'));
    await client.expect(Buffer.from('ok'));
    clients.push(client);
  }
  for (const client of clients) await probeEcho(client);
  plain.gateway.destroy();

  const proxiedPath = path.join(dir, 'gw2.sock');
  const proxied = await start(t, { listen: [`unix:${proxiedPath}`], maxConnectionsPerIp: 1, acceptProxy: true });
  const first = await RawClient.unix(t, proxiedPath);
  await first.write(Buffer.concat([v2('192.0.2.44', 1), Buffer.from('pong')]));
  await first.expect(Buffer.from('ok'));
  const second = await RawClient.unix(t, proxiedPath);
  await second.write(Buffer.concat([v2('192.0.2.44', 2), Buffer.from('pong')]));
  await second.expectEof();
  const line = await proxied.log.waitFor(byMsg('connection refused', '192.0.2.44:2'), WAIT, 'refusal');
  t.is(codeOf(line), 'IPC_ERR_TOO_MANY_CONNECTIONS_PER_IP');
  // LOCAL (no address) over Unix: not limited.
  for (let i = 0; i < 2; i++) {
    const local = await RawClient.unix(t, proxiedPath);
    await local.write(Buffer.concat([encodeProxyV2({ kind: 'local' }), Buffer.from('pong')]));
    await local.expect(Buffer.from('ok'));
    await probeEcho(local);
  }
  await probeEcho(first);
});

test('many distinct PROXY addresses: the per-IP table empties once they are gone', async (t) => {
  const gw = await start(t, { acceptProxy: true, maxConnectionsPerIp: 5, connectRatePerIp: 5 });
  const batch = 300;
  for (let i = 0; i < batch; i++) {
    const client = await RawClient.tcp(t, gw.port);
    await client.write(Buffer.concat([v2(`10.77.${i >> 8}.${i & 255}`, 1000 + i), Buffer.from('pong')]));
    await client.expect(Buffer.from('ok'));
    client.destroy();
  }
  await gw.log.waitForCount(byMsg('connection closed'), batch, 10_000, 'every teardown');
  const perIp = gw.gateway.core.perIp!;
  t.true(perIp.size <= batch);
  // Idle entries go at the next sweeps (one a second, buckets full again after one second).
  const deadline = performance.now() + 5000;
  while (perIp.size > 0 && performance.now() < deadline) await pause(100);
  t.is(perIp.size, 0);
});

// ---------------------------------------------------------------------------------------
// PROXY v2 out

test('--send-proxy-v2: tcp, tls, ws and wss outbound connections start with a v2 UNIX header the far gateway reads', async (t) => {
  const material = makeMaterial(await tempDir(t));
  const tlsFiles = { cert: material.files.cert, key: material.files.key };
  const far = {
    tcp: await start(t, { acceptProxy: true }),
    tls: await start(t, { acceptProxy: true, ...tlsFiles }, 'tls'),
    ws: await start(t, { acceptProxy: true, static: false }, 'ws'),
    wss: await start(t, { acceptProxy: true, static: false, ...tlsFiles }, 'ws'),
  };
  const kindOf = { tcp: 'tcp', tls: 'tls', ws: 'ws', wss: 'ws' } as const;
  for (const scheme of ['tcp', 'tls', 'ws', 'wss'] as const) {
    const localRundir = await tempRundir(t);
    const extra = scheme === 'tls' ? { ...tlsFiles, outboundCa: material.files.ca } : scheme === 'wss' ? { outboundCa: material.files.ca } : {};
    await start(t, { listen: [], allow: undefined, outboundOnly: true, sendProxyV2: true, ...extra }, kindOf[scheme], localRundir);
    const servicePath = path.join(localRundir, scheme);
    const local = await RawClient.unix(t, servicePath);
    await local.write(frame(`${scheme}://127.0.0.1:${far[scheme].port}/pong`));
    await local.expect(frame('ok'));
    await probeEcho(local);
    await endCleanly(local);
    const line = await far[scheme].log.waitFor(byMsg('connection closed'), WAIT, `${scheme} teardown at the far gateway`);
    t.is(line['proxy'], 'unix', scheme);
    t.is(line['proxyPath'], servicePath, scheme);
    t.regex(String(line['peer']), /^127\.0\.0\.1:\d+$/, 'the TCP peer address is kept');
  }
});

test('spawned: tcpd --outbound-only --send-proxy-v2 into tcpd --accept-proxy, whose log names the relay', async (t) => {
  const farRundir = await tempRundir(t);
  await startPongd(t, farRundir);
  const far = await startTcpd(t, farRundir, ['--listen', '127.0.0.1:0', '--allow', 'pong', '--accept-proxy', '--no-outbound']);
  const localRundir = await tempRundir(t);
  const near = spawnCli(t, 'tcpd', ['--outbound-only', '--send-proxy-v2'], { env: { RUNDIR: localRundir } });
  await near.listening((l) => l['role'] === 'outbound');
  const servicePath = path.join(localRundir, 'tcp');
  const local = await RawClient.unix(t, servicePath);
  await local.write(frame(`tcp://127.0.0.1:${far.port}/pong`));
  await local.expect(frame('ok'));
  await probeEcho(local);
  await endCleanly(local);
  const line = await far.daemon.log.waitFor(byMsg('connection closed'), WAIT, 'teardown at the far tcpd');
  t.is(line['proxy'], 'unix');
  t.is(line['proxyPath'], servicePath);
  t.is(line['service'], 'pong');
});

test('the PROXY step and per-IP admission run once per connection, not per message', async (t) => {
  const gw = await start(t, { acceptProxy: true, maxConnectionsPerIp: 10, connectRatePerIp: 10 });
  const perIp = gw.gateway.core.perIp!;
  let acquired = 0;
  const acquire = perIp.acquire.bind(perIp);
  perIp.acquire = (address: string) => {
    acquired++;
    return acquire(address);
  };
  const client = await proxiedSession(t, gw.port, v2('192.0.2.99'));
  t.is(gw.gateway.core.table.pendingCount, 0, 'switched');
  for (let i = 0; i < 200; i++) await probeEcho(client);
  await endCleanly(client);
  await gw.log.waitFor(byMsg('connection closed', '192.0.2.99:4242'), WAIT, 'teardown');
  t.is(acquired, 1);
});

/**
 * What a TLS connection keeps once switched (gateways/tls.ts, tls-material.ts), on a tlsd
 * in process: no handshake timer of Node's (the connection's one deadline bounds the
 * handshake, and a stalled handshake is still refused at it), and no client identity
 * looked up when no certificate was asked for.
 */
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import tls from 'node:tls';
import { createTlsGateway, type TlsGateway } from '../gateways/tls.js';
import { TlsMaterial } from '../gateways/tls-material.js';
import type { GatewayInput } from '../gateways/options.js';
import { ErrorCode } from '../src/errors.js';
import { byMsg, captureLogger, codeOf, type LogSink } from './helpers/log-sink.js';
import { WAIT } from './helpers/raw-client.js';
import { tempDir, tempRundir } from './helpers/rundir.js';
import { startFrameService } from './helpers/services.js';
import { clientCert, makeMaterial, type Material } from './helpers/tls-certs.js';

interface Running {
  gateway: TlsGateway;
  port: number;
  log: LogSink;
  material: Material;
  /** The server side of every TLS connection, as Node hands it over once secured. */
  secured: tls.TLSSocket[];
}

async function start(t: ExecutionContext, options: Partial<GatewayInput> = {}): Promise<Running> {
  const rundir = await tempRundir(t);
  await startFrameService(t, rundir, 'pong');
  const material = makeMaterial(await tempDir(t));
  const { logger, sink } = captureLogger();
  const gateway = createTlsGateway({
    listen: [{ host: '127.0.0.1', port: 0 }],
    allow: 'pong',
    rundir,
    logger,
    cert: material.files.cert,
    key: material.files.key,
    ...options,
  });
  const secured: tls.TLSSocket[] = [];
  gateway.material.server.on('secureConnection', (socket: tls.TLSSocket) => secured.push(socket));
  await gateway.listen();
  t.teardown(() => gateway.destroy());
  return { gateway, port: gateway.addresses[0]!.port, log: sink, material, secured };
}

async function pongSession(t: ExecutionContext, gw: Running, extra: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
  const secure = tls.connect({ host: '127.0.0.1', port: gw.port, ca: gw.material.ca.cert, servername: 'localhost', ...extra });
  t.teardown(() => secure.destroy());
  secure.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
  secure.write(Buffer.from('pong'));
  t.is((await new Promise<Buffer>((resolve) => secure.once('data', resolve))).toString(), 'ok');
  return secure;
}

test('a switched TLS connection never had a handshake timer of its own, and carries no client identity when none was asked for', async (t) => {
  const gw = await start(t);
  t.false(gw.gateway.material.requestsClientCert);
  const secure = await pongSession(t, gw);
  t.is(gw.secured.length, 1);
  // socket.timeout is set by every setTimeout() call, 0 included: undefined = never set.
  t.is(gw.secured[0]!.timeout, undefined);
  secure.end();
  const line = await gw.log.waitFor(byMsg('connection closed'), WAIT, 'teardown');
  const info = line['tls'] as Record<string, unknown>;
  t.is(typeof info['protocol'], 'string');
  t.is(typeof info['cipher'], 'string');
  t.is(info['resumed'], false);
  t.false('client' in info);
});

test('without a timer of Node\'s, a client that stalls its TLS handshake is refused at the deadline', async (t) => {
  const gw = await start(t, { handshakeTimeout: 300 });
  const raw = net.connect({ host: '127.0.0.1', port: gw.port });
  t.teardown(() => raw.destroy());
  await new Promise<void>((resolve) => raw.once('connect', resolve));
  // Half a ClientHello record header: the handshake can never complete.
  raw.write(Buffer.from([0x16, 0x03]));
  const line = await gw.log.waitFor(byMsg('connection refused'), WAIT, 'refusal');
  t.is(codeOf(line), ErrorCode.HANDSHAKE_TIMEOUT);
  await new Promise<void>((resolve) => (raw.destroyed ? resolve() : raw.once('close', () => resolve())));
  t.pass();
});

test('with a client certificate asked for, its identity is looked up and logged', async (t) => {
  const dir = await tempDir(t);
  const material = makeMaterial(dir);
  const gw = await start(t, { ca: material.files.ca, requireClientCert: true, cert: material.files.cert, key: material.files.key });
  t.true(gw.gateway.material.requestsClientCert);
  const client = clientCert(material.ca, { commonName: 'step-client' });
  const secure = await pongSession(t, gw, { ca: material.ca.cert, cert: client.cert, key: client.key });
  secure.end();
  const line = await gw.log.waitFor(byMsg('connection closed'), WAIT, 'teardown');
  const identity = (line['tls'] as { client?: { cn?: string; authorized?: boolean } }).client;
  t.is(identity?.cn, 'step-client');
  t.is(identity?.authorized, true);
});

test('TlsMaterial keeps a timer of Node\'s when given a bound (library use without a gateway deadline)', async (t) => {
  const dir = await tempDir(t);
  const material = makeMaterial(dir);
  const { logger } = captureLogger();
  const tm = new TlsMaterial({ cert: material.files.cert, key: material.files.key }, logger, 5000);
  const server = tm.server;
  const sockets: tls.TLSSocket[] = [];
  server.on('secureConnection', (s: tls.TLSSocket) => sockets.push(s));
  const listener = net.createServer((raw) => server.emit('connection', raw));
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    listener.close();
    for (const s of sockets) s.destroy();
  });
  const port = (listener.address() as net.AddressInfo).port;
  const securedOnServer = new Promise<void>((resolve) => server.once('secureConnection', () => resolve()));
  const secure = tls.connect({ host: '127.0.0.1', port, ca: material.ca.cert, servername: 'localhost' });
  t.teardown(() => secure.destroy());
  secure.on('error', () => undefined);
  await securedOnServer;
  t.is(sockets.length, 1);
  // Set at accept, cleared (0) once secured.
  t.is(sockets[0]!.timeout, 0);
});

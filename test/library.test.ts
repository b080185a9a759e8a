/**
 * The gateways as a library: the README's example (examples/web-app.mjs) run as a real
 * process importing the package by its name, and the factories' options refused by the
 * one normaliser with the option's name.
 */
import test from 'ava';
import http from 'node:http';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { LoggedProcess, childEnv, killAtTeardown, startPongd } from './helpers/daemon.js';
import { REPO_ROOT } from './helpers/paths.js';
import { tempRundir } from './helpers/rundir.js';
import { tcpSession, probeEcho } from './helpers/raw-client.js';
import { openWs } from './helpers/ws-client.js';
import { within } from './helpers/wait.js';
import { createTcpGateway, createTlsGateway, createWsGateway, createIpcd, OptionsError, encodeFrame } from '../gateways/index.js';

function get(port: number, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

test('the README example serves its own page and libipc services on one port, and a TCP gateway beside it', async (t) => {
  const rundir = await tempRundir(t);
  await startPongd(t, rundir);
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'examples', 'web-app.mjs')], {
    env: childEnv({ RUNDIR: rundir, PORT: '0' }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const app = killAtTeardown(t, new LoggedProcess('web-app', child));
  const ports = await app.log.waitFor((l) => typeof l['http'] === 'number', 15_000, 'the ports line');
  const httpPort = ports['http'] as number;

  const page = await get(httpPort, '/');
  t.is(page.status, 200);
  t.is(page.body, 'hello from the app\n', 'the application serves its own page');

  const ws = await openWs(t, `ws://127.0.0.1:${httpPort}/pong`);
  ws.ws.send(Buffer.from('through the app'));
  t.is((await ws.next()).data.toString(), 'through the app');

  const refused = (await openWs(t, `ws://127.0.0.1:${httpPort}/other`).catch((err: unknown) => err)) as { status?: number };
  t.is(refused.status, 403, 'the allow-list applies to the application server');

  await probeEcho(await tcpSession(t, ports['tcp'] as number));

  ws.ws.terminate();
  app.kill('SIGTERM');
  t.is((await app.waitExit(15_000)).code, 0);
});

test('createWsGateway({ server }): handleUpgrade applies the deadline to an upgrade the app passes and never answers', async (t) => {
  const rundir = await tempRundir(t);
  await startPongd(t, rundir);
  // noServer style: the app hands upgrades over itself.
  const gateway = createWsGateway({ allow: ['pong'], rundir, handshakeTimeout: 300 });
  const server = http.createServer((_req, res) => res.end('app\n'));
  server.on('upgrade', (req, socket, head) => {
    if (req.url === '/stall') return; // the app forgets it: the gateway never saw it
    gateway.handleUpgrade(req, socket, head);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.close();
    gateway.destroy();
  });
  const port = (server.address() as { port: number }).port;
  const ws = await openWs(t, `ws://127.0.0.1:${port}/pong`);
  ws.ws.send('hi');
  t.is((await ws.next()).data.toString(), 'hi');
  t.is(gateway.connections, 1);
  ws.ws.terminate();
  await within(
    (async () => {
      while (gateway.connections !== 0) await new Promise((r) => setTimeout(r, 10));
    })(),
    'the switch to end',
  );
});

test('the factories refuse bad options with the option name and what was expected, before anything starts', (t) => {
  const rundir = '/nonexistent-never-created';
  const cases: Array<[() => unknown, RegExp]> = [
    [() => createTcpGateway({ listen: ['127.0.0.1:0'], allow: ['pong'], maxPayload: -1, rundir }), /^maxPayload: expected an integer from 0 to 4294967295, got -1$/],
    [() => createTcpGateway({ listen: ['127.0.0.1:70000'], allow: ['pong'], rundir }), /^listen\[0\]: expected PORT, HOST:PORT, \[V6\]:PORT or unix:\/path/],
    [() => createTcpGateway({ listen: ['127.0.0.1:1', '127.0.0.1:1'], allow: ['pong'], rundir }), /^listen: expected each address once/],
    [() => createTcpGateway({ listen: [0], service: 'pong', allow: ['pong'], rundir }), /^allow: expected one of service .* not both/],
    [() => createTcpGateway({ listen: [0], rundir }), /^service: expected service NAME or allow NAMES/],
    [() => createTcpGateway({ listen: [0], allow: ['../etc'], rundir }), /^allow: expected valid service names/],
    [() => createTcpGateway({ listen: [0], allow: ['pong'], handshakeTimeout: 0, rundir }), /^handshakeTimeout: expected an integer from 1/],
    [() => createTcpGateway({ listen: [0], allow: ['pong'], cert: 'x.pem', rundir } as never), /^cert: expected an option of a tcp gateway/],
    [() => createTcpGateway({ listen: [0], allow: ['pong'], directRead: 'yes', rundir } as never), /^directRead: expected true or false, got "yes"$/],
    [() => createTlsGateway({ listen: [0], allow: ['pong'], rundir }), /^cert: expected cert and key files/],
    [() => createTlsGateway({ listen: [0], allow: ['pong'], cert: 'a', key: 'b', requireClientCert: true, rundir }), /^ca: expected a CA file/],
    [() => createWsGateway({ listen: [0], allow: ['pong'], pingInterval: 1.5, rundir }), /^pingInterval: expected an integer/],
    [() => createIpcd({ maxLookups: 0, rundir }), /^maxLookups: expected an integer from 1/],
  ];
  for (const [make, message] of cases) {
    const err = t.throws(make, { instanceOf: OptionsError });
    t.regex(err!.message, message);
  }
});

test('normalised options are frozen and complete', (t) => {
  const gateway = createTcpGateway({ listen: 8998, allow: 'pong, auth', rundir: '/tmp/x' });
  const options = gateway.core.options;
  t.true(Object.isFrozen(options));
  t.deepEqual(options.listen, [{ host: undefined, port: 8998 }]);
  t.deepEqual([...(options.allow as Set<string>)], ['pong', 'auth']);
  t.is(options.maxPayload, 99_992);
  t.deepEqual(options.outboundNames, [], 'a library gateway serves no outbound Unix service unless asked');
  t.is(encodeFrame('ok').toString('hex'), '000000026f6b', 'the core is re-exported by the main entry');
});

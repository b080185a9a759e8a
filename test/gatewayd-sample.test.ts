/**
 * The sample configuration (gatewayd.example.yaml) served end to end by one gatewayd:
 * tcp, tls, ws (with its page), the outbound tcp service, ipcd and the admin listener,
 * each reached by the clients the other tests use: Node sockets, `openssl s_client`,
 * Debian's python3-websockets, the page in headless Chromium, and a libipc lookup.
 * Only the ports change (the page's origin included); the certificate paths stay relative,
 * resolved beside the file, where the test writes fresh development certificates.
 */
import test from 'ava';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import tls from 'node:tls';
import { REPO_ROOT } from './helpers/paths.js';
import { freePort } from './helpers/ports.js';
import { spawnCli, startPongd } from './helpers/daemon.js';
import { tempDir } from './helpers/rundir.js';
import { frame, probeEcho, tcpSession } from './helpers/raw-client.js';
import { makeMaterial } from './helpers/tls-certs.js';
import { OpensslClient } from './helpers/tls-client.js';
import { pythonClient } from './helpers/ws-fixtures.js';
import { CHROMIUM, connect, openPage, sendAndRead } from './helpers/browser.js';
import { adminPort } from './helpers/admin.js';
import { connectIpc } from '../src/client.js';

const WAIT = 15_000;

// In CI a missing browser is a failure (the test would prove nothing), not a skip.
const sampleTest = existsSync(CHROMIUM) || process.env['CI'] ? test : test.skip;

sampleTest('the sample configuration serves tcp, tls, ws with its page, the outbound tcp service, ipcd and the admin listener in one process', async (t) => {
  const dir = await tempDir(t, 'sample-');
  const rundir = path.join(dir, 'run');
  await startPongd(t, rundir);
  const material = makeMaterial(dir); // dir/certs/server.pem, server-key.pem, ca.pem: what the sample names
  const wsPort = await freePort();
  const sample = readFileSync(path.join(REPO_ROOT, 'gatewayd.example.yaml'), 'utf8')
    .replace('127.0.0.1:8998', '127.0.0.1:0')
    .replace('127.0.0.1:8999', '127.0.0.1:0')
    .replace('127.0.0.1:9100', '127.0.0.1:0')
    .replaceAll('127.0.0.1:8080', `127.0.0.1:${wsPort}`);
  const file = path.join(dir, 'gatewayd.yaml');
  writeFileSync(file, sample);
  const daemon = spawnCli(t, 'gatewayd', ['--config', file], { env: { RUNDIR: rundir } });
  await daemon.log.waitFor((l) => l.msg === 'gatewayd started', WAIT, 'gatewayd started');
  const portOf = (transport: string) => daemon.log.lines.find((l) => l.msg === 'listening' && l['transport'] === transport)!['port'] as number;

  // tcp: a Node socket.
  const tcpClient = await tcpSession(t, portOf('tcp'));
  await probeEcho(tcpClient);

  // tls: a Node TLS socket verifying the certificate, and openssl s_client.
  const secure = tls.connect({ host: '127.0.0.1', port: portOf('tls'), ca: readFileSync(material.files.ca) });
  secure.on('error', () => undefined);
  await once(secure, 'secureConnect');
  secure.write('pong');
  const [ok] = (await once(secure, 'data')) as [Buffer];
  t.is(ok.toString(), 'ok');
  secure.write(frame('over tls'));
  const [echoed] = (await once(secure, 'data')) as [Buffer];
  t.deepEqual(echoed, frame('over tls'));
  secure.end();
  const openssl = new OpensslClient(t, ['-connect', `127.0.0.1:${portOf('tls')}`, '-CAfile', material.files.ca, '-verify_return_error', '-quiet']);
  await openssl.write(Buffer.from('pong'));
  await openssl.expect(Buffer.from('ok'));
  await openssl.write(frame('from openssl'));
  await openssl.expect(frame('from openssl'));
  await openssl.stop();

  // ws: python3-websockets, then the page in Chromium (same origin as configured).
  const origin = `http://127.0.0.1:${wsPort}`;
  const python = await pythonClient(t, [`ws://127.0.0.1:${wsPort}/pong`, 'from python', '--origin', origin]);
  t.is(python.code, 0, JSON.stringify(python.record));
  t.deepEqual(python.record, { event: 'reply', type: 'binary', data: 'from python' });
  const { page, failedLoads } = await openPage(t);
  await page.goto(`${origin}/`);
  t.is(await connect(page, 'pong'), 'connected to pong');
  t.is(await sendAndRead(page, 'from chromium', 0), 'from chromium');
  t.deepEqual(failedLoads, []);

  // ipcd: a lookup answered with a connected descriptor.
  const found = await connectIpc('pong', { rundir, network: 'pong unix://pong' });
  found.destroy();
  t.truthy(daemon.log.lines.find((l) => l.msg === 'listening' && l['role'] === 'outbound' && l['service'] === 'tcp'));

  // The admin listener: ready (pong answers), and the traffic is counted.
  const admin = await adminPort(daemon);
  t.is((await fetch(`http://127.0.0.1:${admin}/readyz`)).status, 200);

  tcpClient.socket.end();
  await page.close();
  daemon.kill('SIGTERM');
  t.is((await daemon.waitExit(WAIT)).code, 0);
});

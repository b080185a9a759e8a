/**
 * tlsd: TLS termination in front of local libipc services. Real TLS on loopback, tlsd and
 * our pongd spawned from dist/ with a temporary RUNDIR and an ephemeral port per test,
 * certificates generated in the test with src/certs.ts. Clients: Node's tls (over a TCP
 * socket the test owns), plain TCP, and Debian's `openssl s_client`.
 */
import test, { type ExecutionContext } from 'ava';
import { readdirSync, writeFileSync, lstatSync } from 'node:fs';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { ErrorCode } from '../src/errors.js';
import { identityProblem } from '../gateways/tls-material.js';
import {
  clientCert,
  createCa,
  createServerCertificate,
  fingerprint,
  makeMaterial,
  replaceFile,
  serial,
  type Material,
} from './helpers/tls-certs.js';
import { OpensslClient, TcpClient, TlsClient, frame, type TlsClientOptions } from './helpers/tls-client.js';
import { WAIT, limiter, spawnNode, startPongd, startTlsd, type Line, type Proc, type Tlsd } from './helpers/tls-daemon.js';
import { tempDirSync } from './helpers/rundir.js';

const BOUNCE = 'bounce me';

/** Each test spawns pongd and tlsd: this many tests run at once. */
const slot = limiter(4);

/** A test run in a slot. */
function tlsTest(title: string, body: (t: ExecutionContext) => Promise<void>): void {
  test(title, (t) => slot(() => body(t)));
}

interface Env {
  dir: string;
  rundir: string;
  material: Material;
  pongd: Proc;
  tlsd: Tlsd;
  port: number;
  /** Client options that verify tlsd's certificate against the test CA. */
  trust: TlsClientOptions;
  /** A Node TLS client that completed its handshake. */
  connect: (options?: TlsClientOptions) => Promise<TlsClient>;
}

/**
 * pongd serving `pong` and tlsd with the test's certificate, `--no-outbound` and `args`
 * (default `--service pong`).
 */
function start(t: ExecutionContext, args: readonly string[] = ['--service', 'pong']): Promise<Env> {
  return startWith(t, () => args);
}

/** start() whose arguments depend on the generated material (its file paths). */
async function startWith(t: ExecutionContext, args: (material: Material) => readonly string[]): Promise<Env> {
  const dir = tempDirSync(t, 'tlsd-');
  const rundir = path.join(dir, 'run');
  const material = makeMaterial(dir);
  const pongd = await startPongd(t, rundir);
  const tlsd = await startTlsd(t, rundir, [...material.args, '--no-outbound', ...args(material)]);
  const trust: TlsClientOptions = { ca: material.ca.cert };
  return {
    dir,
    rundir,
    material,
    pongd,
    tlsd,
    port: tlsd.port,
    trust,
    connect: (options = {}) => TlsClient.connect(t, tlsd.port, { ...trust, ...options }),
  };
}

const closedFor =
  (peer: string) =>
  (l: Line): boolean =>
    l.msg === 'connection closed' && l['peer'] === peer;
const refusedFor =
  (peer: string) =>
  (l: Line): boolean =>
    l.msg === 'connection refused' && l['peer'] === peer;

/** tlsd's teardown line for `client`. */
function closedLine(env: Env, client: { peer: string }): Promise<Line> {
  return env.tlsd.proc.waitFor(closedFor(client.peer), `'connection closed' for ${client.peer}`);
}

/** tlsd's refusal line for `client`. */
function refusedLine(env: Env, client: { peer: string }): Promise<Line> {
  return env.tlsd.proc.waitFor(refusedFor(client.peer), `'connection refused' for ${client.peer}`);
}

function tlsOf(line: Line): Record<string, unknown> {
  return (line['tls'] ?? {}) as Record<string, unknown>;
}

/** A client that must be refused: no application byte, then the end; returns tlsd's line. */
async function expectRefused(t: ExecutionContext, env: Env, client: TlsClient | TcpClient, code: string): Promise<Line> {
  await client.expectEnd();
  t.is(client.received, 0, 'no application byte before the close');
  const line = await refusedLine(env, client);
  t.is(line['code'], code, String(line['reason']));
  return line;
}

/**
 * True when a client that should be refused gets its echo instead (so a test showing a
 * bug fails at once instead of waiting for a close that never comes).
 */
async function servedAnyway(client: TlsClient): Promise<boolean> {
  try {
    await client.secure();
    await client.echo(BOUNCE);
    return true;
  } catch {
    return false;
  }
}

/** Logs why tlsd refused `client` (for the tests that show a bug). */
async function logRefusal(t: ExecutionContext, env: Env, client: { peer: string }): Promise<void> {
  const line = await refusedLine(env, client).catch(() => undefined);
  if (line) t.log(`tlsd refused it: ${String(line['reason'])}`);
}

/**
 * Asserts how many connections pongd accepted: waits (bounded) for `count` of its
 * `connection` lines, which travel on another pipe than the echo, then checks there are
 * no more. A count of 0 is checked on what pongd logged so far.
 */
async function expectServiceConnections(t: ExecutionContext, env: Env, count: number, message?: string): Promise<void> {
  const isConnection = (l: Line) => l.msg === 'connection';
  if (count > 0) await env.pongd.waitForCount(isConnection, count, 'pongd connection lines');
  t.is(env.pongd.filter(isConnection).length, count, message);
}

/** tlsd still serves: a fresh client gets its echo. */
async function stillServes(env: Env, options: TlsClientOptions = {}): Promise<void> {
  const client = await env.connect(options);
  await client.echo('still serving');
  await client.close();
}

// --- Serving --------------------------------------------------------------------------

tlsTest('echoes frames to a fixed service through TLS and logs the TLS facts at teardown', async (t) => {
  const env = await start(t);
  const client = await env.connect();
  t.true(client.socket.authorized, 'the server certificate verifies against the test CA for 127.0.0.1');
  await client.echo(BOUNCE);
  // The original's largest payload: several TLS records each way.
  await client.echo(Buffer.alloc(99_992, 0x5a));
  await client.close();
  const line = await closedLine(env, client);
  t.is(line['service'], 'pong');
  t.is(line['messagesIn'], 2);
  t.is(line['messagesOut'], 2);
  t.like(tlsOf(line), { protocol: 'TLSv1.3', resumed: false });
  t.is(typeof tlsOf(line)['cipher'], 'string');
});

tlsTest('with --allow, answers raw ok inside TLS to a named service, then echoes', async (t) => {
  const env = await start(t, ['--allow', 'pong']);
  const client = await env.connect();
  await client.write(Buffer.from('pong'));
  await client.expect(Buffer.from('ok'));
  await client.echo(BOUNCE);
  await client.close();
  t.is((await closedLine(env, client))['service'], 'pong');
});

tlsTest('keeps a frame that follows the service name in the same TLS record', async (t) => {
  const env = await start(t, ['--allow', 'pong']);
  const client = await env.connect();
  const bounce = frame(BOUNCE);
  // One write of less than 16 KiB: one TLS record holding the name and the frame.
  await client.write(Buffer.concat([Buffer.from('pong'), bounce]));
  await client.expect(Buffer.concat([Buffer.from('ok'), bounce]));
  await client.close();
  t.is((await closedLine(env, client))['messagesIn'], 1);
});

tlsTest('serves openssl s_client, which verifies the certificate for 127.0.0.1', async (t) => {
  const env = await start(t);
  const openssl = new OpensslClient(t, [
    '-connect',
    `127.0.0.1:${env.port}`,
    '-CAfile',
    env.material.files.ca,
    '-verify_return_error',
    '-verify_ip',
    '127.0.0.1',
    '-quiet',
  ]);
  const bounce = frame(BOUNCE);
  await openssl.write(bounce);
  await openssl.expect(bounce);
  await openssl.stop();
  const line = await env.tlsd.proc.waitFor((l) => l.msg === 'connection closed', 'teardown of the s_client connection');
  t.is(line['messagesIn'], 1);
  t.is(tlsOf(line)['protocol'], 'TLSv1.3');
});

// --- Versions and sessions ------------------------------------------------------------

tlsTest('refuses TLS 1.0 and 1.1 clients by default, logs why, and keeps serving', async (t) => {
  const env = await start(t);
  for (const version of ['TLSv1', 'TLSv1.1'] as const) {
    // SECLEVEL=0: without it the client itself would refuse to offer these versions.
    const old = { minVersion: version, maxVersion: version, ciphers: 'DEFAULT@SECLEVEL=0' };
    const client = new TlsClient(t, env.port, { ...env.trust, ...old });
    const line = await expectRefused(t, env, client, ErrorCode.HANDSHAKE_REFUSED);
    t.false(client.secured, version);
    t.regex(String(client.error?.message), /protocol version/);
    t.regex(String(line['reason']), /unsupported protocol/);
  }
  const openssl = new OpensslClient(t, [
    '-connect',
    `127.0.0.1:${env.port}`,
    '-tls1_1',
    '-cipher',
    'DEFAULT@SECLEVEL=0',
    '-quiet',
  ]);
  const exit = await openssl.waitExit();
  t.not(exit.code, 0);
  t.is(openssl.received, 0);
  t.regex(openssl.stderr, /protocol version/);
  await env.tlsd.proc.waitForCount((l) => l.msg === 'connection refused', 3, 'three refusals');
  await stillServes(env, { maxVersion: 'TLSv1.2' });
  await expectServiceConnections(t, env, 1, 'only the served client reached pongd');
});

tlsTest('--min-version TLSv1.3 refuses a TLS 1.2 client', async (t) => {
  const env = await start(t, ['--service', 'pong', '--min-version', 'TLSv1.3']);
  const old = new TlsClient(t, env.port, { ...env.trust, maxVersion: 'TLSv1.2' });
  await expectRefused(t, env, old, ErrorCode.HANDSHAKE_REFUSED);
  await stillServes(env);
});

/*
 * OpenSSL 3 at Node's default security level forbids the SHA-1 signatures TLS < 1.2
 * needs; tlsd lowers the level only when --min-version asks for TLS 1.0/1.1.
 */
tlsTest('--min-version TLSv1.1 serves a TLS 1.1 client', async (t) => {
  const env = await start(t, ['--service', 'pong', '--min-version', 'TLSv1.1']);
  const old = { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } as const;
  const client = new TlsClient(t, env.port, { ...env.trust, ...old });
  if (!(await servedAnyway(client))) {
    await logRefusal(t, env, client);
    t.fail('the TLS 1.1 client was refused');
    return;
  }
  t.is(client.socket.getProtocol(), 'TLSv1.1');
});

for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
  tlsTest(`resumes a ${version} session from a previous connection`, async (t) => {
    const env = await start(t);
    const pinned: TlsClientOptions = { minVersion: version, maxVersion: version };
    const first = await env.connect(pinned);
    await first.echo('first');
    const session = await first.session();
    t.false(first.socket.isSessionReused());
    await first.close();

    const second = await env.connect({ ...pinned, session });
    t.true(second.socket.isSessionReused());
    t.is(second.socket.getProtocol(), version);
    await second.echo('resumed');
    await second.close();
    t.like(tlsOf(await closedLine(env, first)), { protocol: version, resumed: false });
    t.like(tlsOf(await closedLine(env, second)), { protocol: version, resumed: true });
  });
}

// --- Client certificates --------------------------------------------------------------

/** start() with `--service pong --ca <test CA>` and `more`. */
function startMtls(t: ExecutionContext, ...more: string[]): Promise<Env> {
  return startWith(t, (material) => ['--service', 'pong', '--ca', material.files.ca, ...more]);
}

tlsTest('--require-client-cert refuses a client without a certificate', async (t) => {
  const env = await startMtls(t, '--require-client-cert');
  const client = new TlsClient(t, env.port, env.trust);
  const line = await expectRefused(t, env, client, ErrorCode.HANDSHAKE_REFUSED);
  t.regex(String(line['reason']), /certificate/);
  await expectServiceConnections(t, env, 0, 'pongd never saw the client');
});

tlsTest('--require-client-cert refuses a client certificate signed by another CA', async (t) => {
  const env = await startMtls(t, '--require-client-cert');
  const stranger = clientCert(createCa({ commonName: 'another CA' }), { commonName: 'alice' });
  const client = new TlsClient(t, env.port, { ...env.trust, cert: stranger.cert, key: stranger.key });
  if (await servedAnyway(client)) {
    t.fail('a certificate from another CA reached the service and got its echo');
    return;
  }
  const line = await expectRefused(t, env, client, ErrorCode.HANDSHAKE_REFUSED);
  t.regex(String(line['reason']), /not trusted/);
  t.like(tlsOf(line)['client'], { cn: 'alice', authorized: false });
  await expectServiceConnections(t, env, 0, 'pongd never saw the client');
});

tlsTest('--require-client-cert serves a client with a good certificate and logs its CN', async (t) => {
  const env = await startMtls(t, '--require-client-cert');
  const alice = clientCert(env.material.ca, { commonName: 'alice' });
  const client = await env.connect({ cert: alice.cert, key: alice.key });
  await client.echo(BOUNCE);
  await client.close();
  const line = await closedLine(env, client);
  t.like(tlsOf(line)['client'], { cn: 'alice', authorized: true });
});

tlsTest('--allow-cn refuses a good certificate with an unlisted CN and serves a listed one', async (t) => {
  const env = await startMtls(t, '--require-client-cert', '--allow-cn', 'alice,carol');
  const bob = clientCert(env.material.ca, { commonName: 'bob' });
  const refused = new TlsClient(t, env.port, { ...env.trust, cert: bob.cert, key: bob.key });
  const line = await expectRefused(t, env, refused, ErrorCode.HANDSHAKE_REFUSED);
  t.regex(String(line['reason']), /CN bob/);
  t.like(tlsOf(line)['client'], { cn: 'bob', authorized: true });

  const carol = clientCert(env.material.ca, { commonName: 'carol' });
  const served = await env.connect({ cert: carol.cert, key: carol.key });
  await served.echo(BOUNCE);
  await served.close();
  t.like(tlsOf(await closedLine(env, served))['client'], { cn: 'carol', authorized: true });
  await expectServiceConnections(t, env, 1, 'only carol reached pongd');
});

tlsTest('--allow-cn without --require-client-cert refuses no certificate and a listed CN from another CA', async (t) => {
  const env = await startMtls(t, '--allow-cn', 'alice');
  const none = new TlsClient(t, env.port, env.trust);
  t.regex(String((await expectRefused(t, env, none, ErrorCode.HANDSHAKE_REFUSED))['reason']), /no client certificate/);

  const forged = clientCert(createCa(), { commonName: 'alice' });
  const stranger = new TlsClient(t, env.port, { ...env.trust, cert: forged.cert, key: forged.key });
  t.regex(String((await expectRefused(t, env, stranger, ErrorCode.HANDSHAKE_REFUSED))['reason']), /not trusted/);
  await expectServiceConnections(t, env, 0);

  const alice = clientCert(env.material.ca, { commonName: 'alice' });
  const served = await env.connect({ cert: alice.cert, key: alice.key });
  await served.echo(BOUNCE);
  await served.close();
  await expectServiceConnections(t, env, 1);
});

tlsTest('--allow-san serves a certificate with a listed DNS SAN and refuses an unlisted one', async (t) => {
  const env = await startMtls(t, '--require-client-cert', '--allow-san', 'DNS:alice.example');
  const other = clientCert(env.material.ca, { commonName: 'x', dnsNames: ['bob.example'] });
  const refused = new TlsClient(t, env.port, { ...env.trust, cert: other.cert, key: other.key });
  t.regex(String((await expectRefused(t, env, refused, ErrorCode.HANDSHAKE_REFUSED))['reason']), /bob\.example/);

  const alice = clientCert(env.material.ca, { commonName: 'x', dnsNames: ['alice.example'] });
  const served = await env.connect({ cert: alice.cert, key: alice.key });
  await served.echo(BOUNCE);
  await served.close();
  t.like(tlsOf(await closedLine(env, served))['client'], { san: ['DNS:alice.example'] });
});

/*
 * Node spells an IP SAN `IP Address:10.1.2.3` (IPv6 expanded: `IP Address:0:0:0:0:0:0:0:1`);
 * --allow-san takes `IP:x` or a bare address, IPv6 in any form. Shown on identityProblem
 * itself, with the SAN string Node gives for a generated certificate, then end to end.
 */
test('--allow-san matches IP SANs given as IP:10.1.2.3 or ::1', (t) => {
  const ca = createCa();
  const device = clientCert(ca, { commonName: 'device', ipAddresses: ['10.1.2.3', '::1'] });
  const sanText = new X509Certificate(device.cert).subjectAltName ?? '';
  t.log(`SAN as Node gives it: ${sanText}`);
  const identity = { cn: 'device', san: sanText.split(', '), authorized: true };
  const settings = { cert: 'unused', key: 'unused' };
  t.is(identityProblem(identity, { ...settings, allowSan: ['IP:10.1.2.3'] }), null);
  t.is(identityProblem(identity, { ...settings, allowSan: ['::1'] }), null);
});

tlsTest('--allow-san IP:10.1.2.3 serves a client certificate with that IP SAN', async (t) => {
  const env = await startMtls(t, '--require-client-cert', '--allow-san', 'IP:10.1.2.3');
  const device = clientCert(env.material.ca, { commonName: 'device', ipAddresses: ['10.1.2.3'] });
  const client = new TlsClient(t, env.port, { ...env.trust, cert: device.cert, key: device.key });
  const served = await servedAnyway(client);
  if (!served) await logRefusal(t, env, client);
  t.true(served, 'the listed IP SAN was served');
});

// --- Reloading ------------------------------------------------------------------------

tlsTest('SIGHUP reloads: an open connection keeps echoing, a new one sees the new certificate', async (t) => {
  const env = await start(t);
  const oldFingerprint = fingerprint(env.material.server.cert);
  const before = await env.connect();
  t.is(before.serverCertificate.fingerprint256, oldFingerprint);
  await before.echo('before');

  const next = createServerCertificate(env.material.ca);
  replaceFile(env.material.files.cert, next.cert);
  replaceFile(env.material.files.key, next.key);
  env.tlsd.proc.kill('SIGHUP');
  const reloaded = await env.tlsd.proc.waitFor((l) => l.msg === 'tls material reloaded', 'reload');
  t.is((reloaded['certificate'] as Record<string, unknown>)['fingerprint256'], fingerprint(next.cert));

  await before.echo('after the reload, same connection');
  const after = await env.connect();
  t.is(after.serverCertificate.fingerprint256, fingerprint(next.cert));
  t.not(after.serverCertificate.serialNumber, before.serverCertificate.serialNumber);
  t.is(after.serverCertificate.serialNumber, serial(next.cert));
  await after.echo('new certificate');
  await after.close();
  await before.close();
  t.true(env.tlsd.proc.running, 'SIGHUP does not stop tlsd');
});

tlsTest('SIGHUP with an expired certificate is refused and logged; the old one stays until a valid one comes', async (t) => {
  const env = await start(t);
  const oldFingerprint = fingerprint(env.material.server.cert);
  const open = await env.connect();
  const day = 86_400_000;
  const expired = createServerCertificate(env.material.ca, {
    notBefore: new Date(Date.now() - 3 * day),
    notAfter: new Date(Date.now() - day),
  });
  replaceFile(env.material.files.cert, expired.cert);
  replaceFile(env.material.files.key, expired.key);
  env.tlsd.proc.kill('SIGHUP');
  const refused = await env.tlsd.proc.waitFor((l) => String(l.msg).startsWith('tls reload refused'), 'reload refusal');
  t.regex(String(refused['reason']), /expired/);

  const fresh = await env.connect();
  t.is(fresh.serverCertificate.fingerprint256, oldFingerprint, 'new connections still get the old certificate');
  await fresh.echo('old certificate still served');
  await open.echo('open connection untouched');

  const good = createServerCertificate(env.material.ca);
  replaceFile(env.material.files.cert, good.cert);
  replaceFile(env.material.files.key, good.key);
  env.tlsd.proc.kill('SIGHUP');
  await env.tlsd.proc.waitFor((l) => l.msg === 'tls material reloaded', 'reload of the valid certificate');
  const later = await env.connect();
  t.is(later.serverCertificate.fingerprint256, fingerprint(good.cert));
  await later.echo('new certificate');
});

tlsTest('SIGHUP with a key that does not match, or an unreadable certificate, is refused; the old one stays', async (t) => {
  const env = await start(t);
  const oldFingerprint = fingerprint(env.material.server.cert);
  // A new certificate, the old key left in place.
  replaceFile(env.material.files.cert, createServerCertificate(env.material.ca).cert);
  env.tlsd.proc.kill('SIGHUP');
  const mismatch = await env.tlsd.proc.waitFor((l) => String(l.msg).startsWith('tls reload refused'), 'reload refusal');
  t.regex(String(mismatch['reason']), /does not match/);
  const first = await env.connect();
  t.is(first.serverCertificate.fingerprint256, oldFingerprint);
  await first.echo(BOUNCE);

  // A certificate file cut in the middle.
  replaceFile(env.material.files.cert, env.material.server.cert.slice(0, 200));
  env.tlsd.proc.kill('SIGHUP');
  await env.tlsd.proc.waitForCount((l) => String(l.msg).startsWith('tls reload refused'), 2, 'second reload refusal');
  const second = await env.connect();
  t.is(second.serverCertificate.fingerprint256, oldFingerprint);
  await second.echo(BOUNCE);
  t.is(env.tlsd.proc.filter((l) => l.msg === 'tls material reloaded').length, 0);
});

tlsTest('SIGHUP reloads the client CA: a certificate from a newly trusted CA is served only after it', async (t) => {
  const env = await startMtls(t, '--require-client-cert');
  const newCa = createCa({ commonName: 'second CA' });
  const dave = clientCert(newCa, { commonName: 'dave' });
  const before = new TlsClient(t, env.port, { ...env.trust, cert: dave.cert, key: dave.key });
  if (await servedAnyway(before)) {
    t.fail('a certificate from a CA not trusted yet reached the service and got its echo');
    return;
  }
  await expectRefused(t, env, before, ErrorCode.HANDSHAKE_REFUSED);

  replaceFile(env.material.files.ca, env.material.ca.cert + newCa.cert);
  env.tlsd.proc.kill('SIGHUP');
  await env.tlsd.proc.waitFor((l) => l.msg === 'tls material reloaded', 'reload');
  const after = await env.connect({ cert: dave.cert, key: dave.key });
  await after.echo(BOUNCE);
  await after.close();
  t.like(tlsOf(await closedLine(env, after))['client'], { cn: 'dave', authorized: true });
  const alice = clientCert(env.material.ca, { commonName: 'alice' });
  await stillServes(env, { cert: alice.cert, key: alice.key });
});

tlsTest('--watch-certs reloads when the files are replaced', async (t) => {
  const env = await start(t, ['--service', 'pong', '--watch-certs']);
  const open = await env.connect();
  await open.echo('before');
  const next = createServerCertificate(env.material.ca);
  replaceFile(env.material.files.cert, next.cert);
  replaceFile(env.material.files.key, next.key);
  // A reload may run between the two renames (and be refused): wait for the one that took both.
  const want = fingerprint(next.cert);
  await env.tlsd.proc.waitFor(
    (l) => l.msg === 'tls material reloaded' && (l['certificate'] as Record<string, unknown>)['fingerprint256'] === want,
    'reload of the new certificate',
  );
  const after = await env.connect();
  t.is(after.serverCertificate.fingerprint256, want);
  await after.echo('new certificate');
  await open.echo('open connection untouched');
});

// --- Bad input ------------------------------------------------------------------------

tlsTest('closes a plain TCP client that speaks libipc to the TLS port, logs it, and keeps serving', async (t) => {
  const env = await start(t, ['--allow', 'pong']);
  const plain = await TcpClient.connect(t, env.port);
  await plain.write(Buffer.concat([Buffer.from('pong'), frame(BOUNCE)]));
  const line = await expectRefused(t, env, plain, ErrorCode.HANDSHAKE_REFUSED);
  t.regex(String(line['reason']), /TLS handshake failed/);
  const client = await env.connect();
  await client.write(Buffer.from('pong'));
  await client.expect(Buffer.from('ok'));
  await client.echo(BOUNCE);
  await expectServiceConnections(t, env, 1);
});

tlsTest('closes clients that stall in the TLS handshake after --handshake-timeout, serving another meanwhile', async (t) => {
  // The stalled clients' timeout is the upper bound for the other client's echo.
  const env = await start(t, ['--service', 'pong', '--handshake-timeout', '5000']);
  const silent = await TcpClient.connect(t, env.port);
  const partial = await TcpClient.connect(t, env.port);
  // A handshake record announcing a 512-byte ClientHello, cut after 10 bytes of it.
  await partial.write(Buffer.from('1603010200' + '010001fc0303' + '00'.repeat(4), 'hex'));

  const served = await env.connect();
  await served.echo(BOUNCE);
  t.false(silent.finished || partial.finished, 'the stalled clients were still waiting while another was served');

  for (const stalled of [silent, partial]) {
    const line = await expectRefused(t, env, stalled, ErrorCode.HANDSHAKE_TIMEOUT);
    t.regex(String(line['reason']), /TLS handshake not finished within 5000 ms/);
  }
  await served.echo('after the timeouts');
  await served.close();
});

tlsTest('closes at once a client that half-closes in the middle of its TLS handshake (not at the deadline)', async (t) => {
  // A deadline far beyond the wait: a refusal seen in time is not the timeout.
  const env = await start(t, ['--service', 'pong', '--handshake-timeout', '60000']);
  const client = await TcpClient.connect(t, env.port);
  await client.write(Buffer.from('1603010200' + '010001fc0303' + '00'.repeat(4), 'hex'));
  client.socket.end();
  const line = await expectRefused(t, env, client, ErrorCode.HANDSHAKE_ABORTED);
  t.regex(String(line['reason']), /closed during the TLS handshake/);
  await stillServes(env);
});

tlsTest('with --allow, closes a client that finishes TLS but never names a service after --handshake-timeout', async (t) => {
  const env = await start(t, ['--allow', 'pong', '--handshake-timeout', '1000']);
  const client = await env.connect();
  const line = await expectRefused(t, env, client, ErrorCode.HANDSHAKE_TIMEOUT);
  t.regex(String(line['reason']), /within 1000 ms/);
  await expectServiceConnections(t, env, 0);
});

tlsTest('logs the teardown of clients that drop TCP without close_notify (FIN mid-frame, RST) and keeps serving', async (t) => {
  const env = await start(t);
  const finClient = await env.connect();
  const rstClient = await env.connect();
  await finClient.echo(BOUNCE);
  await rstClient.echo(BOUNCE);
  // Half a frame, then the TCP socket under TLS is destroyed: FIN, no close_notify.
  await finClient.write(frame('x'.repeat(100)).subarray(0, 50));
  finClient.raw.destroy();
  rstClient.raw.resetAndDestroy();

  const fin = await closedLine(env, finClient);
  t.is(fin['code'], ErrorCode.TRUNCATED_FRAME, String(fin['reason']));
  t.is(fin['messagesIn'], 1);
  t.is(fin['endedBy'], 'client');
  const rst = await closedLine(env, rstClient);
  t.is(rst['code'], 'ECONNRESET', String(rst['reason']));
  t.is(rst['messagesIn'], 1);
  t.is(rst['endedBy'], 'client');
  // Both service legs are closed too.
  await env.pongd.waitForCount((l) => l.msg === 'disconnection', 2, 'pongd disconnections');
  await stillServes(env);
});

tlsTest('closes only the connection that sends a frame larger than --max-payload', async (t) => {
  const env = await start(t, ['--service', 'pong', '--max-payload', '1000']);
  const bystander = await env.connect();
  await bystander.echo(Buffer.alloc(1000, 1));
  const offender = await env.connect();
  const header = Buffer.alloc(4);
  header.writeUInt32BE(1001);
  await offender.write(Buffer.concat([header, Buffer.alloc(1001, 2)]));
  await offender.expectEnd();
  t.is(offender.received, 0);
  const line = await closedLine(env, offender);
  t.is(line['code'], ErrorCode.PAYLOAD_TOO_LARGE);
  await bystander.echo(Buffer.alloc(1000, 3));
  await bystander.close();
  await stillServes(env);
});

tlsTest('refuses unknown, unlisted and malformed names inside TLS without a byte', async (t) => {
  const env = await start(t, ['--allow', 'pong,absent']);
  const cases: Array<[string, string]> = [
    ['absent', ErrorCode.SERVICE_UNAVAILABLE],
    ['other', ErrorCode.SERVICE_NOT_ALLOWED],
    ['../x', ErrorCode.INVALID_SERVICE_NAME],
    ['../run/pong', ErrorCode.INVALID_SERVICE_NAME],
    ['pong\n', ErrorCode.INVALID_SERVICE_NAME],
  ];
  for (const [name, code] of cases) {
    const client = await env.connect();
    await client.write(Buffer.from(name, 'latin1'));
    const line = await expectRefused(t, env, client, code);
    t.is(line['service'], name, JSON.stringify(name));
  }
  await expectServiceConnections(t, env, 0, 'no refused name reached pongd');
  const good = await env.connect();
  await good.write(Buffer.from('pong'));
  await good.expect(Buffer.from('ok'));
  await good.echo(BOUNCE);
});

// --- The daemon -----------------------------------------------------------------------

tlsTest('spawned tlsd serves TLS and its outbound tls service, exits 0 on SIGTERM and removes its socket files', async (t) => {
  const dir = tempDirSync(t, 'tlsd-');
  const rundir = path.join(dir, 'run');
  const material = makeMaterial(dir);
  const pongd = await startPongd(t, rundir);
  const tlsd = await startTlsd(t, rundir, [...material.args, '--service', 'pong']);
  const outbound = await tlsd.proc.waitFor((l) => l.msg === 'listening' && l['role'] === 'outbound', 'outbound listening');
  t.is(outbound['path'], path.join(rundir, 'tls'));
  t.true(lstatSync(path.join(rundir, 'tls')).isSocket());

  const client = await TlsClient.connect(t, tlsd.port, { ca: material.ca.cert });
  await client.echo(BOUNCE);
  await client.close();
  await tlsd.proc.waitFor((l) => l.msg === 'connection closed', 'teardown');

  tlsd.proc.kill('SIGTERM');
  const exit = await tlsd.proc.waitExit();
  t.deepEqual(exit, { code: 0, signal: null });
  t.deepEqual(
    readdirSync(rundir).filter((f) => f.startsWith('tls')),
    [],
    'no socket or lock file of tlsd left',
  );
  t.true(pongd.running);
});

tlsTest('refuses to start with an expired certificate, a mismatched key, or client checks without --ca', async (t) => {
  const dir = tempDirSync(t, 'tlsd-');
  const rundir = path.join(dir, 'run');
  const material = makeMaterial(dir);
  const day = 86_400_000;
  const expired = createServerCertificate(material.ca, {
    notBefore: new Date(Date.now() - 3 * day),
    notAfter: new Date(Date.now() - day),
  });
  const expiredCert = path.join(dir, 'expired.pem');
  const expiredKey = path.join(dir, 'expired-key.pem');
  writeFileSync(expiredCert, expired.cert);
  writeFileSync(expiredKey, expired.key);
  const cases: Array<[string[], RegExp]> = [
    [['--cert', expiredCert, '--key', expiredKey], /expired/],
    [['--cert', material.files.cert, '--key', expiredKey], /does not match/],
    [[...material.args, "--require-client-cert"], /--ca/],
  ];
  for (const [args, why] of cases) {
    const proc = spawnNode(t, 'tlsd', ['--listen', '127.0.0.1:0', '--service', 'pong', '--no-outbound', ...args], rundir);
    const exit = await proc.waitExit(WAIT * 2);
    t.is(exit.code, 1, proc.dump());
    t.regex(proc.stderr, why);
    t.is(proc.filter((l) => l.msg === 'listening').length, 0);
  }
});

import test from 'ava';
import tls from 'node:tls';
import net from 'node:net';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import {
  createCa,
  createClientCertificate,
  createServerCertificate,
  type CertificateAndKey,
  type KeyType,
} from '../src/certs.js';
import { tempDirSync } from './helpers/rundir.js';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const genCerts = path.join(root, 'scripts/gen-certs.ts');
const FILES = ['ca.pem', 'ca-key.pem', 'server.pem', 'server-key.pem', 'client.pem', 'client-key.pem'];

/** True when the machine can listen on the IPv6 loopback. */
function hasIpv6Loopback(): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(0, '::1', () => server.close(() => resolve(true)));
  });
}
const ipv6 = await hasIpv6Loopback();

interface Handshake {
  /** The client's error code, null when it verified the server and read to the end. */
  client: string | null;
  /** What the client read: the server writes `ok` once it accepted the handshake. */
  received: string;
  /** The server's `tlsClientError` code, null when none. */
  server: string | null;
  /** CN of the client certificate the server accepted. */
  clientCn?: string;
  /** The server's verdict on the client certificate (requestCert without rejecting). */
  authorizationError?: string;
}

/** One TLS handshake on a real loopback socket; resolves once both sides are done. */
async function handshake(
  t: { teardown(fn: () => void): void },
  serverOptions: tls.TlsOptions,
  clientOptions: tls.ConnectionOptions,
  host = '127.0.0.1',
): Promise<Handshake> {
  const result: Handshake = { client: null, received: '', server: null };
  let serverDone!: () => void;
  const serverVerdict = new Promise<void>((resolve) => (serverDone = resolve));
  const server = tls.createServer({ rejectUnauthorized: serverOptions.requestCert === true, ...serverOptions });
  server.on('secureConnection', (socket) => {
    socket.on('error', () => {});
    const cn = socket.getPeerCertificate().subject?.CN;
    if (typeof cn === 'string') result.clientCn = cn;
    if (socket.authorizationError) result.authorizationError = String(socket.authorizationError);
    socket.end('ok');
    serverDone();
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException) => {
    result.server = err.code ?? err.message;
    serverDone();
  });
  t.teardown(() => server.close());
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as net.AddressInfo;
  // The client reads until the server ends: with TLS 1.3 a client certificate is judged
  // after the client's side of the handshake is over.
  await new Promise<void>((resolve) => {
    const socket = tls.connect({ host, port, ...clientOptions });
    socket.setEncoding('utf8');
    socket.on('data', (data: string) => (result.received += data));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      result.client = err.code ?? err.message;
      socket.destroy();
    });
    socket.on('close', () => resolve());
  });
  if (result.client === null || serverOptions.requestCert) await serverVerdict;
  return result;
}

const ACCEPTED: Handshake = { client: null, received: 'ok', server: null };

function material(keyType: KeyType) {
  const ca = createCa({ keyType });
  return {
    ca,
    server: createServerCertificate(ca, { keyType }),
    client: createClientCertificate(ca, { keyType, commonName: `${keyType}-client` }),
  };
}
const sets = { ec: material('ec'), rsa: material('rsa') };

for (const keyType of ['ec', 'rsa'] as const) {
  const { ca, server, client } = sets[keyType];
  const name = keyType === 'ec' ? 'an EC' : 'an RSA';

  test(`${name} CA and its certificates use the asked key type`, (t) => {
    const key = new X509Certificate(server.cert).publicKey;
    t.is(key.asymmetricKeyType, keyType);
    if (keyType === 'ec') t.is(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    else t.is(key.asymmetricKeyDetails?.modulusLength, 2048);
    t.true(new X509Certificate(ca.cert).ca);
    t.false(new X509Certificate(server.cert).ca);
  });

  test(`${name} server certificate verifies against the CA on 127.0.0.1`, async (t) => {
    t.deepEqual(await handshake(t, server, { ca: ca.cert }), ACCEPTED);
  });

  (ipv6 ? test : test.skip)(`${name} server certificate verifies against the CA on ::1`, async (t) => {
    t.deepEqual(await handshake(t, server, { ca: ca.cert }, '::1'), ACCEPTED);
  });

  test(`${name} server certificate verifies against the CA for servername localhost`, async (t) => {
    t.deepEqual(await handshake(t, server, { ca: ca.cert, servername: 'localhost' }), ACCEPTED);
  });

  test(`${name} server certificate is refused for a name it does not carry`, async (t) => {
    const result = await handshake(t, server, { ca: ca.cert, servername: 'example.com' });
    t.is(result.client, 'ERR_TLS_CERT_ALTNAME_INVALID');
  });

  test(`${name} client certificate is accepted by a server that trusts its CA`, async (t) => {
    const result = await handshake(t, { ...server, ca: ca.cert, requestCert: true }, { ca: ca.cert, ...client });
    t.deepEqual(result, { ...ACCEPTED, clientCn: `${keyType}-client` });
  });

  test(`${name} client certificate is rejected by a server that trusts another CA`, async (t) => {
    const other = createCa({ keyType });
    const serverOptions = { ...server, ca: other.cert, requestCert: true };
    // Node's server drops such a client without telling it why: nothing is read.
    const rejected = await handshake(t, serverOptions, { ca: ca.cert, ...client });
    t.is(rejected.received, '');
    t.is(rejected.clientCn, undefined);
    t.is(rejected.server, 'ECONNRESET');
    // Why, as a server that does not reject on its own sees it: OpenSSL sends the
    // client's CA (from its `ca`) after the leaf, a root the server does not trust.
    const judged = await handshake(t, { ...serverOptions, rejectUnauthorized: false }, { ca: ca.cert, ...client });
    t.is(judged.authorizationError, 'SELF_SIGNED_CERT_IN_CHAIN');
  });
}

test('a server certificate from an EC CA may carry an RSA key', async (t) => {
  const server = createServerCertificate(sets.ec.ca, { keyType: 'rsa' });
  t.deepEqual(await handshake(t, server, { ca: sets.ec.ca.cert }), ACCEPTED);
});

test('a client certificate is not accepted as a server certificate', async (t) => {
  const { ca } = sets.ec;
  const named = createClientCertificate(ca, { commonName: 'localhost', dnsNames: ['localhost'] });
  t.is((await handshake(t, named, { ca: ca.cert, servername: 'localhost' })).client, 'INVALID_PURPOSE');
});

test('an expired certificate is reported expired by X509Certificate and refused by tls', async (t) => {
  const { ca } = sets.ec;
  const day = 86_400_000;
  const expired = createServerCertificate(ca, { notBefore: new Date(Date.now() - 2 * day), notAfter: new Date(Date.now() - day) });
  const x509 = new X509Certificate(expired.cert);
  t.true(Date.parse(x509.validTo) < Date.now());
  t.true(x509.verify(new X509Certificate(ca.cert).publicKey));
  t.is((await handshake(t, expired, { ca: ca.cert })).client, 'CERT_HAS_EXPIRED');
});

test('days sets the validity period and an empty one is refused', (t) => {
  const { ca } = sets.ec;
  const notBefore = new Date('2030-01-01T00:00:00Z');
  const cert = new X509Certificate(createServerCertificate(ca, { notBefore, days: 2 }).cert);
  t.is(Date.parse(cert.validTo) - Date.parse(cert.validFrom), 2 * 86_400_000);
  t.throws(() => createServerCertificate(ca, { days: 0 }), { instanceOf: RangeError });
  t.throws(() => createServerCertificate(ca, { notBefore, notAfter: notBefore }), { instanceOf: RangeError });
  t.throws(() => createServerCertificate(sets.ec.server), { instanceOf: TypeError, message: /not a CA/ });
  t.throws(() => createServerCertificate({ cert: ca.cert, key: sets.rsa.ca.key }), { instanceOf: TypeError });
});

async function genCertsIn(dir: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', genCerts, '--dir', dir, ...args], { cwd: root });
  return stdout;
}

function contents(dir: string): Record<string, string> {
  return Object.fromEntries(FILES.map((f) => [f, readFileSync(path.join(dir, f), 'utf8')]));
}

test('gen-certs writes the six files with private keys mode 0600', async (t) => {
  const dir = path.join(tempDirSync(t, 'gen-certs-'), 'certs');
  const out = await genCertsIn(dir);
  t.is(out.match(/^created /gm)?.length, 3);
  for (const file of FILES) {
    t.is(statSync(path.join(dir, file)).mode & 0o777, file.endsWith('-key.pem') ? 0o600 : 0o644, file);
  }
  const files = contents(dir);
  const ca = new X509Certificate(files['ca.pem']!);
  t.true(new X509Certificate(files['server.pem']!).verify(ca.publicKey));
  t.true(new X509Certificate(files['client.pem']!).verify(ca.publicKey));
});

test('gen-certs keeps valid files on a second run', async (t) => {
  const dir = tempDirSync(t, 'gen-certs-');
  await genCertsIn(dir);
  const first = contents(dir);
  const out = await genCertsIn(dir);
  t.is(out.match(/^kept /gm)?.length, 3);
  t.deepEqual(contents(dir), first);
});

test('gen-certs regenerates an invalid server certificate and keeps the rest', async (t) => {
  const dir = tempDirSync(t, 'gen-certs-');
  await genCertsIn(dir);
  const first = contents(dir);
  writeFileSync(path.join(dir, 'server.pem'), 'not a certificate\n');
  const out = await genCertsIn(dir);
  t.regex(out, /^created .*server\.pem .*\(unreadable/m);
  const second = contents(dir);
  t.not(second['server.pem'], first['server.pem']);
  t.not(second['server-key.pem'], first['server-key.pem']);
  for (const file of ['ca.pem', 'ca-key.pem', 'client.pem', 'client-key.pem']) t.is(second[file], first[file], file);
  t.true(new X509Certificate(second['server.pem']!).verify(new X509Certificate(second['ca.pem']!).publicKey));
});

test('gen-certs replaces an expired certificate and a certificate from another CA', async (t) => {
  const dir = tempDirSync(t, 'gen-certs-');
  await genCertsIn(dir);
  const ca = { cert: readFileSync(path.join(dir, 'ca.pem'), 'utf8'), key: readFileSync(path.join(dir, 'ca-key.pem'), 'utf8') };
  const day = 86_400_000;
  const expired = createServerCertificate(ca, { notBefore: new Date(Date.now() - 2 * day), notAfter: new Date(Date.now() - day) });
  writeFileSync(path.join(dir, 'server.pem'), expired.cert);
  writeFileSync(path.join(dir, 'server-key.pem'), expired.key);
  const stranger = createClientCertificate(createCa(), { commonName: 'stranger' });
  writeFileSync(path.join(dir, 'client.pem'), stranger.cert);
  writeFileSync(path.join(dir, 'client-key.pem'), stranger.key);
  const out = await genCertsIn(dir);
  t.regex(out, /^created .*server\.pem .*\(expired/m);
  t.regex(out, /^created .*client\.pem .*\(not signed by ca\.pem\)/m);
  t.is(statSync(path.join(dir, 'server-key.pem')).mode & 0o777, 0o600);
});

test('gen-certs regenerates everything the CA signed when the CA is replaced', async (t) => {
  const dir = tempDirSync(t, 'gen-certs-');
  await genCertsIn(dir);
  const first = contents(dir);
  rmSync(path.join(dir, 'ca-key.pem'));
  const out = await genCertsIn(dir, '--key-type', 'rsa');
  t.is(out.match(/^created /gm)?.length, 3);
  const second = contents(dir);
  for (const file of FILES) t.not(second[file], first[file], file);
  t.is(new X509Certificate(second['server.pem']!).publicKey.asymmetricKeyType, 'rsa');
});

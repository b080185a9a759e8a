/**
 * gen-certs: the development certificates in a directory (default `certs/`):
 *   ca.pem ca-key.pem           the development CA
 *   server.pem server-key.pem   CN/SAN localhost, SAN IP 127.0.0.1 and ::1, signed by the CA
 *   client.pem client-key.pem   CN libipc-client, for mTLS, signed by the CA
 * Idempotent: a pair is kept when both files parse, the key matches, it is within its
 * validity and (server, client) it verifies against ca.pem; otherwise it is generated
 * again, and a new CA means new server and client certificates. Keys are written 0600.
 *   node dist/scripts/gen-certs.js [--dir certs] [--key-type ec|rsa] [--days 825] [--force]
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import {
  DEFAULT_CA_DAYS,
  DEFAULT_LEAF_DAYS,
  createCa,
  createClientCertificate,
  createServerCertificate,
  type CertificateAndKey,
  type KeyType,
} from '../src/certs.js';

const CLIENT_CN = 'libipc-client';

interface Options {
  dir: string;
  keyType?: KeyType;
  days: number;
  force: boolean;
}

/** A certificate file and its key file. */
interface Pair {
  cert: string;
  key: string;
}

function positiveDays(value: string): number {
  const days = Number(value);
  if (!Number.isFinite(days) || days <= 0) throw new InvalidArgumentError('a positive number of days');
  return days;
}

const opts = new Command('gen-certs')
  .description('development CA, server and client certificates for tlsd and wsd (wss); keeps valid ones')
  .option('--dir <dir>', 'directory to write into', 'certs')
  .addOption(new Option('--key-type <type>', 'key algorithm of new certificates (default ec); existing ones of another type are replaced').choices(['ec', 'rsa']))
  .option('--days <days>', `validity of the server and client certificates (the CA lasts ${DEFAULT_CA_DAYS} days, or --days if longer)`, positiveDays, DEFAULT_LEAF_DAYS)
  .option('--force', 'generate everything again, even valid files', false)
  .parse()
  .opts<Options>();

/** Why the pair at `files` cannot be kept, or its PEM and certificate when it can. */
function check(
  files: Pair,
  issuer: X509Certificate | null,
): { problem: string } | { pem: CertificateAndKey; x509: X509Certificate } {
  let pem: CertificateAndKey;
  try {
    pem = { cert: readFileSync(files.cert, 'utf8'), key: readFileSync(files.key, 'utf8') };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return { problem: `${path.basename(e.path ?? '')} missing` };
    throw err;
  }
  let x509: X509Certificate;
  let key: KeyObject;
  try {
    x509 = new X509Certificate(pem.cert);
    key = createPrivateKey(pem.key);
  } catch (err) {
    return { problem: `unreadable: ${(err as Error).message}` };
  }
  const now = Date.now();
  if (Date.parse(x509.validTo) <= now) return { problem: `expired on ${x509.validTo}` };
  if (Date.parse(x509.validFrom) > now) return { problem: `not valid before ${x509.validFrom}` };
  if (!x509.checkPrivateKey(key)) return { problem: 'key does not match the certificate' };
  if (opts.keyType && key.asymmetricKeyType !== opts.keyType) {
    return { problem: `${key.asymmetricKeyType} key, ${opts.keyType} asked for` };
  }
  if (issuer === null && !x509.ca) return { problem: 'not a CA certificate' };
  const signer = issuer ?? x509;
  if (!x509.checkIssued(signer) || !x509.verify(signer.publicKey)) {
    return { problem: issuer === null ? 'not self-signed' : 'not signed by ca.pem' };
  }
  return { pem, x509 };
}

/** Writes through a temporary file and a rename: a watching tlsd never reads half a file. */
function writeAtomically(file: string, data: string, mode: number): void {
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, data, { mode });
  chmodSync(temporary, mode);
  renameSync(temporary, file);
}

function describe(x509: X509Certificate): string {
  return `${x509.subject.replace(/\n/g, ', ')}, ${x509.publicKey.asymmetricKeyType}, valid until ${x509.validTo}`;
}

/** Keeps the pair at `files` when valid, else writes `create()`'s. Returns the certificate. */
function ensure(
  files: Pair,
  issuer: X509Certificate | null,
  reason: string | null,
  create: () => CertificateAndKey,
): { x509: X509Certificate; pem: CertificateAndKey; created: boolean } {
  const found = reason === null ? check(files, issuer) : { problem: reason };
  if ('pem' in found) {
    let note = '';
    // A key kept from an earlier run (or copied in) must still not be readable by others.
    if ((statSync(files.key).mode & 0o777) !== 0o600) {
      chmodSync(files.key, 0o600);
      note = ' (key mode set to 0600)';
    }
    process.stdout.write(`kept     ${files.cert} ${files.key}: ${describe(found.x509)}${note}\n`);
    return { ...found, created: false };
  }
  const pem = create();
  writeAtomically(files.key, pem.key, 0o600);
  writeAtomically(files.cert, pem.cert, 0o644);
  const x509 = new X509Certificate(pem.cert);
  process.stdout.write(`created  ${files.cert} ${files.key} (${found.problem}): ${describe(x509)}\n`);
  return { x509, pem, created: true };
}

function pair(name: string): Pair {
  return { cert: path.join(opts.dir, `${name}.pem`), key: path.join(opts.dir, `${name}-key.pem`) };
}

try {
  mkdirSync(opts.dir, { recursive: true });
  const keyType = opts.keyType ?? 'ec';
  const leaf = { keyType, days: opts.days };
  const ca = ensure(pair('ca'), null, opts.force ? '--force' : null, () =>
    createCa({ keyType, days: Math.max(DEFAULT_CA_DAYS, opts.days) }),
  );
  const reason = opts.force ? '--force' : ca.created ? 'new CA' : null;
  ensure(pair('server'), ca.x509, reason, () => createServerCertificate(ca.pem, leaf));
  ensure(pair('client'), ca.x509, reason, () => createClientCertificate(ca.pem, { ...leaf, commonName: CLIENT_CN }));
} catch (err) {
  process.stderr.write(`gen-certs: ${(err as Error).message}\n`);
  process.exitCode = 1;
}

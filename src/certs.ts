/**
 * Development certificates: a CA, server certificates for the loopback names and client
 * certificates for mTLS, as PEM strings. Not a production PKI: no revocation, no chains
 * longer than CA -> leaf.
 *
 * node-forge builds the X.509 structure (names, validity, extensions, DER) but can only
 * sign with RSA. So keys come from Node's `crypto` (native, ECDSA P-256 or RSA 2048),
 * forge assembles the TBSCertificate around the key's SubjectPublicKeyInfo, and
 * `crypto.sign` signs it; one path for every key type, with the signature algorithm
 * chosen from the issuer's key (RFC 5758 for ECDSA, RFC 4055 for RSA).
 */
import {
  X509Certificate,
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  type KeyObject,
} from 'node:crypto';
import forge from 'node-forge';

const { asn1, pki } = forge;

/** Key algorithm of a generated certificate: ECDSA on P-256, or RSA with 2048-bit keys. */
export type KeyType = 'ec' | 'rsa';

/** A certificate and its private key, both PEM (the key is PKCS#8, unencrypted). */
export interface CertificateAndKey {
  cert: string;
  key: string;
}

/** Validity of the CA when no `days` or `notAfter` is given, in days. */
export const DEFAULT_CA_DAYS = 3650;
/** Validity of server and client certificates when no `days` or `notAfter` is given, in days. */
export const DEFAULT_LEAF_DAYS = 825;

/** Options every certificate takes. */
export interface CertificateOptions {
  /** Key algorithm (default `'ec'`). */
  keyType?: KeyType;
  /** Subject common name (each function documents its default). */
  commonName?: string;
  /** Start of validity (default one minute ago, to absorb clock skew). */
  notBefore?: Date;
  /** End of validity; takes precedence over `days`. Must be later than `notBefore`. */
  notAfter?: Date;
  /** Validity from `notBefore`, in days (fractions allowed; defaults above). */
  days?: number;
}

/** Subject alternative names. */
export interface AltNameOptions {
  /** DNS names (SAN type dNSName). */
  dnsNames?: readonly string[];
  /** IPv4 or IPv6 addresses (SAN type iPAddress). */
  ipAddresses?: readonly string[];
}

/** Options of {@link createServerCertificate}. */
export interface ServerCertificateOptions extends CertificateOptions, AltNameOptions {}

/** Options of {@link createClientCertificate}; `commonName` is required. */
export interface ClientCertificateOptions extends CertificateOptions, AltNameOptions {
  /** Subject CN, what tlsd's `--allow-cn` matches. */
  commonName: string;
}

const DAY_MS = 86_400_000;
const CLOCK_SKEW_MS = 60_000;
const COMMON_NAME_OID = '2.5.4.3';
// Signature AlgorithmIdentifiers. ECDSA ones have no parameters (RFC 5758 3.2); RSA
// PKCS#1 v1.5 ones have NULL parameters (RFC 4055 5). forge knows only the RSA OIDs.
const SIGNATURE_OIDS: Record<string, { oid: string; hash: string }> = {
  prime256v1: { oid: '1.2.840.10045.4.3.2', hash: 'sha256' },
  secp384r1: { oid: '1.2.840.10045.4.3.3', hash: 'sha384' },
  secp521r1: { oid: '1.2.840.10045.4.3.4', hash: 'sha512' },
  rsa: { oid: '1.2.840.113549.1.1.11', hash: 'sha256' },
};

/** What issuing needs from the CA: its subject, key identifier and signing key. */
interface Issuer {
  name: forge.asn1.Asn1;
  keyId: Buffer;
  privateKey: KeyObject;
}

/**
 * Creates a self-signed development CA (basicConstraints CA, pathLen 0; keyUsage
 * keyCertSign and cRLSign). `commonName` defaults to `libipc development CA`, validity
 * to {@link DEFAULT_CA_DAYS}.
 * @throws TypeError for an unknown `keyType`; RangeError for an empty validity period.
 */
export function createCa(options: CertificateOptions = {}): CertificateAndKey {
  const validity = resolveValidity(options, DEFAULT_CA_DAYS);
  const keys = generateKeys(options.keyType);
  const name = distinguishedName(options.commonName ?? 'libipc development CA');
  const cert = issue({
    issuer: { name, keyId: keyIdentifier(keys.publicKey), privateKey: keys.privateKey },
    subject: name,
    publicKey: keys.publicKey,
    validity,
    extensions: [
      { name: 'basicConstraints', critical: true, cA: true, pathLenConstraint: 0 },
      { name: 'keyUsage', critical: true, keyCertSign: true, cRLSign: true },
    ],
  });
  return { cert, key: exportKey(keys.privateKey) };
}

/**
 * Creates a server certificate signed by `ca` (extKeyUsage serverAuth). Defaults: CN
 * `localhost`, SAN DNS `localhost`, IP `127.0.0.1` and IP `::1` (without the IP SANs a
 * client connecting to an address fails verification), validity {@link DEFAULT_LEAF_DAYS}.
 * @throws TypeError when `ca` is not a CA certificate with its matching key, or for an
 *   unknown `keyType`; RangeError for an empty validity period; Error for an invalid IP address.
 */
export function createServerCertificate(ca: CertificateAndKey, options: ServerCertificateOptions = {}): CertificateAndKey {
  return createLeaf(loadIssuer(ca), options.commonName ?? 'localhost', 'serverAuth', {
    ...options,
    dnsNames: options.dnsNames ?? ['localhost'],
    ipAddresses: options.ipAddresses ?? ['127.0.0.1', '::1'],
  });
}

/**
 * Creates a client certificate signed by `ca` (extKeyUsage clientAuth) for mTLS, with
 * the subject CN `options.commonName` and SANs only when given. Validity defaults to
 * {@link DEFAULT_LEAF_DAYS}.
 * @throws TypeError when `ca` is not a CA certificate with its matching key, when
 *   `commonName` is empty, or for an unknown `keyType`; RangeError for an empty validity
 *   period; Error for an invalid IP address.
 */
export function createClientCertificate(ca: CertificateAndKey, options: ClientCertificateOptions): CertificateAndKey {
  if (!options.commonName) throw new TypeError('a client certificate needs a commonName');
  return createLeaf(loadIssuer(ca), options.commonName, 'clientAuth', options);
}

function createLeaf(
  issuer: Issuer,
  commonName: string,
  purpose: 'serverAuth' | 'clientAuth',
  options: CertificateOptions & AltNameOptions,
): CertificateAndKey {
  const validity = resolveValidity(options, DEFAULT_LEAF_DAYS);
  const keyType = options.keyType ?? 'ec';
  const keys = generateKeys(keyType);
  // GeneralName tags (RFC 5280 4.2.1.6): 2 dNSName, 7 iPAddress.
  const altNames = [
    ...(options.dnsNames ?? []).map((value) => ({ type: 2, value })),
    ...(options.ipAddresses ?? []).map((ip) => ({ type: 7, ip })),
  ];
  const cert = issue({
    issuer,
    subject: distinguishedName(commonName),
    publicKey: keys.publicKey,
    validity,
    extensions: [
      { name: 'basicConstraints', critical: true, cA: false },
      // keyEncipherment only matters to TLS 1.2 RSA key exchange, which needs an RSA key.
      { name: 'keyUsage', critical: true, digitalSignature: true, keyEncipherment: keyType === 'rsa' },
      { name: 'extKeyUsage', [purpose]: true },
      ...(altNames.length > 0 ? [{ name: 'subjectAltName', altNames }] : []),
      { name: 'authorityKeyIdentifier', keyIdentifier: issuer.keyId.toString('binary') },
    ],
  });
  return { cert, key: exportKey(keys.privateKey) };
}

function generateKeys(keyType: KeyType = 'ec'): { publicKey: KeyObject; privateKey: KeyObject } {
  if (keyType === 'ec') return generateKeyPairSync('ec', { namedCurve: 'P-256' });
  if (keyType === 'rsa') return generateKeyPairSync('rsa', { modulusLength: 2048 });
  throw new TypeError(`keyType must be 'ec' or 'rsa', not ${String(keyType)}`);
}

function exportKey(privateKey: KeyObject): string {
  return privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
}

function resolveValidity(options: CertificateOptions, defaultDays: number): { notBefore: Date; notAfter: Date } {
  const days = options.days ?? defaultDays;
  if (!Number.isFinite(days) || days <= 0) throw new RangeError(`days must be a positive number, not ${days}`);
  const notBefore = options.notBefore ?? new Date(Date.now() - CLOCK_SKEW_MS);
  const notAfter = options.notAfter ?? new Date(notBefore.getTime() + days * DAY_MS);
  if (!(notAfter.getTime() > notBefore.getTime())) {
    throw new RangeError(`notAfter (${notAfter.toISOString()}) must be later than notBefore (${notBefore.toISOString()})`);
  }
  return { notBefore, notAfter };
}

/** A Name with one CN, as a UTF8String (RFC 5280 4.1.2.4 recommends it; forge defaults to PrintableString). */
function distinguishedName(commonName: string): forge.asn1.Asn1 {
  const U = asn1.Class.UNIVERSAL;
  const attribute = asn1.create(U, asn1.Type.SEQUENCE, true, [
    asn1.create(U, asn1.Type.OID, false, asn1.oidToDer(COMMON_NAME_OID).getBytes()),
    asn1.create(U, asn1.Type.UTF8, false, forge.util.encodeUtf8(commonName)),
  ]);
  return asn1.create(U, asn1.Type.SEQUENCE, true, [asn1.create(U, asn1.Type.SET, true, [attribute])]);
}

/** RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's bits. */
function keyIdentifier(publicKey: KeyObject): Buffer {
  const spki = asn1.fromDer(publicKey.export({ type: 'spki', format: 'der' }).toString('binary'));
  // forge keeps a BIT STRING's raw content (leading unused-bits octet, 0 here).
  const bits = (spki.value[1] as forge.asn1.Asn1 & { bitStringContents: string }).bitStringContents;
  return createHash('sha1').update(Buffer.from(bits.slice(1), 'binary')).digest();
}

function loadIssuer(ca: CertificateAndKey): Issuer {
  let cert: X509Certificate;
  let privateKey: KeyObject;
  try {
    cert = new X509Certificate(ca.cert);
    privateKey = createPrivateKey(ca.key);
  } catch (err) {
    throw new TypeError(`cannot read the CA certificate or key: ${(err as Error).message}`, { cause: err });
  }
  if (!cert.ca) throw new TypeError(`${cert.subject} is not a CA certificate`);
  if (!cert.checkPrivateKey(privateKey)) throw new TypeError('the CA key does not match the CA certificate');
  // The issuer field must be the CA's subject byte for byte: take it from its DER.
  const tbs = asn1.fromDer(cert.raw.toString('binary')).value[0] as forge.asn1.Asn1;
  const fields = tbs.value as forge.asn1.Asn1[];
  const hasVersion = fields[0]?.tagClass === asn1.Class.CONTEXT_SPECIFIC;
  const name = fields[hasVersion ? 5 : 4];
  if (!name) throw new TypeError('the CA certificate has no subject');
  return { name, keyId: keyIdentifier(cert.publicKey), privateKey };
}

function signatureAlgorithm(privateKey: KeyObject): { identifier: forge.asn1.Asn1; hash: string } {
  const kind = privateKey.asymmetricKeyType === 'ec' ? privateKey.asymmetricKeyDetails?.namedCurve : privateKey.asymmetricKeyType;
  const algorithm = kind === undefined ? undefined : SIGNATURE_OIDS[kind];
  if (!algorithm) throw new TypeError(`cannot sign with a ${kind ?? 'unknown'} CA key (EC P-256/384/521 or RSA)`);
  const oid = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(algorithm.oid).getBytes());
  const params = kind === 'rsa' ? [asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '')] : [];
  return { identifier: asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [oid, ...params]), hash: algorithm.hash };
}

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. */
function time(date: Date): forge.asn1.Asn1 {
  return date.getUTCFullYear() < 2050
    ? asn1.create(asn1.Class.UNIVERSAL, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(date))
    : asn1.create(asn1.Class.UNIVERSAL, asn1.Type.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(date));
}

/** What goes into one certificate besides its serial number and signature. */
interface Draft {
  issuer: Issuer;
  subject: forge.asn1.Asn1;
  publicKey: KeyObject;
  validity: { notBefore: Date; notAfter: Date };
  /** forge extension descriptions (`pki.Certificate#setExtensions`), SKI excluded. */
  extensions: object[];
}

/** Builds the X.509 v3 TBSCertificate (RFC 5280 4.1), signs it with the issuer's key, returns PEM. */
function issue({ issuer, subject, publicKey, validity, extensions }: Draft): string {
  // forge fills in each extension's DER value; setExtensions is its public way to do so.
  const holder = pki.createCertificate();
  holder.setExtensions([
    ...extensions,
    { name: 'subjectKeyIdentifier', value: octetString(keyIdentifier(publicKey)) },
  ]);
  // Positive, at most 20 octets, unpredictable (RFC 5280 4.1.2.2).
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  const { identifier, hash } = signatureAlgorithm(issuer.privateKey);
  const { SEQUENCE, INTEGER } = asn1.Type;
  const U = asn1.Class.UNIVERSAL;
  const tbs = asn1.create(U, SEQUENCE, true, [
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [asn1.create(U, INTEGER, false, asn1.integerToDer(2).getBytes())]),
    asn1.create(U, INTEGER, false, serial.toString('binary')),
    identifier,
    issuer.name,
    asn1.create(U, SEQUENCE, true, [time(validity.notBefore), time(validity.notAfter)]),
    subject,
    asn1.fromDer(publicKey.export({ type: 'spki', format: 'der' }).toString('binary')),
    extensionsToAsn1(holder.extensions),
  ]);
  const tbsDer = Buffer.from(asn1.toDer(tbs).getBytes(), 'binary');
  // Node signs ECDSA as a DER ECDSA-Sig-Value, the form X.509 carries (RFC 5758 3.2).
  const signature = sign(hash, tbsDer, issuer.privateKey);
  const certificate = asn1.create(U, SEQUENCE, true, [
    tbs,
    identifier,
    asn1.create(U, asn1.Type.BITSTRING, false, `\x00${signature.toString('binary')}`),
  ]);
  return new X509Certificate(Buffer.from(asn1.toDer(certificate).getBytes(), 'binary')).toString();
}

function octetString(bytes: Buffer): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, bytes.toString('binary'));
}

/** forge's `pki.certificateExtensionsToAsn1` (lib/x509.js), missing from @types/node-forge. */
function extensionsToAsn1(extensions: unknown[]): forge.asn1.Asn1 {
  const api = pki as unknown as { certificateExtensionsToAsn1(extensions: unknown[]): forge.asn1.Asn1 };
  return api.certificateExtensionsToAsn1(extensions);
}

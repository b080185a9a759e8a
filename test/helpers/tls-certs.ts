/**
 * TLS material for tlsd's tests, generated in the test with src/certs.ts (node-forge) and
 * written as PEM files, plus atomic replacement of those files (write aside, rename over)
 * as certificate tools do.
 */
import { X509Certificate } from 'node:crypto';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  createCa,
  createClientCertificate,
  createServerCertificate,
  type CertificateAndKey,
  type ClientCertificateOptions,
  type ServerCertificateOptions,
} from '../../src/certs.js';

export type { CertificateAndKey };

/** Files tlsd is started with, in `<dir>/certs/`. */
export interface TlsFiles {
  dir: string;
  cert: string;
  key: string;
  ca: string;
}

/** A CA, a server certificate for the loopback names signed by it, and their files. */
export interface Material {
  ca: CertificateAndKey;
  server: CertificateAndKey;
  files: TlsFiles;
  /** `--cert C --key K` */
  args: string[];
}

/** Generates a CA and a server certificate and writes them under `<dir>/certs/`. */
export function makeMaterial(dir: string, options: ServerCertificateOptions = {}): Material {
  const ca = createCa();
  const server = createServerCertificate(ca, options);
  const certs = path.join(dir, 'certs');
  mkdirSync(certs, { recursive: true });
  mkdirSync(path.join(dir, 'staging'), { recursive: true });
  const files: TlsFiles = {
    dir: certs,
    cert: path.join(certs, 'server.pem'),
    key: path.join(certs, 'server-key.pem'),
    ca: path.join(certs, 'ca.pem'),
  };
  writeFileSync(files.cert, server.cert);
  writeFileSync(files.key, server.key);
  writeFileSync(files.ca, ca.cert);
  return { ca, server, files, args: ['--cert', files.cert, '--key', files.key] };
}

/** A client certificate signed by `ca`. */
export function clientCert(ca: CertificateAndKey, options: ClientCertificateOptions): CertificateAndKey {
  return createClientCertificate(ca, options);
}

export { createCa, createServerCertificate };

/**
 * Replaces `file` atomically: the new content is written in `<dir>/../staging/` (outside
 * the watched directory) and renamed over it.
 */
export function replaceFile(file: string, content: string): void {
  const staging = path.join(path.dirname(path.dirname(file)), 'staging', `${path.basename(file)}.${process.hrtime.bigint()}`);
  writeFileSync(staging, content);
  renameSync(staging, file);
}

/** SHA-256 fingerprint of a PEM certificate, in the form `getPeerCertificate()` gives. */
export function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/** Serial number of a PEM certificate, upper-case hex as `getPeerCertificate()` gives. */
export function serial(pem: string): string {
  return new X509Certificate(pem).serialNumber.toUpperCase();
}

/**
 * TLS command-line options shared by tlsd and wsd (wss): files, client certificates,
 * minimum version, and reload on SIGHUP / file changes.
 */
import type { Command } from 'commander';
import type { SecureVersion } from 'node:tls';
import type { TlsServerSettings } from '../tls-material.js';
import { list } from './common.js';

export interface TlsCliOptions {
  cert?: string;
  key?: string;
  ca?: string;
  requireClientCert?: boolean;
  allowCn?: string[];
  allowSan?: string[];
  minVersion?: string;
  watchCerts?: boolean;
}

const VERSIONS = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'];

export function addTlsOptions(command: Command, required: boolean): Command {
  const certHelp = required ? 'PEM certificate chain' : 'PEM certificate chain (turns on TLS)';
  return command
    .option('--cert <file>', certHelp)
    .option('--key <file>', 'PEM private key')
    .option('--ca <file>', 'PEM CA bundle client certificates must chain to')
    .option('--require-client-cert', 'refuse clients without a certificate signed by --ca')
    .option('--allow-cn <names>', 'comma-separated client certificate CNs allowed', list)
    .option('--allow-san <names>', 'comma-separated client certificate SANs allowed (DNS:x, IP:x or bare)', list)
    .option('--min-version <version>', `lowest TLS version: ${VERSIONS.join(', ')} (default TLSv1.2)`)
    .option('--watch-certs', 'reload certificate, key and CA when the files change (SIGHUP always reloads)');
}

/** Settings from the options, or undefined when no TLS was asked for. @throws TypeError */
export function tlsSettingsFrom(opts: TlsCliOptions): TlsServerSettings | undefined {
  if (opts.cert === undefined && opts.key === undefined) return undefined;
  if (opts.cert === undefined || opts.key === undefined) throw new TypeError('--cert and --key go together');
  if (opts.minVersion !== undefined && !VERSIONS.includes(opts.minVersion)) {
    throw new TypeError(`--min-version must be one of ${VERSIONS.join(', ')}`);
  }
  return {
    cert: opts.cert,
    key: opts.key,
    ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
    ...(opts.requireClientCert ? { requireClientCert: true } : {}),
    ...(opts.allowCn ? { allowCn: opts.allowCn } : {}),
    ...(opts.allowSan ? { allowSan: opts.allowSan } : {}),
    ...(opts.minVersion !== undefined ? { minVersion: opts.minVersion as SecureVersion } : {}),
  };
}

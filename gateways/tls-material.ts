/**
 * TLS material of a listening gateway (tlsd, and wsd for wss): certificate, key and
 * optional client CA, loaded from files, checked before use, and reloadable while
 * serving. A reload that fails any check is refused with a log line and the material in
 * use stays; established connections are never touched (only new handshakes see the
 * new context).
 */
import tls from 'node:tls';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { isIP } from 'node:net';
import type { Logger } from '../src/log.js';

export interface TlsFiles {
  /** PEM certificate chain file (leaf first). */
  cert: string;
  /** PEM private key file. */
  key: string;
  /** PEM CA bundle that client certificates must chain to (mTLS). */
  ca?: string;
}

export interface TlsServerSettings extends TlsFiles {
  /** Lowest TLS version accepted (default TLSv1.2). */
  minVersion?: tls.SecureVersion;
  /** Ask clients for a certificate and refuse those without a valid one (needs `ca`). */
  requireClientCert?: boolean;
  /** When set, a client certificate's subject CN must be one of these. */
  allowCn?: readonly string[];
  /** When set, one of the client certificate's SAN entries must be one of these (`DNS:x`, `IP:x`, `email:x`, or a bare value). */
  allowSan?: readonly string[];
}

/** Facts about one loaded set of files, for logs. */
export interface MaterialInfo {
  subject: string;
  issuer: string;
  validTo: string;
  fingerprint256: string;
}

/**
 * Reads and checks the files; throws an Error saying which check failed. Returns the
 * options for a secure context (checked by building one) and facts for logs.
 */
export function loadTlsFiles(settings: TlsServerSettings): { options: tls.SecureContextOptions; info: MaterialInfo } {
  const certPem = readFileSync(settings.cert);
  const keyPem = readFileSync(settings.key);
  const caPem = settings.ca ? readFileSync(settings.ca) : undefined;
  const leaf = new X509Certificate(certPem);
  const now = Date.now();
  if (Date.parse(leaf.validTo) <= now) throw new Error(`certificate ${settings.cert} expired on ${leaf.validTo}`);
  if (Date.parse(leaf.validFrom) > now) throw new Error(`certificate ${settings.cert} is not valid before ${leaf.validFrom}`);
  if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) {
    throw new Error(`key ${settings.key} does not match certificate ${settings.cert}`);
  }
  if (caPem) new X509Certificate(caPem); // parse check: a truncated CA file is refused here
  const minVersion = settings.minVersion ?? 'TLSv1.2';
  const options: tls.SecureContextOptions = {
    cert: certPem,
    key: keyPem,
    ...(caPem ? { ca: caPem } : {}),
    minVersion,
    // OpenSSL 3's default security level refuses the signatures TLS 1.0/1.1 need: an
    // operator who asks for them on purpose gets them.
    ...(minVersion === 'TLSv1' || minVersion === 'TLSv1.1' ? { ciphers: 'DEFAULT@SECLEVEL=0' } : {}),
  };
  tls.createSecureContext(options); // throws on material OpenSSL refuses
  return {
    options,
    info: { subject: leaf.subject, issuer: leaf.issuer, validTo: leaf.validTo, fingerprint256: leaf.fingerprint256 },
  };
}

/** The identity a client certificate shows, for logs and allow-lists. */
export interface ClientIdentity {
  cn?: string;
  san?: string[];
  authorized: boolean;
  authorizationError?: string;
}

export function clientIdentity(socket: tls.TLSSocket): ClientIdentity | undefined {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return undefined;
  const cn = cert.subject?.CN;
  const san = cert.subjectaltname ? cert.subjectaltname.split(', ') : undefined;
  const authError = socket.authorizationError;
  return {
    ...(cn !== undefined ? { cn: Array.isArray(cn) ? cn.join(',') : cn } : {}),
    ...(san ? { san } : {}),
    authorized: socket.authorized,
    ...(authError ? { authorizationError: String(authError) } : {}),
  };
}

/**
 * One spelling for a SAN entry: Node writes `IP Address:0:0:0:0:0:0:0:1` where operators
 * write `IP:::1`; both become `IP:::1` (IPv6 in its shortest form), `DNS:` names lower-case.
 */
export function normalizeSan(entry: string): string {
  // A bare IPv6 address holds colons but no type prefix.
  const colon = isIP(entry.trim()) !== 0 ? -1 : entry.indexOf(':');
  const rawType = colon === -1 ? '' : entry.slice(0, colon).trim();
  let value = colon === -1 ? entry.trim() : entry.slice(colon + 1).trim();
  const type = rawType === 'IP Address' ? 'IP' : rawType;
  if (isIP(value) === 6 || (type === 'IP' && value.includes(':'))) {
    try {
      value = new URL(`http://[${value}]/`).hostname.slice(1, -1);
    } catch {
      // not an IPv6 address after all: keep it as written
    }
  } else if (type === 'DNS' || type === '') {
    value = value.toLowerCase();
  }
  if (type === '' && isIP(value) !== 0) return value;
  return type === '' ? value : `${type}:${value}`;
}

/**
 * Why a client with `identity` may not connect, or null when it may: with
 * --require-client-cert or an allow-list, a certificate that chains to --ca is required;
 * with allow-lists, its CN or one SAN must be listed.
 */
export function identityProblem(identity: ClientIdentity | undefined, settings: TlsServerSettings): string | null {
  const { allowCn, allowSan } = settings;
  const restricts = !!allowCn?.length || !!allowSan?.length;
  if (!settings.requireClientCert && !restricts) return null;
  if (!identity) return 'no client certificate';
  if (!identity.authorized) return `client certificate not trusted (${identity.authorizationError ?? 'unverified'})`;
  if (!restricts) return null;
  if (allowCn?.length && identity.cn !== undefined && allowCn.includes(identity.cn)) return null;
  if (allowSan?.length && identity.san) {
    const allowed = new Set(allowSan.map(normalizeSan));
    for (const entry of identity.san) {
      const normalized = normalizeSan(entry);
      const bare = normalized.slice(normalized.indexOf(':') + 1);
      if (allowed.has(normalized) || allowed.has(bare)) return null;
    }
  }
  return `client identity not allowed (CN ${identity.cn ?? 'none'}, SAN ${identity.san?.join(' ') ?? 'none'})`;
}

/**
 * The TLS server side of a gateway: a `tls.Server` that never listens; accepted sockets
 * are injected with `emit('connection')` (documented for tls.Server) so that Node's own
 * handshake handling computes the client certificate verdict (`authorized`,
 * `authorizationError`). Its secure context is replaced by {@link reload} (SIGHUP) or by
 * file changes when watching; only new handshakes see the new material.
 */
export class TlsMaterial {
  readonly settings: TlsServerSettings;
  readonly server: tls.Server;
  /**
   * Whether clients are asked for a certificate (--require-client-cert or an allow-list).
   * When not, a client never sends one, so its identity is not looked up.
   */
  readonly requestsClientCert: boolean;
  private readonly logger: Logger;
  private watchers: FSWatcher[] = [];
  private reloadTimer: NodeJS.Timeout | null = null;

  /**
   * Loads the files now. @throws Error when they fail a check (the daemon cannot start).
   * @param handshakeTimeout bound of Node's own TLS handshake timer (ms), or 0 for none:
   *   gateways pass 0, as the connection's one deadline (lifecycle.ts) already bounds
   *   every handshake.
   */
  constructor(settings: TlsServerSettings, logger: Logger, handshakeTimeout = 120_000) {
    const restricts = !!settings.allowCn?.length || !!settings.allowSan?.length;
    if ((settings.requireClientCert || restricts) && !settings.ca) {
      throw new Error('client certificate checks (--require-client-cert, --allow-cn, --allow-san) need --ca');
    }
    this.settings = settings;
    this.logger = logger;
    this.requestsClientCert = settings.requireClientCert === true || restricts;
    const { options, info } = loadTlsFiles(settings);
    this.server = tls.createServer({
      ...options,
      requestCert: this.requestsClientCert,
      // The verdict is applied by the gateway, which logs why it refuses a client.
      rejectUnauthorized: false,
      // Node's timer is a Timeout per TLS socket, set at accept and kept (cleared) by the
      // socket for its whole life, refreshed on every read and write. tls.Server takes 0
      // for its 120 s default; a TLS socket starts the timer only for a value above 0.
      handshakeTimeout: handshakeTimeout > 0 ? handshakeTimeout : -1,
    });
    logger.info({ certificate: info }, 'tls material loaded');
  }

  /** Loads the files again; keeps the old material (and says why) if they fail a check. */
  reload(): boolean {
    try {
      const { options, info } = loadTlsFiles(this.settings);
      this.server.setSecureContext(options);
      this.logger.info({ certificate: info }, 'tls material reloaded');
      return true;
    } catch (err) {
      this.logger.error({ reason: (err as Error).message }, 'tls reload refused: keeping the material in use');
      return false;
    }
  }

  /**
   * Reloads when a file changes (debounced: editors and cert tools write in steps). The
   * directories are watched, not the files: tools that replace a file by renaming a new
   * one over it would leave a file watcher on the old inode.
   */
  watch(debounceMs = 200): void {
    const files = [this.settings.cert, this.settings.key, this.settings.ca].filter((f): f is string => !!f);
    const byDir = new Map<string, Set<string>>();
    for (const file of files) {
      const dir = path.dirname(path.resolve(file));
      if (!byDir.has(dir)) byDir.set(dir, new Set());
      byDir.get(dir)!.add(path.basename(file));
    }
    for (const [dir, names] of byDir) {
      const watcher = watch(dir, (_event, filename) => {
        if (filename !== null && !names.has(filename.toString())) return;
        if (this.reloadTimer) clearTimeout(this.reloadTimer);
        this.reloadTimer = setTimeout(() => {
          this.reloadTimer = null;
          this.reload();
        }, debounceMs);
      });
      watcher.on('error', (err) => this.logger.warn({ err, dir }, 'cannot watch certificate directory'));
      this.watchers.push(watcher);
    }
  }

  close(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
  }
}

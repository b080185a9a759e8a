/**
 * Client addresses: which peers are trusted proxies (`--trusted-proxies`, CIDR matching
 * through node:net's BlockList), IPv4-mapped IPv6 addresses seen as the IPv4 they carry,
 * and the client address a trusted HTTP proxy forwards (`Forwarded`, `X-Forwarded-For`).
 */
import net from 'node:net';
import type http from 'node:http';
import { canonicalIpv6 } from './proxy-protocol.js';

/** The default of --trusted-proxies: the loopback addresses. */
export const DEFAULT_TRUSTED_PROXIES: readonly string[] = ['127.0.0.0/8', '::1'];

/** `::ffff:127.0.0.1` -> `127.0.0.1`; any other address unchanged. */
export function unmapIpv4(address: string): string {
  if (address.length > 7 && address.slice(0, 7).toLowerCase() === '::ffff:' && net.isIPv4(address.slice(7))) return address.slice(7);
  return address;
}

/** A set of CIDR ranges (or single addresses). */
export class TrustedProxies {
  /** As written (for logs and --help). */
  readonly ranges: readonly string[];
  private readonly list = new net.BlockList();

  /** @throws TypeError naming the first range that is not `ADDRESS` or `ADDRESS/PREFIX`. */
  constructor(ranges: readonly string[]) {
    this.ranges = Object.freeze([...ranges]);
    for (const range of ranges) {
      const slash = range.indexOf('/');
      const address = unmapIpv4(slash === -1 ? range : range.slice(0, slash));
      const family = net.isIP(address);
      const max = family === 4 ? 32 : 128;
      const prefixText = slash === -1 ? String(max) : range.slice(slash + 1);
      const prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
      if (family === 0 || !(prefix >= 0 && prefix <= max)) throw new TypeError(`'${range}' is not an address or CIDR range`);
      this.list.addSubnet(address, prefix, family === 4 ? 'ipv4' : 'ipv6');
    }
  }

  /** True when `address` (IPv4, IPv6, or IPv4-mapped IPv6) is in one of the ranges. */
  has(address: string | undefined): boolean {
    if (address === undefined) return false;
    const plain = unmapIpv4(address);
    const family = net.isIP(plain);
    if (family === 0) return false;
    return this.list.check(plain, family === 4 ? 'ipv4' : 'ipv6');
  }
}

/** A client address as a trusted proxy reported it. */
export interface ForwardedClient {
  address: string;
  port: number | undefined;
  /** Which header said it. */
  header: 'forwarded' | 'x-forwarded-for';
}

/** The headers a trusted HTTP proxy may write the client address in (`--forwarded-header`). */
export const FORWARDED_HEADERS = ['x-forwarded-for', 'forwarded'] as const;
export type ForwardedHeader = (typeof FORWARDED_HEADERS)[number];

type Node = { address: string; port: number | undefined };

/**
 * The client address of a request relayed by trusted proxies, from the one header the
 * operator said they write (`X-Forwarded-For` by default, or RFC 7239 `Forwarded`): the
 * other is never read, since proxies that append to one pass a client's own copy of the
 * other through untouched. Entries are read from the right (the one the nearest proxy
 * added) past every trusted proxy; the first untrusted entry is the client, and what lies
 * left of it (the client's own writing) is ignored. Null when the header is absent, or an
 * entry up to that point is not an IP address (`unknown`, a name, garbage, an element
 * without `for=`): a trusted proxy wrote it, and it cannot be read.
 */
export function forwardedClient(headers: http.IncomingHttpHeaders, trusted: TrustedProxies, header: ForwardedHeader = 'x-forwarded-for'): ForwardedClient | null {
  const value = headers[header];
  if (value === undefined) return null;
  const text = Array.isArray(value) ? value.join(',') : value;
  const entries = text.split(',').map((element) => (header === 'forwarded' ? forwardedFor(element) : parseNode(element.trim())));
  for (let i = entries.length - 1; i >= 0; i--) {
    const entry = entries[i];
    if (entry === null || entry === undefined) return null;
    if (i === 0 || !trusted.has(entry.address)) return { ...entry, header };
  }
  return null;
}

/** The `for=` node of one element of a Forwarded header; null when missing or not an IP. */
function forwardedFor(element: string): Node | null {
  const pair = element
    .split(';')
    .map((p) => p.trim())
    .find((p) => p.toLowerCase().startsWith('for='));
  if (pair === undefined) return null;
  let node = pair.slice(4);
  if (node.startsWith('"') && node.endsWith('"') && node.length >= 2) node = node.slice(1, -1);
  return parseNode(node);
}

/** `1.2.3.4`, `1.2.3.4:80`, `[v6]`, `[v6]:80` or a bare IPv6 address; null otherwise. */
function parseNode(text: string): Node | null {
  let address = text;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(text);
  if (bracketed) {
    address = bracketed[1]!;
    portText = bracketed[2];
    if (!net.isIPv6(address)) return null;
  } else if (!net.isIPv6(text)) {
    const v4 = /^(\d+\.\d+\.\d+\.\d+)(?::(\d{1,5}))?$/.exec(text);
    if (!v4 || !net.isIPv4(v4[1]!)) return null;
    address = v4[1]!;
    portText = v4[2];
  }
  const port = portText === undefined ? undefined : Number(portText);
  if (port !== undefined && port > 65535) return null;
  const plain = unmapIpv4(address);
  return { address: net.isIPv6(plain) ? canonicalIpv6(plain) : plain, port };
}

/** `host:port` (IPv6 in brackets), or the bare address without a port: as the logs' `peer`. */
export function formatPeer(address: string, port: number | undefined): string {
  if (port === undefined) return net.isIPv6(address) ? `[${address}]` : address;
  return net.isIPv6(address) ? `[${address}]:${port}` : `${address}:${port}`;
}

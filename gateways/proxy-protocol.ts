/**
 * The PROXY protocol (HAProxy's proxy-protocol.txt), versions 1 (text) and 2 (binary),
 * told apart by their first bytes: a parser that reads a header from the bytes received
 * so far and says whether it needs more, and the v2 encoder the outbound services use.
 *
 * Ours rather than an npm package: proxy-protocol-js (4.0.x) parses one whole buffer
 * (no "need more bytes" answer, so a header split over reads cannot be driven), does not
 * enforce v1's 107-byte limit, and returns null rather than a reason; the other
 * (@balena/proxy-protocol-parser) is one release without upkeep. The format is small;
 * test/properties-proxy-protocol.test.ts checks every split of valid headers.
 *
 * What the spec asks of a receiver and this parser does: v1 `UNKNOWN` and v2 `LOCAL`
 * commands, and v2 `UNSPEC`/`UNIX` families, carry no usable IP: the connection keeps
 * its TCP peer address (HAProxy's health checks send `LOCAL`). v2 TLVs are skipped.
 */
import net from 'node:net';

/** v2's 12-byte signature. */
export const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** A v1 line is at most 107 bytes, CRLF included (spec §2.1). */
export const V1_MAX_LENGTH = 107;
const V2_FIXED = 16;

/** An address of a PROXY header. */
export interface ProxyEndpoint {
  address: string;
  port: number;
  family: 'IPv4' | 'IPv6';
}

/** A complete header: `length` bytes of the input are the header, the rest is the client's. */
export interface ProxyHeader {
  version: 1 | 2;
  length: number;
  /**
   * `proxy`: relayed for `source`. `local` (v2 LOCAL, v1 UNKNOWN), `unspec` and `unix`
   * (v2 families) carry no IP: the TCP peer address stays the client's.
   */
  kind: 'proxy' | 'local' | 'unspec' | 'unix';
  source?: ProxyEndpoint;
  destination?: ProxyEndpoint;
  /** v2 UNIX family: the paths, as sent (NUL padding cut). */
  unixSource?: string;
  unixDestination?: string;
}

export type ProxyParse =
  /** Not enough bytes yet to decide. */
  | { state: 'more' }
  /** The first bytes are not those of a PROXY header. */
  | { state: 'none' }
  | { state: 'invalid'; reason: string }
  | { state: 'header'; header: ProxyHeader };

const MORE: ProxyParse = { state: 'more' };
const NONE: ProxyParse = { state: 'none' };

function invalid(reason: string): ProxyParse {
  return { state: 'invalid', reason };
}

/** True while `bytes` (shorter than `prefix`) could still become `prefix`. */
function startsLike(bytes: Buffer, prefix: Buffer): boolean {
  const n = Math.min(bytes.length, prefix.length);
  return bytes.subarray(0, n).equals(prefix.subarray(0, n));
}

/**
 * Reads a PROXY header at the start of `bytes` (everything received so far). Decides as
 * early as it can: `none` once the bytes can be neither signature, `invalid` once they
 * cannot end as a valid header (a v1 line without CRLF within 107 bytes included).
 */
export function parseProxyHeader(bytes: Buffer): ProxyParse {
  if (bytes.length === 0) return MORE;
  if (startsLike(bytes, V2_SIGNATURE)) return bytes.length < V2_SIGNATURE.length ? MORE : parseV2(bytes);
  if (startsLike(bytes, V1_PREFIX)) return bytes.length < V1_PREFIX.length ? MORE : parseV1(bytes);
  // A v2 signature with a wrong byte after the first few is a bad signature, not "no header":
  // nothing else a client sends starts with CR LF CR LF.
  if (bytes.length >= 4 && bytes.subarray(0, 4).equals(V2_SIGNATURE.subarray(0, 4))) return invalid('bad v2 signature');
  return NONE;
}

function parseV1(bytes: Buffer): ProxyParse {
  const window = bytes.subarray(0, V1_MAX_LENGTH);
  const cr = window.indexOf(0x0d);
  const lf = window.indexOf(0x0a);
  if (lf !== -1 && (cr === -1 || lf < cr)) return invalid('v1 line: LF without CR');
  if (cr === -1) return bytes.length >= V1_MAX_LENGTH ? invalid(`v1 line longer than ${V1_MAX_LENGTH} bytes`) : MORE;
  if (cr + 1 >= window.length) return bytes.length >= V1_MAX_LENGTH ? invalid(`v1 line longer than ${V1_MAX_LENGTH} bytes`) : MORE;
  if (window[cr + 1] !== 0x0a) return invalid('v1 line: CR not followed by LF');
  const line = window.subarray(0, cr).toString('latin1');
  const length = cr + 2;
  const parts = line.split(' ');
  if (parts[1] === 'UNKNOWN') return { state: 'header', header: { version: 1, length, kind: 'local' } };
  if (parts.length !== 6) return invalid('v1 line: expected PROXY TCP4|TCP6 SRC DST SPORT DPORT');
  const [, proto, src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const family = proto === 'TCP4' ? 'IPv4' : proto === 'TCP6' ? 'IPv6' : null;
  if (family === null) return invalid(`v1 line: unknown protocol ${JSON.stringify(proto.slice(0, 16))}`);
  const check = family === 'IPv4' ? net.isIPv4 : net.isIPv6;
  if (!check(src) || !check(dst)) return invalid(`v1 line: addresses are not ${family}`);
  // One spelling per address (v1 text may be `2001:DB8:0::1`): logs and per-IP keys agree.
  const source = family === 'IPv6' ? canonicalIpv6(src) : src;
  const destination = family === 'IPv6' ? canonicalIpv6(dst) : dst;
  const sourcePort = v1Port(sport);
  const destinationPort = v1Port(dport);
  if (sourcePort === null || destinationPort === null) return invalid('v1 line: bad port');
  return {
    state: 'header',
    header: {
      version: 1,
      length,
      kind: 'proxy',
      source: { address: source, port: sourcePort, family },
      destination: { address: destination, port: destinationPort, family },
    },
  };
}

/** A v1 port: decimal, no leading zero, 0..65535. */
function v1Port(text: string): number | null {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) return null;
  const port = Number(text);
  return port <= 65535 ? port : null;
}

function parseV2(bytes: Buffer): ProxyParse {
  if (!bytes.subarray(0, V2_SIGNATURE.length).equals(V2_SIGNATURE)) return invalid('bad v2 signature');
  if (bytes.length < 13) return MORE;
  const versionCommand = bytes[12]!;
  if (versionCommand >> 4 !== 2) return invalid(`v2: unknown version ${versionCommand >> 4}`);
  const command = versionCommand & 0x0f;
  if (command > 1) return invalid(`v2: unknown command ${command}`);
  if (bytes.length < 14) return MORE;
  const familyProtocol = bytes[13]!;
  const family = familyProtocol >> 4;
  const protocol = familyProtocol & 0x0f;
  if (family > 3) return invalid(`v2: unknown address family ${family}`);
  if (protocol > 2) return invalid(`v2: unknown transport protocol ${protocol}`);
  if (bytes.length < V2_FIXED) return MORE;
  const rest = bytes.readUInt16BE(14);
  const length = V2_FIXED + rest;
  const needed = [0, 12, 36, 216][family]!;
  // LOCAL may carry anything (its addresses are ignored); PROXY must fit its family's.
  if (command === 1 && rest < needed) return invalid(`v2: ${rest} address bytes, family ${family} needs ${needed}`);
  if (bytes.length < length) return MORE;
  const body = bytes.subarray(V2_FIXED, length);
  if (command === 0) return { state: 'header', header: { version: 2, length, kind: 'local' } };
  switch (family) {
    case 0:
      return { state: 'header', header: { version: 2, length, kind: 'unspec' } };
    case 1:
      return {
        state: 'header',
        header: {
          version: 2,
          length,
          kind: 'proxy',
          source: { address: ipv4(body, 0), port: body.readUInt16BE(8), family: 'IPv4' },
          destination: { address: ipv4(body, 4), port: body.readUInt16BE(10), family: 'IPv4' },
        },
      };
    case 2:
      return {
        state: 'header',
        header: {
          version: 2,
          length,
          kind: 'proxy',
          source: { address: ipv6(body, 0), port: body.readUInt16BE(32), family: 'IPv6' },
          destination: { address: ipv6(body, 16), port: body.readUInt16BE(34), family: 'IPv6' },
        },
      };
    default:
      return {
        state: 'header',
        header: { version: 2, length, kind: 'unix', unixSource: unixPath(body, 0), unixDestination: unixPath(body, 108) },
      };
  }
}

function ipv4(body: Buffer, at: number): string {
  return `${body[at]}.${body[at + 1]}.${body[at + 2]}.${body[at + 3]}`;
}

/** An IPv6 address in its canonical text (through SocketAddress, which compresses zeros). */
function ipv6(body: Buffer, at: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(body.readUInt16BE(at + 2 * i).toString(16));
  return canonicalIpv6(groups.join(':'));
}

/** An IPv6 address in its canonical text (SocketAddress compresses zeros, lowercases). */
export function canonicalIpv6(address: string): string {
  return new net.SocketAddress({ address, family: 'ipv6' }).address;
}

function unixPath(body: Buffer, at: number): string {
  const field = body.subarray(at, at + 108);
  const nul = field.indexOf(0);
  return field.subarray(0, nul === -1 ? field.length : nul).toString('utf8');
}

/** What a v2 header built by {@link encodeProxyV2} carries. */
export type ProxyV2Input =
  | { kind: 'local' }
  | { kind: 'proxy'; source: ProxyEndpoint; destination: ProxyEndpoint }
  | { kind: 'unix'; source: string; destination: string };

/**
 * A v2 header (command PROXY over STREAM, or LOCAL), without TLVs. Both endpoints of an
 * IP header must be of one family: an IPv4 source with an IPv6 destination is sent with
 * the IPv4 address mapped into IPv6 (as HAProxy does).
 */
export function encodeProxyV2(input: ProxyV2Input): Buffer {
  let familyProtocol = 0;
  let body: Buffer = Buffer.alloc(0);
  if (input.kind === 'proxy') {
    const v6 = input.source.family === 'IPv6' || input.destination.family === 'IPv6';
    if (v6) {
      body = Buffer.alloc(36);
      ipv6Bytes(input.source.address).copy(body, 0);
      ipv6Bytes(input.destination.address).copy(body, 16);
      body.writeUInt16BE(input.source.port, 32);
      body.writeUInt16BE(input.destination.port, 34);
      familyProtocol = 0x21;
    } else {
      body = Buffer.alloc(12);
      Buffer.from(input.source.address.split('.').map(Number)).copy(body, 0);
      Buffer.from(input.destination.address.split('.').map(Number)).copy(body, 4);
      body.writeUInt16BE(input.source.port, 8);
      body.writeUInt16BE(input.destination.port, 10);
      familyProtocol = 0x11;
    }
  } else if (input.kind === 'unix') {
    body = Buffer.alloc(216);
    // Paths longer than the field are cut (a sun_path holds 108 bytes, NUL included).
    Buffer.from(input.source, 'utf8').subarray(0, 107).copy(body, 0);
    Buffer.from(input.destination, 'utf8').subarray(0, 107).copy(body, 108);
    familyProtocol = 0x31;
  }
  const head = Buffer.alloc(V2_FIXED);
  V2_SIGNATURE.copy(head, 0);
  head[12] = input.kind === 'local' ? 0x20 : 0x21;
  head[13] = familyProtocol;
  head.writeUInt16BE(body.length, 14);
  return Buffer.concat([head, body]);
}

/** The 16 bytes of an IPv6 address (an IPv4 one is mapped: ::ffff:a.b.c.d). */
function ipv6Bytes(address: string): Buffer {
  const out = Buffer.alloc(16);
  if (net.isIPv4(address)) {
    out.writeUInt16BE(0xffff, 10);
    Buffer.from(address.split('.').map(Number)).copy(out, 12);
    return out;
  }
  let text = address;
  // A dotted IPv4 tail (::ffff:1.2.3.4) becomes two groups.
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted[1]!.split('.').map(Number) as [number, number, number, number];
    text = text.slice(0, dotted.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? (text.split('::') as [string, string]) : [text, undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined ? headGroups : [...headGroups, ...Array(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), 2 * i));
  return out;
}

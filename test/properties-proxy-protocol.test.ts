/**
 * Property tests of gateways/proxy-protocol.ts: a valid header (v1 TCP4/TCP6/UNKNOWN; v2
 * PROXY over INET/INET6/UNIX/UNSPEC with TLVs, and LOCAL) followed by anything is read
 * the same whatever the chunking: every proper prefix of the header asks for more, every
 * longer one gives the header and its exact length. Plus the bad inputs of the format.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { V1_MAX_LENGTH, V2_SIGNATURE, encodeProxyV2, parseProxyHeader, type ProxyHeader } from '../gateways/proxy-protocol.js';

function check(t: ExecutionContext, property: fc.IProperty<never> | fc.IProperty<any>, numRuns: number): void {
  fc.assert(property, { numRuns, includeErrorInReport: true });
  t.pass();
}

function canonical6(address: string): string {
  return new net.SocketAddress({ address, family: 'ipv6' }).address;
}

/** A header as bytes and what reading it must give (length and addresses). */
interface Sample {
  bytes: Buffer;
  expected: Omit<ProxyHeader, 'length'>;
}

const port = fc.integer({ min: 0, max: 65535 });

const v1Tcp4 = fc.tuple(fc.ipV4(), fc.ipV4(), port, port).map(([s, d, sp, dp]): Sample => ({
  bytes: Buffer.from(`PROXY TCP4 ${s} ${d} ${sp} ${dp}\r\n`, 'latin1'),
  expected: {
    version: 1,
    kind: 'proxy',
    source: { address: s, port: sp, family: 'IPv4' },
    destination: { address: d, port: dp, family: 'IPv4' },
  },
}));

const v1Tcp6 = fc.tuple(fc.ipV6(), fc.ipV6(), port, port).map(([s, d, sp, dp]): Sample => ({
  bytes: Buffer.from(`PROXY TCP6 ${s} ${d} ${sp} ${dp}\r\n`, 'latin1'),
  expected: {
    version: 1,
    kind: 'proxy',
    source: { address: canonical6(s), port: sp, family: 'IPv6' },
    destination: { address: canonical6(d), port: dp, family: 'IPv6' },
  },
}));

const v1Unknown = fc.constantFrom('PROXY UNKNOWN\r\n', 'PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n').map(
  (text): Sample => ({ bytes: Buffer.from(text, 'latin1'), expected: { version: 1, kind: 'local' } }),
);

/** TLVs as the v2 body's tail: type, 16-bit length, value (the parser skips them). */
const tlvs = fc
  .array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 40 })), { maxLength: 4 })
  .map((list) => Buffer.concat(list.map(([type, value]) => Buffer.concat([Buffer.from([type, value.length >> 8, value.length & 0xff]), value]))));

/** A v2 header from encodeProxyV2 with `extra` bytes (TLVs) appended to its body. */
function withTlvs(header: Buffer, extra: Buffer): Buffer {
  const out = Buffer.concat([header, extra]);
  out.writeUInt16BE(header.readUInt16BE(14) + extra.length, 14);
  return out;
}

const v2Inet = fc.tuple(fc.ipV4(), fc.ipV4(), port, port, tlvs).map(([s, d, sp, dp, extra]): Sample => ({
  bytes: withTlvs(
    encodeProxyV2({ kind: 'proxy', source: { address: s, port: sp, family: 'IPv4' }, destination: { address: d, port: dp, family: 'IPv4' } }),
    extra,
  ),
  expected: {
    version: 2,
    kind: 'proxy',
    source: { address: s, port: sp, family: 'IPv4' },
    destination: { address: d, port: dp, family: 'IPv4' },
  },
}));

const v2Inet6 = fc.tuple(fc.ipV6(), fc.ipV6(), port, port, tlvs).map(([s, d, sp, dp, extra]): Sample => ({
  bytes: withTlvs(
    encodeProxyV2({ kind: 'proxy', source: { address: s, port: sp, family: 'IPv6' }, destination: { address: d, port: dp, family: 'IPv6' } }),
    extra,
  ),
  expected: {
    version: 2,
    kind: 'proxy',
    source: { address: canonical6(s), port: sp, family: 'IPv6' },
    destination: { address: canonical6(d), port: dp, family: 'IPv6' },
  },
}));

const unixPath = fc.stringMatching(/^\/[a-z0-9/._-]{0,100}$/);
const v2Unix = fc.tuple(unixPath, unixPath, tlvs).map(([s, d, extra]): Sample => ({
  bytes: withTlvs(encodeProxyV2({ kind: 'unix', source: s, destination: d }), extra),
  expected: { version: 2, kind: 'unix', unixSource: s, unixDestination: d },
}));

/** LOCAL with any body (HAProxy's health checks send an address block; it is ignored). */
const v2Local = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.uint8Array({ maxLength: 300 })).map(([family, body]): Sample => {
  const head = Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, (family << 4) | 1, body.length >> 8, body.length & 0xff])]);
  return { bytes: Buffer.concat([head, body]), expected: { version: 2, kind: 'local' } };
});

const v2Unspec = fc.uint8Array({ maxLength: 64 }).map((body): Sample => {
  const head = Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x00, body.length >> 8, body.length & 0xff])]);
  return { bytes: Buffer.concat([head, body]), expected: { version: 2, kind: 'unspec' } };
});

const anyHeader = fc.oneof(v1Tcp4, v1Tcp6, v1Unknown, v2Inet, v2Inet6, v2Unix, v2Local, v2Unspec);

test('every prefix of a valid header asks for more; the whole header and anything after it give the header', (t) => {
  check(
    t,
    fc.property(anyHeader, fc.uint8Array({ maxLength: 64 }), ({ bytes, expected }, tail) => {
      for (let n = 0; n < bytes.length; n++) {
        assert.deepEqual(parseProxyHeader(bytes.subarray(0, n)), { state: 'more' }, `prefix of ${n} of ${bytes.length} bytes`);
      }
      const whole = Buffer.concat([bytes, tail]);
      for (let n = bytes.length; n <= whole.length; n++) {
        assert.deepEqual(parseProxyHeader(whole.subarray(0, n)), { state: 'header', header: { ...expected, length: bytes.length } });
      }
    }),
    300,
  );
});

test('a header split into any chunks is read once, at its last byte, and the bytes after it are left', (t) => {
  check(
    t,
    fc.property(anyHeader, fc.uint8Array({ maxLength: 32 }), fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 60 }), ({ bytes }, tail, sizes) => {
      const whole = Buffer.concat([bytes, tail]);
      // The reader of proxy-step.ts: concatenate what arrived, parse after each chunk.
      let received: Buffer = Buffer.alloc(0);
      let at = 0;
      let i = 0;
      while (at < whole.length) {
        const size = sizes[i++ % sizes.length]!;
        received = Buffer.concat([received, whole.subarray(at, at + size)]);
        at += size;
        const parsed = parseProxyHeader(received);
        if (received.length < bytes.length) {
          assert.equal(parsed.state, 'more');
          continue;
        }
        assert.equal(parsed.state, 'header');
        if (parsed.state !== 'header') return;
        assert.deepEqual(received.subarray(parsed.header.length), whole.subarray(bytes.length, at));
        return;
      }
      assert.fail('the header was never complete');
    }),
    300,
  );
});

test('arbitrary bytes never throw, and never ask for more past the longest header they could start', (t) => {
  check(
    t,
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }).map(Buffer.from), fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.concat([Buffer.from('PROXY '), b])), fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.concat([V2_SIGNATURE, b]))), (bytes) => {
      const parsed = parseProxyHeader(bytes);
      if (parsed.state !== 'more') return;
      if (bytes.subarray(0, 6).equals(Buffer.from('PROXY '))) assert.ok(bytes.length < V1_MAX_LENGTH, 'a v1 line is decided within 107 bytes');
      if (bytes.length >= 16 && bytes.subarray(0, 12).equals(V2_SIGNATURE)) assert.ok(bytes.length < 16 + bytes.readUInt16BE(14));
    }),
    2000,
  );
});

test('bytes that cannot start a header are "none" at once (TLS ClientHello, HTTP, a service name)', (t) => {
  for (const text of ['\x16\x03\x01', 'GET / HTTP/1.1\r\n', 'pong', 'PROXx', 'P\x00']) {
    t.deepEqual(parseProxyHeader(Buffer.from(text, 'latin1')), { state: 'none' }, JSON.stringify(text));
  }
  t.deepEqual(parseProxyHeader(Buffer.from('PROX')), { state: 'more' });
});

/** The reason of an `invalid` answer, or a failure. */
function reasonOf(t: ExecutionContext, bytes: Buffer): string {
  const parsed = parseProxyHeader(bytes);
  t.is(parsed.state, 'invalid', `${bytes.toString('hex')} gives ${JSON.stringify(parsed)}`);
  return parsed.state === 'invalid' ? parsed.reason : '';
}

function v2(versionCommand: number, familyProtocol: number, body: Buffer): Buffer {
  return Buffer.concat([V2_SIGNATURE, Buffer.from([versionCommand, familyProtocol, body.length >> 8, body.length & 0xff]), body]);
}

test('malformed v1 lines are invalid, each with its reason', (t) => {
  t.regex(reasonOf(t, Buffer.from(`PROXY TCP4 1.2.3.4 5.6.7.8 1 ${'9'.repeat(120)}`)), /longer than 107/);
  // 106 bytes then CR LF: the LF would be byte 108.
  const long = `PROXY TCP6 ${'a'.repeat(95)}`;
  t.is(long.length, 106);
  t.regex(reasonOf(t, Buffer.from(`${long}\r\n`)), /longer than 107/);
  t.regex(reasonOf(t, Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n')), /expected PROXY/);
  t.regex(reasonOf(t, Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\x00')), /CR not followed by LF/);
  t.regex(reasonOf(t, Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n')), /LF without CR/);
  t.regex(reasonOf(t, Buffer.from('PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n')), /unknown protocol/);
  t.regex(reasonOf(t, Buffer.from('PROXY TCP4 ::1 ::2 1 2\r\n')), /not IPv4/);
  t.regex(reasonOf(t, Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n')), /bad port/);
  t.regex(reasonOf(t, Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n')), /bad port/);
  t.regex(reasonOf(t, Buffer.from('PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n')), /expected PROXY/);
  // A valid line of exactly 107 bytes is read.
  const address = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
  const max = `PROXY TCP6 ${address} ${address} 65535 65535\r\n`;
  t.is(max.length, 104);
  t.is(parseProxyHeader(Buffer.from(max)).state, 'header');
});

test('malformed v2 headers are invalid: signature, version, command, family, protocol, address length', (t) => {
  const inet = Buffer.alloc(12);
  const badSignature = Buffer.from(V2_SIGNATURE);
  badSignature[7] = 0x52;
  t.regex(reasonOf(t, Buffer.concat([badSignature, Buffer.from([0x21, 0x11, 0, 12]), inet])), /bad v2 signature/);
  t.regex(reasonOf(t, Buffer.from('0d0a0d0aff', 'hex')), /bad v2 signature/);
  t.regex(reasonOf(t, v2(0x11, 0x11, inet)), /unknown version 1/);
  t.regex(reasonOf(t, v2(0x31, 0x11, inet)), /unknown version 3/);
  t.regex(reasonOf(t, v2(0x22, 0x11, inet)), /unknown command 2/);
  t.regex(reasonOf(t, v2(0x2f, 0x11, inet)), /unknown command 15/);
  t.regex(reasonOf(t, v2(0x21, 0x41, inet)), /unknown address family 4/);
  t.regex(reasonOf(t, v2(0x21, 0x13, inet)), /unknown transport protocol 3/);
  t.regex(reasonOf(t, v2(0x21, 0x11, Buffer.alloc(11))), /11 address bytes, family 1 needs 12/);
  t.regex(reasonOf(t, v2(0x21, 0x21, Buffer.alloc(12))), /family 2 needs 36/);
  t.regex(reasonOf(t, v2(0x21, 0x31, Buffer.alloc(100))), /family 3 needs 216/);
  // Decided from the first bytes, before the body arrives.
  t.regex(reasonOf(t, v2(0x22, 0x11, inet).subarray(0, 13)), /unknown command/);
});

test('a v2 length beyond what arrived asks for more (the connection deadline ends it)', (t) => {
  const header = v2(0x21, 0x11, Buffer.alloc(12));
  header.writeUInt16BE(60_000, 14);
  t.deepEqual(parseProxyHeader(Buffer.concat([header, Buffer.alloc(1000)])), { state: 'more' });
});

test('encodeProxyV2 maps an IPv4 endpoint into IPv6 when the other is IPv6', (t) => {
  const bytes = encodeProxyV2({
    kind: 'proxy',
    source: { address: '10.1.2.3', port: 1, family: 'IPv4' },
    destination: { address: '::1', port: 2, family: 'IPv6' },
  });
  const parsed = parseProxyHeader(bytes);
  t.is(parsed.state, 'header');
  if (parsed.state === 'header') t.is(parsed.header.source?.address, '::ffff:10.1.2.3');
  t.deepEqual(parseProxyHeader(encodeProxyV2({ kind: 'local' })), { state: 'header', header: { version: 2, length: 16, kind: 'local' } });
});

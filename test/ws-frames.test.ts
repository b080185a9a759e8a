/**
 * gateways/ws-frames.ts, wsd's own RFC 6455 frame reader, against a model: the messages,
 * control frames and violation a whole byte string holds, read in one pass. The parser
 * must agree with it whatever the chunking, reading chunks in place (as wsd does: the
 * socket's reads are its own) or not, and must leave every byte outside the frames it
 * turned into messages as it was.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { constants as bufferConstants } from 'node:buffer';
import { REPO_ROOT } from './helpers/paths.js';
import { MAX_MESSAGE, WsFrameParser, WsOpcode, isValidCloseCode, wsCloseFrame, wsFrame, wsHeaderSize, writeWsHeader, type WsFrameError, type WsFrameSink } from '../gateways/ws-frames.js';
import { encodeWsFrame, decodeWsFrame } from './helpers/ws-raw.js';
import { chunked } from './helpers/chunks.js';

function check(t: ExecutionContext, property: fc.IProperty<never> | fc.IProperty<any>, numRuns: number): void {
  fc.assert(property, { numRuns, includeErrorInReport: true });
  t.pass();
}

type Event = { kind: 'message'; frame: Buffer } | { kind: 'ping' | 'pong'; payload: Buffer } | { kind: 'close'; code: number; reason: string };

/** Collects what the parser hands over, copying (a message may be a view into a chunk). */
function collector(): { events: Event[]; sink: WsFrameSink } {
  const events: Event[] = [];
  return {
    events,
    sink: {
      onMessage: (frame) => events.push({ kind: 'message', frame: Buffer.from(frame) }),
      onPing: (payload) => events.push({ kind: 'ping', payload: Buffer.from(payload) }),
      onPong: (payload) => events.push({ kind: 'pong', payload: Buffer.from(payload) }),
      onClose: (code, reason) => events.push({ kind: 'close', code, reason: reason.toString('utf8') }),
    },
  };
}

/** Feeds `chunks` (copies: in place, the parser writes into them) and returns events and the error. */
function parse(chunks: Buffer[], maxPayload: number, inPlace: boolean): { events: Event[]; error: WsFrameError | null } {
  const parser = new WsFrameParser(maxPayload, inPlace);
  const { events, sink } = collector();
  for (const chunk of chunks) {
    const error = parser.push(Buffer.from(chunk), sink);
    if (error) return { events, error };
  }
  return { events, error: null };
}

/** A libipc frame of `payload`. */
function ipcFrame(payload: Buffer): Buffer {
  const frame = Buffer.alloc(4 + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  payload.copy(frame, 4);
  return frame;
}


/** One message of the stream: its payload, sent in one frame or in fragments, with pings between. */
interface Message {
  payload: Buffer;
  text: boolean;
  fragments: number[];
  pingBetween: boolean;
}

const payloadArb = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ minLength: 0, maxLength: 140 }) },
  { weight: 1, arbitrary: fc.integer({ min: 125, max: 70_000 }).map((n) => new Uint8Array(n).map((_, i) => (i * 7 + n) & 0xff)) },
);
const messageArb: fc.Arbitrary<Message> = fc.record({
  payload: payloadArb.map((p) => Buffer.from(p)),
  text: fc.boolean(),
  fragments: fc.array(fc.nat(), { maxLength: 3 }),
  pingBetween: fc.boolean(),
});

/** Encodes the messages (text only when valid UTF-8) and says what the parser must hand over. */
function streamOf(messages: Message[]): { bytes: Buffer; expected: Event[] } {
  const parts: Buffer[] = [];
  const expected: Event[] = [];
  for (const m of messages) {
    const opcode = m.text && Buffer.from(m.payload.toString('utf8')).equals(m.payload) ? WsOpcode.TEXT : WsOpcode.BINARY;
    const cuts = [...new Set(m.fragments.map((c) => c % (m.payload.length + 1)))].sort((a, b) => a - b);
    const pieces = chunked(m.payload, cuts);
    pieces.forEach((piece, i) => {
      parts.push(encodeWsFrame(i === 0 ? opcode : WsOpcode.CONTINUATION, piece, { fin: i === pieces.length - 1 }));
      // A ping between two fragments of a message (§5.4: control frames may come in between).
      if (m.pingBetween && i === 0 && pieces.length > 1) {
        parts.push(encodeWsFrame(WsOpcode.PING, Buffer.from('p')));
        expected.push({ kind: 'ping', payload: Buffer.from('p') });
      }
    });
    expected.push({ kind: 'message', frame: ipcFrame(m.payload) });
  }
  parts.push(encodeWsFrame(WsOpcode.CLOSE, Buffer.concat([Buffer.from([0x0f, 0xa0]), Buffer.from('bye')])));
  expected.push({ kind: 'close', code: 4000, reason: 'bye' });
  return { bytes: Buffer.concat(parts), expected };
}

test('messages, fragments, pings and the close come out as sent, whatever the chunking, in place or not', (t) => {
  check(
    t,
    fc.property(fc.array(messageArb, { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 12 }), fc.boolean(), (messages, cuts, inPlace) => {
      const { bytes, expected } = streamOf(messages);
      const { events, error } = parse(chunked(bytes, cuts), 100_000, inPlace);
      assert.equal(error, null);
      assert.deepEqual(events, expected);
    }),
    300,
  );
});

test('byte by byte: the same messages (headers kept across reads of one byte)', (t) => {
  const { bytes, expected } = streamOf([
    { payload: Buffer.from('hello'), text: true, fragments: [], pingBetween: true },
    { payload: Buffer.alloc(300, 7), text: false, fragments: [100, 200], pingBetween: false },
    { payload: Buffer.alloc(70_000, 9), text: false, fragments: [], pingBetween: false },
  ]);
  const chunks = [...bytes].map((b) => Buffer.from([b]));
  t.deepEqual(parse(chunks, 100_000, true), { events: expected, error: null });
});

test('in place: the message is a view of the read, its libipc header over the mask, nothing else of the read changed', (t) => {
  const first = encodeWsFrame(WsOpcode.BINARY, Buffer.from('abcdefgh'));
  const second = encodeWsFrame(WsOpcode.BINARY, Buffer.from('xyz'));
  const read = Buffer.concat([first, second.subarray(0, 3)]);
  const before = Buffer.from(read);
  const frames: Buffer[] = [];
  const parser = new WsFrameParser(1000, true);
  t.is(parser.push(read, { onMessage: (f) => frames.push(f), onPing() {}, onPong() {}, onClose() {} }), null);
  t.is(frames.length, 1);
  t.is(frames[0]!.buffer, read.buffer, 'no copy');
  t.deepEqual(frames[0], ipcFrame(Buffer.from('abcdefgh')));
  // The frame's own 2 header bytes, and the split header of the next, are untouched.
  t.deepEqual(read.subarray(0, 2), before.subarray(0, 2));
  t.deepEqual(read.subarray(first.length), before.subarray(first.length));
});

test('not in place: the chunks are only read', (t) => {
  const bytes = encodeWsFrame(WsOpcode.BINARY, Buffer.from('abcdefgh'));
  const chunk = Buffer.from(bytes);
  const parser = new WsFrameParser(1000, false);
  const { events, sink } = collector();
  t.is(parser.push(chunk, sink), null);
  t.deepEqual(chunk, bytes);
  t.deepEqual(events, [{ kind: 'message', frame: ipcFrame(Buffer.from('abcdefgh')) }]);
});

test('the limit is on whole messages: a frame of maxPayload passes, one byte more over fragments is 1009 before any payload', (t) => {
  const ok = parse([encodeWsFrame(WsOpcode.BINARY, Buffer.alloc(1000, 1))], 1000, true);
  t.is(ok.error, null);
  t.is(ok.events.length, 1);
  const over = parse(
    [encodeWsFrame(WsOpcode.BINARY, Buffer.alloc(600), { fin: false }), encodeWsFrame(WsOpcode.CONTINUATION, Buffer.alloc(401)).subarray(0, 8)],
    1000,
    true,
  );
  t.is(over.error?.code, 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH');
  t.is(over.error?.closeCode, 1009);
  // A 64-bit length with the top bits set (no payload needed to know).
  const huge = Buffer.from([0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0]);
  t.is(parse([huge], 1000, true).error?.code, 'WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH');
  t.is(parse([Buffer.from([0x82, 0xfe, 0x03, 0xe9])], 1000, true).error?.closeCode, 1009, 'checked once the 16-bit length is there, before the mask');
});

const violations: Array<[string, Buffer[], string, number]> = [
  ['an unmasked frame', [encodeWsFrame(WsOpcode.BINARY, Buffer.from('x'), { mask: false })], 'WS_ERR_EXPECTED_MASK', 1002],
  ['RSV1', [withFirstByte(0x40, encodeWsFrame(WsOpcode.BINARY, Buffer.from('x')))], 'WS_ERR_UNEXPECTED_RSV_1', 1002],
  ['RSV2', [withFirstByte(0x20, encodeWsFrame(WsOpcode.BINARY, Buffer.from('x')))], 'WS_ERR_UNEXPECTED_RSV_2_3', 1002],
  ['opcode 3', [encodeWsFrame(0x3, Buffer.from('x'))], 'WS_ERR_INVALID_OPCODE', 1002],
  ['opcode 0xB', [encodeWsFrame(0xb, Buffer.from('x'))], 'WS_ERR_INVALID_OPCODE', 1002],
  ['a continuation without a start', [encodeWsFrame(WsOpcode.CONTINUATION, Buffer.from('x'))], 'WS_ERR_INVALID_OPCODE', 1002],
  [
    'a new message inside a fragmented one',
    [encodeWsFrame(WsOpcode.BINARY, Buffer.from('x'), { fin: false }), encodeWsFrame(WsOpcode.TEXT, Buffer.from('y'))],
    'WS_ERR_INVALID_OPCODE',
    1002,
  ],
  ['a fragmented ping', [encodeWsFrame(WsOpcode.PING, Buffer.from('x'), { fin: false })], 'WS_ERR_EXPECTED_FIN', 1002],
  ['a ping of 126 bytes', [encodeWsFrame(WsOpcode.PING, Buffer.alloc(126))], 'WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH', 1002],
  ['a close of 1 byte', [encodeWsFrame(WsOpcode.CLOSE, Buffer.from([3]))], 'WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH', 1002],
  ['close code 1005', [encodeWsFrame(WsOpcode.CLOSE, Buffer.from([0x03, 0xed]))], 'WS_ERR_INVALID_CLOSE_CODE', 1002],
  ['a close reason that is not UTF-8', [encodeWsFrame(WsOpcode.CLOSE, Buffer.from([0x03, 0xe8, 0xff]))], 'WS_ERR_INVALID_UTF8', 1007],
  ['invalid UTF-8 in a text message', [encodeWsFrame(WsOpcode.TEXT, Buffer.from([0x68, 0xc3, 0x28]))], 'WS_ERR_INVALID_UTF8', 1007],
  [
    'invalid UTF-8 split over fragments',
    [encodeWsFrame(WsOpcode.TEXT, Buffer.from([0x68, 0xe2, 0x82]), { fin: false }), encodeWsFrame(WsOpcode.CONTINUATION, Buffer.from([0x28]))],
    'WS_ERR_INVALID_UTF8',
    1007,
  ],
];

function withFirstByte(bits: number, frame: Buffer): Buffer {
  const copy = Buffer.from(frame);
  copy[0] = copy[0]! | bits;
  return copy;
}

for (const [what, frames, code, closeCode] of violations) {
  test(`a violation, ${what}: ${code} and close code ${closeCode}, messages before it handed over, nothing after`, (t) => {
    const good = encodeWsFrame(WsOpcode.BINARY, Buffer.from('before'));
    const after = encodeWsFrame(WsOpcode.BINARY, Buffer.from('after'));
    for (const inPlace of [true, false]) {
      const { events, error } = parse([Buffer.concat([good, ...frames, after])], 1000, inPlace);
      t.is(error?.code, code);
      t.is(error?.closeCode, closeCode);
      t.deepEqual(events, [{ kind: 'message', frame: ipcFrame(Buffer.from('before')) }]);
    }
  });
}

test('empty fragments are not kept: 20,000 of them inside one message hold nothing, and the message comes out whole', (t) => {
  const parser = new WsFrameParser(1000, false);
  const { events, sink } = collector();
  t.is(parser.push(encodeWsFrame(WsOpcode.TEXT, Buffer.from('he'), { fin: false }), sink), null);
  const empty = encodeWsFrame(WsOpcode.CONTINUATION, Buffer.alloc(0), { fin: false });
  for (let i = 0; i < 20_000; i++) t.is(parser.push(Buffer.from(empty), sink), null);
  const kept = (parser as unknown as { fragments: Buffer[] | null }).fragments;
  t.is(kept?.length, 1, 'only the non-empty fragment is held');
  t.is(parser.push(encodeWsFrame(WsOpcode.CONTINUATION, Buffer.from('llo')), sink), null);
  t.deepEqual(events, [{ kind: 'message', frame: ipcFrame(Buffer.from('hello')) }]);
});

test('a --max-payload above what one Buffer holds: a frame announcing 2^32 - 1 bytes is 1009 from its header, nothing allocated', (t) => {
  t.is(MAX_MESSAGE, bufferConstants.MAX_LENGTH - 14);
  const header = Buffer.from([0x82, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
  for (const inPlace of [false, true]) {
    const { events, error } = parse([header], 0xffff_ffff, inPlace);
    t.deepEqual(events, []);
    t.is(error?.closeCode, 1009);
  }
  // Just under the cap the header is accepted (the payload would follow).
  const under = Buffer.from(header);
  under.writeUInt32BE(MAX_MESSAGE, 6);
  t.is(parse([under], 0xffff_ffff, false).error, null);
});

test('a text message split inside a multi-byte character is valid', (t) => {
  const euro = Buffer.from('€');
  const { events, error } = parse(
    [encodeWsFrame(WsOpcode.TEXT, euro.subarray(0, 1), { fin: false }), encodeWsFrame(WsOpcode.CONTINUATION, euro.subarray(1))],
    1000,
    true,
  );
  t.is(error, null);
  t.deepEqual(events, [{ kind: 'message', frame: ipcFrame(euro) }]);
});

test('nothing is read after a close frame', (t) => {
  const parser = new WsFrameParser(1000, true);
  const { events, sink } = collector();
  t.is(parser.push(Buffer.concat([encodeWsFrame(WsOpcode.CLOSE, Buffer.alloc(0)), encodeWsFrame(WsOpcode.BINARY, Buffer.from('x'))]), sink), null);
  t.true(parser.done);
  t.deepEqual(events, [{ kind: 'close', code: 1005, reason: '' }]);
});

test('close codes a peer may send (RFC 6455 §7.4)', (t) => {
  for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]) t.true(isValidCloseCode(code), String(code));
  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]) t.false(isValidCloseCode(code), String(code));
});

test('server frames: unmasked, final, the three length forms', (t) => {
  for (const length of [0, 125, 126, 65535, 65536, 99_992]) {
    const payload = Buffer.alloc(length, 0x5a);
    const frame = wsFrame(WsOpcode.BINARY, payload);
    t.is(frame.length, wsHeaderSize(length) + length);
    const decoded = decodeWsFrame(frame);
    t.deepEqual(decoded?.frame, { fin: true, opcode: WsOpcode.BINARY, masked: false, payload });
    t.is(decoded?.size, frame.length);
  }
  const header = Buffer.alloc(10);
  writeWsHeader(header, WsOpcode.TEXT, 2 ** 32 + 5);
  t.deepEqual([...header], [0x81, 127, 0, 0, 0, 1, 0, 0, 0, 5]);
  t.deepEqual(decodeWsFrame(wsCloseFrame(1001, 'service closed'))?.frame.payload, Buffer.concat([Buffer.from([0x03, 0xe9]), Buffer.from('service closed')]));
  t.is(decodeWsFrame(wsCloseFrame(1005))?.frame.payload.length, 0, 'no status: an empty close');
});

test('without bufferutil (WS_NO_BUFFER_UTIL=1) long payloads split at every mask phase unmask the same', (t) => {
  const script = `
    const { WsFrameParser } = await import(${JSON.stringify(path.join(REPO_ROOT, 'dist/gateways/ws-frames.js'))});
    const payload = Buffer.alloc(5000).map((_, i) => (i * 13) & 0xff);
    const key = [0x37, 0xfa, 0x21, 0x3d];
    const header = Buffer.from([0x82, 0xfe, 0x13, 0x88, ...key]);
    const frame = Buffer.concat([header, payload.map((b, i) => b ^ key[i & 3])]);
    let ok = true;
    for (const cut of [9, 10, 11, 12, 100, 4001]) {
      let got = null;
      const parser = new WsFrameParser(10000, true);
      const sink = { onMessage: (f) => (got = Buffer.from(f)), onPing() {}, onPong() {}, onClose() {} };
      parser.push(Buffer.from(frame.subarray(0, cut)), sink);
      parser.push(Buffer.from(frame.subarray(cut)), sink);
      ok &&= got !== null && got.readUInt32BE(0) === 5000 && got.subarray(4).equals(payload);
    }
    console.log(ok);`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, WS_NO_BUFFER_UTIL: '1' } });
  t.is(out.trim(), 'true');
});

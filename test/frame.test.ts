import test from 'ava';
import {
  DEFAULT_MAX_PAYLOAD,
  FrameDecoder,
  FrameTracker,
  HEADER_SIZE,
  encodeFrame,
  encodeHeader,
} from '../src/frame.js';
import { ErrorCode, IpcError } from '../src/errors.js';

/** A payload of `length` bytes whose content depends on `seed`, so misplaced bytes show. */
function pattern(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7) & 0xff;
  return out;
}

interface Stream {
  bytes: Buffer;
  payloads: Buffer[];
  /** Offset just after each frame's last byte (its header's end for an empty frame). */
  ends: number[];
}

function stream(payloads: Buffer[]): Stream {
  const frames = payloads.map((p) => encodeFrame(p));
  const ends: number[] = [];
  let offset = 0;
  for (const f of frames) {
    offset += f.length;
    ends.push(offset);
  }
  return { bytes: Buffer.concat(frames), payloads, ends };
}

/** Frames complete within the first `offset` bytes. */
function completeBy(s: Stream, offset: number): number {
  let n = 0;
  while (n < s.ends.length && s.ends[n]! <= offset) n++;
  return n;
}

// Small frames, empty ones first, between and last: cheap enough to split in three everywhere.
const small = stream([
  Buffer.alloc(0),
  Buffer.from('bounce me'),
  Buffer.alloc(0),
  Buffer.from('a'),
  Buffer.alloc(0),
  Buffer.alloc(0),
  pattern(37, 1),
  Buffer.alloc(0),
]);

// The original's largest payload among small and empty frames.
const big = stream([
  Buffer.from('hello'),
  Buffer.alloc(0),
  pattern(DEFAULT_MAX_PAYLOAD, 2),
  Buffer.alloc(0),
  Buffer.from('bye'),
]);

function samePayloads(actual: Buffer[], expected: Buffer[]): boolean {
  return actual.length === expected.length && actual.every((p, i) => p.equals(expected[i]!));
}

const tooLargeCode = { instanceOf: IpcError, code: ErrorCode.PAYLOAD_TOO_LARGE } as const;
const truncatedCode = { instanceOf: IpcError, code: ErrorCode.TRUNCATED_FRAME } as const;

// encodeFrame / encodeHeader

test('encodeFrame writes the big-endian length then the payload, as the original pong does', (t) => {
  t.is(encodeFrame('bounce me').toString('hex'), '00000009626f756e6365206d65');
  t.is(encodeFrame(Buffer.from('bounce me')).toString('hex'), '00000009626f756e6365206d65');
  t.is(encodeFrame(new Uint8Array([1, 2, 3])).toString('hex'), '00000003010203');
});

test('encodeFrame of an empty payload is a bare zero header', (t) => {
  t.is(encodeFrame('').toString('hex'), '00000000');
  t.is(encodeFrame(Buffer.alloc(0)).toString('hex'), '00000000');
});

test('encodeFrame counts bytes, not characters, for non-ASCII strings', (t) => {
  const frame = encodeFrame('é€');
  t.is(frame.readUInt32BE(0), 5);
  t.is(frame.subarray(HEADER_SIZE).toString(), 'é€');
});

test('encodeFrame carries the largest payload unchanged', (t) => {
  const payload = pattern(DEFAULT_MAX_PAYLOAD, 3);
  const frame = encodeFrame(payload);
  t.is(frame.length, HEADER_SIZE + DEFAULT_MAX_PAYLOAD);
  t.is(frame.toString('hex', 0, HEADER_SIZE), '00018698');
  t.true(frame.subarray(HEADER_SIZE).equals(payload));
});

test('encodeFrame returns a new buffer that does not alias the payload', (t) => {
  const payload = Buffer.from('abc');
  const frame = encodeFrame(payload);
  payload[0] = 0x7a;
  t.is(frame.subarray(HEADER_SIZE).toString(), 'abc');
});

test('encodeHeader writes lengths up to 0xffffffff unsigned', (t) => {
  t.is(encodeHeader(0).toString('hex'), '00000000');
  t.is(encodeHeader(99_993).toString('hex'), '00018699');
  t.is(encodeHeader(0x80000000).toString('hex'), '80000000');
  t.is(encodeHeader(0xffffffff).toString('hex'), 'ffffffff');
});

// FrameDecoder: streams

test('FrameDecoder returns every payload of a stream fed whole, empty frames included', (t) => {
  for (const s of [small, big]) {
    const decoder = new FrameDecoder();
    t.true(samePayloads(decoder.push(s.bytes), s.payloads));
    t.is(decoder.pendingBytes, 0);
    t.notThrows(() => decoder.end());
  }
});

test('FrameDecoder returns a payload that sits in one chunk as a view of that chunk', (t) => {
  const chunk = encodeFrame('view me');
  const [payload] = new FrameDecoder().push(chunk);
  t.is(payload?.toString(), 'view me');
  t.is(payload?.buffer, chunk.buffer);
});

test('FrameDecoder fed one byte at a time returns each payload as its last byte arrives', (t) => {
  for (const s of [small, big]) {
    const decoder = new FrameDecoder();
    const got: Buffer[] = [];
    let wrongCount = 0;
    for (let i = 0; i < s.bytes.length; i++) {
      got.push(...decoder.push(s.bytes.subarray(i, i + 1)));
      if (got.length !== completeBy(s, i + 1)) wrongCount++;
    }
    t.is(wrongCount, 0);
    t.true(samePayloads(got, s.payloads));
    t.is(decoder.pendingBytes, 0);
    t.notThrows(() => decoder.end());
  }
});

test('FrameDecoder gives the same payloads when a stream is split in two at every offset', (t) => {
  for (const s of [small, big]) {
    const failures: number[] = [];
    for (let i = 0; i <= s.bytes.length; i++) {
      const decoder = new FrameDecoder();
      const first = decoder.push(s.bytes.subarray(0, i));
      const second = decoder.push(s.bytes.subarray(i));
      const ok =
        first.length === completeBy(s, i) &&
        samePayloads([...first, ...second], s.payloads) &&
        decoder.pendingBytes === 0;
      if (!ok && failures.length < 10) failures.push(i);
      decoder.end();
    }
    t.deepEqual(failures, [], `split offsets that failed (stream of ${s.bytes.length} bytes)`);
  }
});

test('FrameDecoder gives the same payloads when a stream is split in three at every pair of offsets', (t) => {
  const s = small;
  const failures: string[] = [];
  for (let i = 0; i <= s.bytes.length; i++) {
    for (let j = i; j <= s.bytes.length; j++) {
      const decoder = new FrameDecoder();
      const got = [
        ...decoder.push(s.bytes.subarray(0, i)),
        ...decoder.push(s.bytes.subarray(i, j)),
        ...decoder.push(s.bytes.subarray(j)),
      ];
      if (!samePayloads(got, s.payloads) && failures.length < 10) failures.push(`${i},${j}`);
    }
  }
  t.deepEqual(failures, []);
});

test('FrameDecoder holds back a partial frame and counts its bytes as pending', (t) => {
  const decoder = new FrameDecoder();
  const frame = encodeFrame('abcdef');
  t.deepEqual(decoder.push(frame.subarray(0, 2)), []);
  t.is(decoder.pendingBytes, 2);
  t.deepEqual(decoder.push(frame.subarray(2, 7)), []);
  t.is(decoder.pendingBytes, 3);
  const [payload] = decoder.push(frame.subarray(7));
  t.is(payload?.toString(), 'abcdef');
  t.is(decoder.pendingBytes, 0);
});

test('FrameDecoder ignores empty chunks', (t) => {
  const decoder = new FrameDecoder();
  t.deepEqual(decoder.push(Buffer.alloc(0)), []);
  const frame = encodeFrame('x');
  t.deepEqual(decoder.push(frame.subarray(0, 3)), []);
  t.deepEqual(decoder.push(Buffer.alloc(0)), []);
  t.deepEqual(
    decoder.push(frame.subarray(3)).map((p) => p.toString()),
    ['x'],
  );
});

test('FrameDecoder payloads that span chunks stay intact after the chunks are reused', (t) => {
  const decoder = new FrameDecoder();
  const frame = encodeFrame('spanning');
  const a = Buffer.from(frame.subarray(0, 6));
  const b = Buffer.from(frame.subarray(6));
  decoder.push(a);
  const [payload] = decoder.push(b);
  a.fill(0);
  b.fill(0);
  t.is(payload?.toString(), 'spanning');
});

// FrameDecoder: limits

test('FrameDecoder accepts a header announcing exactly maxPayload', (t) => {
  const decoder = new FrameDecoder();
  t.deepEqual(decoder.push(encodeHeader(DEFAULT_MAX_PAYLOAD)), []);
  t.is(decoder.maxPayload, 99_992);
});

for (const length of [99_993, 0x80000000, 0xffffffff]) {
  test(`FrameDecoder rejects a length of ${length} as soon as the header is complete, before any payload`, (t) => {
    const decoder = new FrameDecoder();
    const header = encodeHeader(length);
    for (let i = 0; i < HEADER_SIZE - 1; i++) t.deepEqual(decoder.push(header.subarray(i, i + 1)), []);
    const err = t.throws(() => decoder.push(header.subarray(HEADER_SIZE - 1)), tooLargeCode);
    t.is(decoder.error, err);
    t.true(err?.message.includes(String(length)));
    t.true(err?.message.includes('99992'));
    // Nothing of the frame is kept.
    t.is(decoder.pendingBytes, 0);
  });
}

test('FrameDecoder returns the payloads completed before an oversize header in the same chunk, then reports it', (t) => {
  const decoder = new FrameDecoder();
  t.is(decoder.error, null);
  const payloads = decoder.push(Buffer.concat([encodeFrame('ok'), encodeFrame(''), encodeHeader(0xffffffff), Buffer.from('junk')]));
  t.deepEqual(
    payloads.map((p) => p.toString()),
    ['ok', ''],
  );
  t.true(decoder.error instanceof IpcError);
  t.is(decoder.error?.code, ErrorCode.PAYLOAD_TOO_LARGE);
  t.is(decoder.pendingBytes, 0);
  const err = t.throws(() => decoder.push(encodeFrame('later')), tooLargeCode);
  t.true(err === decoder.error);
});

test('FrameDecoder delivers exactly the complete frames before an oversize header and reports it, at every split', (t) => {
  const good = [Buffer.from('one'), Buffer.alloc(0), pattern(40, 8)];
  const all = Buffer.concat([...good.map((p) => encodeFrame(p)), encodeHeader(99_993), Buffer.from('tail')]);
  const failures: number[] = [];
  for (let i = 0; i <= all.length; i++) {
    const decoder = new FrameDecoder();
    const got: Buffer[] = [];
    let thrown: unknown = null;
    for (const chunk of [all.subarray(0, i), all.subarray(i)]) {
      try {
        got.push(...decoder.push(chunk));
      } catch (err) {
        thrown = err;
        break;
      }
      if (decoder.error) break;
    }
    const error = thrown ?? decoder.error;
    const ok =
      error instanceof IpcError &&
      error.code === ErrorCode.PAYLOAD_TOO_LARGE &&
      (thrown === null || thrown === decoder.error) &&
      samePayloads(got, good) &&
      decoder.pendingBytes === 0;
    if (!ok && failures.length < 10) failures.push(i);
  }
  t.deepEqual(failures, []);
});

test('FrameDecoder stays failed after an oversize header and keeps throwing the same error', (t) => {
  const decoder = new FrameDecoder();
  const first = t.throws(() => decoder.push(encodeHeader(99_993)), tooLargeCode);
  const again = t.throws(() => decoder.push(encodeFrame('later')), tooLargeCode);
  t.is(again, first);
  // end() after a failure does not report a second error.
  t.notThrows(() => decoder.end());
});

test('FrameDecoder honours a custom maxPayload, zero included', (t) => {
  const ten = new FrameDecoder(10);
  t.is(ten.push(encodeFrame(pattern(10, 4)))[0]?.length, 10);
  t.throws(() => ten.push(encodeHeader(11)), tooLargeCode);

  const zero = new FrameDecoder(0);
  t.is(zero.push(Buffer.concat([encodeFrame(''), encodeFrame('')])).length, 2);
  t.throws(() => zero.push(encodeHeader(1)), tooLargeCode);
});

// FrameDecoder: end of stream

test('FrameDecoder end() at a frame boundary is clean', (t) => {
  const decoder = new FrameDecoder();
  t.notThrows(() => decoder.end());
  decoder.push(Buffer.concat([encodeFrame('a'), encodeFrame('')]));
  t.notThrows(() => decoder.end());
});

for (const have of [1, 2, 3]) {
  test(`FrameDecoder end() after ${have} header byte(s) reports a truncated frame`, (t) => {
    const decoder = new FrameDecoder();
    decoder.push(Buffer.concat([encodeFrame('done'), encodeHeader(5).subarray(0, have)]));
    const err = t.throws(() => decoder.end(), truncatedCode);
    t.true(err?.message.includes(`${have} of 4 header bytes`));
  });
}

test('FrameDecoder end() after a complete header but no payload reports a truncated frame', (t) => {
  const decoder = new FrameDecoder();
  decoder.push(encodeHeader(5));
  const err = t.throws(() => decoder.end(), truncatedCode);
  t.true(err?.message.includes('0 of 5 payload bytes'));
});

test('FrameDecoder end() in the middle of a payload reports a truncated frame', (t) => {
  const decoder = new FrameDecoder();
  decoder.push(encodeFrame(pattern(DEFAULT_MAX_PAYLOAD, 5)).subarray(0, 1000));
  const err = t.throws(() => decoder.end(), truncatedCode);
  t.true(err?.message.includes(`996 of ${DEFAULT_MAX_PAYLOAD} payload bytes`));
});

// FrameTracker: streams

test('FrameTracker counts every frame of a stream fed whole and ends at a boundary', (t) => {
  for (const s of [small, big]) {
    const tracker = new FrameTracker();
    t.true(tracker.track(s.bytes));
    t.is(tracker.frames, s.payloads.length);
    t.true(tracker.atBoundary);
    t.is(tracker.endError(), null);
    t.is(tracker.error, null);
  }
});

test('FrameTracker fed one byte at a time counts each frame as its last byte passes', (t) => {
  for (const s of [small, big]) {
    const tracker = new FrameTracker();
    let wrong = 0;
    for (let i = 0; i < s.bytes.length; i++) {
      if (!tracker.track(s.bytes.subarray(i, i + 1))) wrong++;
      if (tracker.frames !== completeBy(s, i + 1)) wrong++;
      if (tracker.atBoundary !== s.ends.includes(i + 1)) wrong++;
    }
    t.is(wrong, 0);
    t.is(tracker.frames, s.payloads.length);
    t.is(tracker.endError(), null);
  }
});

test('FrameTracker counts frames correctly when a stream is split in two at every offset', (t) => {
  for (const s of [small, big]) {
    const failures: number[] = [];
    for (let i = 0; i <= s.bytes.length; i++) {
      const tracker = new FrameTracker();
      const ok =
        tracker.track(s.bytes.subarray(0, i)) &&
        tracker.frames === completeBy(s, i) &&
        (tracker.endError() === null) === (i === 0 || s.ends.includes(i)) &&
        tracker.track(s.bytes.subarray(i)) &&
        tracker.frames === s.payloads.length &&
        tracker.atBoundary &&
        tracker.endError() === null;
      if (!ok && failures.length < 10) failures.push(i);
    }
    t.deepEqual(failures, [], `split offsets that failed (stream of ${s.bytes.length} bytes)`);
  }
});

test('FrameTracker counts frames correctly when a stream is split in three at every pair of offsets', (t) => {
  const s = small;
  const failures: string[] = [];
  for (let i = 0; i <= s.bytes.length; i++) {
    for (let j = i; j <= s.bytes.length; j++) {
      const tracker = new FrameTracker();
      const ok =
        tracker.track(s.bytes.subarray(0, i)) &&
        tracker.track(s.bytes.subarray(i, j)) &&
        tracker.frames === completeBy(s, j) &&
        tracker.track(s.bytes.subarray(j)) &&
        tracker.frames === s.payloads.length &&
        tracker.atBoundary;
      if (!ok && failures.length < 10) failures.push(`${i},${j}`);
    }
  }
  t.deepEqual(failures, []);
});

test('FrameTracker does not modify the chunks it follows', (t) => {
  const copy = Buffer.from(big.bytes);
  const tracker = new FrameTracker();
  tracker.track(copy.subarray(0, 7));
  tracker.track(copy.subarray(7));
  t.true(copy.equals(big.bytes));
});

// FrameTracker: limits

test('FrameTracker accepts a header announcing exactly maxPayload', (t) => {
  const tracker = new FrameTracker();
  t.true(tracker.track(encodeHeader(DEFAULT_MAX_PAYLOAD)));
  t.is(tracker.error, null);
  t.false(tracker.atBoundary);
});

for (const length of [99_993, 0x80000000, 0xffffffff]) {
  test(`FrameTracker rejects a length of ${length} as soon as the header is complete`, (t) => {
    const tracker = new FrameTracker();
    const header = encodeHeader(length);
    for (let i = 0; i < HEADER_SIZE - 1; i++) t.true(tracker.track(header.subarray(i, i + 1)));
    t.false(tracker.track(header.subarray(HEADER_SIZE - 1)));
    t.true(tracker.error instanceof IpcError);
    t.is(tracker.error?.code, ErrorCode.PAYLOAD_TOO_LARGE);
    t.true(tracker.error?.message.includes(String(length)));
    t.is(tracker.errorOffset, 0);
  });
}

test('FrameTracker errorOffset points at the bad header so the complete frames before it pass', (t) => {
  const good = Buffer.concat([encodeFrame('one'), encodeFrame(''), encodeFrame('three')]);
  const chunk = Buffer.concat([good, encodeHeader(0x80000000), Buffer.from('junk')]);
  const tracker = new FrameTracker();
  t.false(tracker.track(chunk));
  t.is(tracker.error?.code, ErrorCode.PAYLOAD_TOO_LARGE);
  t.true(tracker.error instanceof IpcError);
  t.is(tracker.errorOffset, good.length);
  t.true(chunk.subarray(0, tracker.errorOffset).equals(good));
  t.is(tracker.frames, 3);
});

test('FrameTracker lets exactly the complete frames through when a bad header follows, at every split', (t) => {
  const good = Buffer.concat([encodeFrame('one'), encodeFrame(''), encodeFrame(pattern(40, 6))]);
  const bad = encodeHeader(99_993);
  const all = Buffer.concat([good, bad, Buffer.from('tail bytes')]);
  const failures: number[] = [];
  for (let i = 0; i <= all.length; i++) {
    const tracker = new FrameTracker();
    // What a switch forwards: whole accepted chunks, then the acceptable prefix.
    const forwarded: Buffer[] = [];
    let failed = false;
    for (const chunk of [all.subarray(0, i), all.subarray(i)]) {
      if (tracker.track(chunk)) {
        forwarded.push(chunk);
      } else {
        forwarded.push(chunk.subarray(0, tracker.errorOffset));
        failed = true;
        break;
      }
    }
    const out = Buffer.concat(forwarded);
    // A split inside the bad header forwards its first bytes with the chunk they came in,
    // before the tracker can know the length: only those (at most 3) may follow the good frames.
    const headerPart = i > good.length && i < good.length + HEADER_SIZE ? bad.subarray(0, i - good.length) : Buffer.alloc(0);
    const ok =
      failed &&
      tracker.error?.code === ErrorCode.PAYLOAD_TOO_LARGE &&
      tracker.frames === 3 &&
      out.equals(Buffer.concat([good, headerPart]));
    if (!ok && failures.length < 10) failures.push(i);
  }
  t.deepEqual(failures, []);
});

test('FrameTracker honours a custom maxPayload, zero included', (t) => {
  const zero = new FrameTracker(0);
  t.true(zero.track(Buffer.concat([encodeFrame(''), encodeFrame('')])));
  t.is(zero.frames, 2);
  t.false(zero.track(encodeFrame('x')));
  t.is(zero.error?.code, ErrorCode.PAYLOAD_TOO_LARGE);
  t.is(zero.maxPayload, 0);
});

// FrameTracker: end of stream

test('FrameTracker endError is null at a boundary, after an empty frame included', (t) => {
  const tracker = new FrameTracker();
  t.is(tracker.endError(), null);
  t.true(tracker.track(Buffer.concat([encodeFrame('x'), encodeFrame('')])));
  t.is(tracker.endError(), null);
});

for (const have of [1, 2, 3]) {
  test(`FrameTracker endError after ${have} header byte(s) is a truncated frame`, (t) => {
    const tracker = new FrameTracker();
    tracker.track(Buffer.concat([encodeFrame('a'), encodeHeader(9).subarray(0, have)]));
    const err = tracker.endError();
    t.true(err instanceof IpcError);
    t.is(err?.code, ErrorCode.TRUNCATED_FRAME);
    t.true(err?.message.includes(`${have} of 4 header bytes`));
  });
}

test('FrameTracker endError in the middle of a payload is a truncated frame', (t) => {
  for (const cut of [HEADER_SIZE, HEADER_SIZE + 1, HEADER_SIZE + DEFAULT_MAX_PAYLOAD - 1]) {
    const tracker = new FrameTracker();
    tracker.track(encodeFrame(pattern(DEFAULT_MAX_PAYLOAD, 7)).subarray(0, cut));
    const err = tracker.endError();
    t.true(err instanceof IpcError);
    t.is(err?.code, ErrorCode.TRUNCATED_FRAME);
    t.true(err?.message.includes(`${DEFAULT_MAX_PAYLOAD - (cut - HEADER_SIZE)} payload bytes missing`));
  }
});

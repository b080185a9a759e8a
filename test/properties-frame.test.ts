/**
 * Property tests of src/frame.ts against a model: a one-pass reading of the whole byte
 * string (header, payload, header...) that knows nothing of chunks. FrameDecoder and
 * FrameTracker must agree with it whatever the chunking.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_MAX_PAYLOAD, FrameDecoder, FrameTracker, HEADER_SIZE, encodeFrame } from '../src/frame.js';
import { ErrorCode, IpcError } from '../src/errors.js';
import { chunked } from './helpers/chunks.js';

/** Runs a property; fast-check's counterexample is the failure message. */
function check(t: ExecutionContext, property: fc.IProperty<never> | fc.IProperty<any>, numRuns: number): void {
  fc.assert(property, { numRuns, includeErrorInReport: true });
  t.pass();
}

type EndState = 'boundary' | 'header' | 'payload';

interface ModelResult {
  payloads: Buffer[];
  /** Offset of the header announcing more than maxPayload, or null. */
  errorAt: number | null;
  /** Where the stream stops when there is no error. */
  end: EndState;
}

/** The specification: frames read one after the other from the whole byte string. */
function model(bytes: Buffer, maxPayload: number): ModelResult {
  const payloads: Buffer[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    if (bytes.length - pos < HEADER_SIZE) return { payloads, errorAt: null, end: 'header' };
    const length = bytes[pos]! * 2 ** 24 + bytes[pos + 1]! * 2 ** 16 + bytes[pos + 2]! * 2 ** 8 + bytes[pos + 3]!;
    if (length > maxPayload) return { payloads, errorAt: pos, end: 'boundary' };
    if (bytes.length - pos - HEADER_SIZE < length) return { payloads, errorAt: null, end: 'payload' };
    payloads.push(bytes.subarray(pos + HEADER_SIZE, pos + HEADER_SIZE + length));
    pos += HEADER_SIZE + length;
  }
  return { payloads, errorAt: null, end: 'boundary' };
}


/** Stream offset where the chunk holding byte `offset` starts. */
function startOfChunkHolding(chunks: Buffer[], offset: number): number {
  let start = 0;
  for (const c of chunks) {
    if (start + c.length > offset) break;
    start += c.length;
  }
  return start;
}

interface DecoderRun {
  payloads: Buffer[];
  /** The code of the error thrown by push() or end(), or null. */
  code: string | null;
}

/** Feeds chunks as a socket would, stopping at the first throw, then ends the stream. */
function runDecoder(chunks: Buffer[], maxPayload: number): DecoderRun {
  const decoder = new FrameDecoder(maxPayload);
  const payloads: Buffer[] = [];
  try {
    for (const chunk of chunks) payloads.push(...decoder.push(chunk));
    decoder.end();
  } catch (err) {
    assert.ok(err instanceof IpcError, `not an IpcError: ${String(err)}`);
    return { payloads, code: err.code };
  }
  return { payloads, code: null };
}

interface TrackerRun {
  frames: number;
  /** Stream offset up to which bytes were accepted when a header was refused, or null. */
  errorAt: number | null;
  code: string | null;
}

function runTracker(chunks: Buffer[], maxPayload: number): TrackerRun {
  const tracker = new FrameTracker(maxPayload);
  let start = 0;
  for (const chunk of chunks) {
    if (!tracker.track(chunk)) {
      assert.ok(tracker.error instanceof IpcError);
      return { frames: tracker.frames, errorAt: start + tracker.errorOffset, code: tracker.error.code };
    }
    start += chunk.length;
  }
  const endError = tracker.endError();
  assert.equal(tracker.atBoundary, endError === null);
  return { frames: tracker.frames, errorAt: null, code: endError?.code ?? null };
}

function expectedCode(m: ModelResult): string | null {
  if (m.errorAt !== null) return ErrorCode.PAYLOAD_TOO_LARGE;
  return m.end === 'boundary' ? null : ErrorCode.TRUNCATED_FRAME;
}

// Payloads small enough to split everywhere; empty ones are frequent on purpose.
const payload = fc.oneof(
  { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)) },
);
const payloads = fc.array(payload, { maxLength: 8 });
const cuts = fc.array(fc.nat({ max: 100_000 }), { maxLength: 12 });

/**
 * One length header as the stream would carry it, chosen around the limit `max`: under,
 * at, just over, far over, and over 2^31 (a signed read would make those negative).
 */
function lengthAround(max: number): fc.Arbitrary<number> {
  return fc.oneof(
    fc.integer({ min: 0, max }),
    fc.constantFrom(Math.max(0, max - 1), max, max + 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1),
    fc.integer({ min: max + 1, max: 2 ** 32 - 1 }),
    fc.integer({ min: 2 ** 31, max: 2 ** 32 - 1 }),
  );
}

/**
 * A hostile byte string: headers with lengths around the limit, each followed by up to
 * `length` bytes (fewer when the generator says so: a truncated tail), random garbage
 * sometimes appended.
 */
const hostileStream = fc.integer({ min: 0, max: 64 }).chain((max) =>
  fc
    .tuple(
      fc.constant(max),
      fc.array(fc.tuple(lengthAround(max), fc.uint8Array({ maxLength: 80 }), fc.boolean()), { maxLength: 6 }),
      fc.uint8Array({ maxLength: 6 }),
    )
    .map(([maxPayload, frames, tail]) => {
      const parts: Buffer[] = [];
      for (const [length, filler, full] of frames) {
        const header = Buffer.allocUnsafe(HEADER_SIZE);
        header.writeUInt32BE(length, 0);
        parts.push(header);
        // Full frames get exactly `length` payload bytes; the others a random amount.
        const body = full && length <= 80 ? Buffer.alloc(length, filler.length > 0 ? filler[0] : 7) : Buffer.from(filler);
        parts.push(body);
      }
      parts.push(Buffer.from(tail));
      return { maxPayload, bytes: Buffer.concat(parts) };
    }),
);

test('decoding encoded frames gives them back, whatever the chunking', (t) => {
  check(
    t,
    fc.property(payloads, cuts, (list, at) => {
      const bytes = Buffer.concat(list.map((p) => encodeFrame(p)));
      const run = runDecoder(chunked(bytes, at), DEFAULT_MAX_PAYLOAD);
      assert.equal(run.code, null);
      assert.deepEqual(run.payloads, list);
    }),
    300,
  );
});

test('decoding encoded frames split in two at every offset, and byte by byte, gives them back', (t) => {
  check(
    t,
    fc.property(payloads, (list) => {
      const bytes = Buffer.concat(list.map((p) => encodeFrame(p)));
      for (let i = 0; i <= bytes.length; i++) {
        const run = runDecoder([bytes.subarray(0, i), bytes.subarray(i)], DEFAULT_MAX_PAYLOAD);
        assert.equal(run.code, null, `split at ${i}`);
        assert.deepEqual(run.payloads, list, `split at ${i}`);
      }
      const bytewise = runDecoder([...bytes].map((b) => Buffer.from([b])), DEFAULT_MAX_PAYLOAD);
      assert.deepEqual(bytewise.payloads, list);
      assert.equal(bytewise.code, null);
    }),
    100,
  );
});

test('the decoder agrees with the model on hostile streams: frames, limit errors, truncation', (t) => {
  check(
    t,
    fc.property(hostileStream, cuts, ({ maxPayload, bytes }, at) => {
      const m = model(bytes, maxPayload);
      const run = runDecoder(chunked(bytes, at), maxPayload);
      assert.deepEqual(run.payloads, m.payloads);
      assert.equal(run.code, expectedCode(m));
    }),
    400,
  );
});

test('the tracker counts the frames of the model and stops at the refused header', (t) => {
  check(
    t,
    fc.property(hostileStream, cuts, ({ maxPayload, bytes }, at) => {
      const chunks = chunked(bytes, at);
      const m = model(bytes, maxPayload);
      const tracked = runTracker(chunks, maxPayload);
      assert.equal(tracked.frames, m.payloads.length);
      assert.equal(tracked.code, expectedCode(m));
      if (m.errorAt === null) {
        assert.equal(tracked.errorAt, null);
      } else {
        // The bytes before the refused header are forwarded; when the header began in an
        // earlier chunk, those header bytes already went out with it (track() said true).
        const chunkStart = startOfChunkHolding(chunks, m.errorAt + HEADER_SIZE - 1);
        assert.equal(tracked.errorAt, Math.max(chunkStart, m.errorAt));
      }
      // The decoder, fed the same chunks, returns as many frames and fails the same way.
      const decoded = runDecoder(chunks, maxPayload);
      assert.equal(decoded.payloads.length, tracked.frames);
      assert.equal(decoded.code, tracked.code);
    }),
    400,
  );
});

test('a header over maxPayload is refused exactly when it is larger, and 2^31 and more never pass', (t) => {
  check(
    t,
    fc.property(
      fc
        .oneof(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 0, max: 2 * DEFAULT_MAX_PAYLOAD }))
        .chain((max) => fc.tuple(fc.constant(max), lengthAround(max))),
      cuts,
      ([maxPayload, length], at) => {
        const header = Buffer.allocUnsafe(HEADER_SIZE);
        header.writeUInt32BE(length, 0);
        const chunks = chunked(header, at);
        const run = runDecoder(chunks, maxPayload);
        const tracked = runTracker(chunks, maxPayload);
        // The header alone: refused over the limit, else a frame waiting for its payload
        // (or a complete empty frame).
        const refused = length > maxPayload;
        if (length >= 2 ** 31) assert.ok(refused);
        const expected = refused ? ErrorCode.PAYLOAD_TOO_LARGE : length === 0 ? null : ErrorCode.TRUNCATED_FRAME;
        assert.equal(run.code, expected);
        assert.equal(tracked.code, expected);
        assert.equal(run.payloads.length, length === 0 ? 1 : 0);
        // Refused in the chunk holding the header's last byte: the header bytes of earlier
        // chunks were already accepted.
        if (refused) assert.equal(tracked.errorAt, startOfChunkHolding(chunks, HEADER_SIZE - 1));
      },
    ),
    500,
  );
});

test('the limit error names the length unsigned', (t) => {
  check(
    t,
    fc.property(fc.integer({ min: 2 ** 31, max: 2 ** 32 - 1 }), (length) => {
      const header = Buffer.allocUnsafe(HEADER_SIZE);
      header.writeUInt32BE(length, 0);
      const decoder = new FrameDecoder();
      assert.throws(() => decoder.push(header), (err: unknown) => err instanceof IpcError && err.message.includes(String(length)));
      const tracker = new FrameTracker();
      assert.equal(tracker.track(header), false);
      assert.ok(tracker.error!.message.includes(String(length)));
    }),
    100,
  );
});

test('a decoder handed over mid-stream gives back exactly the bytes not yet returned', (t) => {
  check(
    t,
    fc.property(payloads, cuts, fc.nat(), (list, at, stopSeed) => {
      const bytes = Buffer.concat(list.map((p) => encodeFrame(p)));
      const chunks = chunked(bytes, at);
      const stop = stopSeed % (chunks.length + 1);
      const decoder = new FrameDecoder();
      const first: Buffer[] = [];
      let fed = 0;
      for (const chunk of chunks.slice(0, stop)) {
        first.push(...decoder.push(chunk));
        fed += chunk.length;
      }
      const consumed = first.reduce((n, p) => n + HEADER_SIZE + p.length, 0);
      const handed = Buffer.concat(decoder.takeBuffered());
      // What was fed = what was returned + what is handed back, in order.
      assert.deepEqual(handed, bytes.subarray(consumed, fed));
      assert.equal(decoder.pendingBytes, 0);
      // A fresh decoder over the handed bytes and the rest finishes the list.
      const rest = runDecoder([handed, bytes.subarray(fed)], DEFAULT_MAX_PAYLOAD);
      assert.deepEqual([...first, ...rest.payloads], list);
      assert.equal(rest.code, null);
    }),
    300,
  );
});

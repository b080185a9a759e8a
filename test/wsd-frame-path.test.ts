/**
 * wsd's own frame path after ws's handshake (gateways/ws-frame-endpoint.ts): pipelined
 * messages of every length form from several clients at once (frames unmasked in the
 * read that brought them, replies built in one scratch buffer, the services read into one
 * shared buffer), control frames answered by wsd itself, the closing handshake started by
 * the client, and the daemon's young-generation setting.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import type { ConnectionInfo } from '../gateways/lifecycle.js';
import { WsFrameEndpoint } from '../gateways/ws-frame-endpoint.js';
import { ROOT, slot, startPongd, startWsd, tempDir } from './helpers/ws-procs.js';
import { Opcode, RawClient, closeCodeOf, encodeWsFrame } from './helpers/ws-raw.js';

async function setup(t: ExecutionContext) {
  await slot(t);
  const rundir = path.join(await tempDir(t), 'run');
  mkdirSync(rundir, { mode: 0o700 });
  const [, wsd] = await Promise.all([startPongd(t, rundir), startWsd(t, rundir, ['--allow', 'pong', '--ping-interval', '0'])]);
  return wsd;
}

async function upgraded(t: ExecutionContext, port: number): Promise<RawClient> {
  const raw = await RawClient.connect(port);
  t.teardown(() => raw.destroy());
  const head = await raw.upgrade('/pong');
  t.is(head.status, 101);
  return raw;
}

/** A payload of `length` bytes that names its client and message (no two alike). */
function payloadOf(client: number, message: number, length: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i < length; i++) bytes[i] = (client * 31 + message * 7 + i) & 0xff;
  return bytes;
}

const LENGTHS = [0, 1, 64, 125, 126, 1000, 16_384, 65_535, 65_536, 99_992];

test('pipelined messages of every length form, from 8 clients at once, all come back whole and in order', async (t) => {
  const wsd = await setup(t);
  const clients = await Promise.all(Array.from({ length: 8 }, () => upgraded(t, wsd.port)));
  const rounds = 3;
  const sent = clients.map((raw, c) => {
    const payloads: Buffer[] = [];
    for (let round = 0; round < rounds; round++) {
      for (const [m, length] of LENGTHS.entries()) payloads.push(payloadOf(c, round * LENGTHS.length + m, length));
    }
    // All of a client's messages in one write: several frames per read, frames split between reads.
    raw.write(Buffer.concat(payloads.map((p) => encodeWsFrame(Opcode.BINARY, p))));
    return payloads;
  });
  await Promise.all(
    clients.map(async (raw, c) => {
      for (const [m, payload] of sent[c]!.entries()) {
        const frame = await raw.readFrame();
        t.is(frame.opcode, Opcode.BINARY);
        t.false(frame.masked);
        if (!frame.payload.equals(payload)) t.fail(`client ${c}, message ${m}: ${frame.payload.length} bytes, not the ${payload.length} sent`);
      }
    }),
  );
  t.pass();
});

test("a client's ping is answered with a pong of the same payload, also between the fragments of a message", async (t) => {
  const wsd = await setup(t);
  const raw = await upgraded(t, wsd.port);
  raw.write(encodeWsFrame(Opcode.PING, Buffer.from('are you there')));
  const pong = await raw.readFrame();
  t.is(pong.opcode, Opcode.PONG);
  t.is(pong.payload.toString(), 'are you there');
  raw.write(
    Buffer.concat([
      encodeWsFrame(Opcode.TEXT, Buffer.from('hel'), { fin: false }),
      encodeWsFrame(Opcode.PING, Buffer.from('between')),
      encodeWsFrame(Opcode.CONTINUATION, Buffer.from('lo')),
    ]),
  );
  const second = await raw.readFrame();
  t.is(second.opcode, Opcode.PONG);
  t.is(second.payload.toString(), 'between');
  const echo = await raw.readFrame();
  t.is(echo.payload.toString(), 'hello');
});

test("a client's close is answered with its code and reason, then wsd closes; the line says client closed", async (t) => {
  const wsd = await setup(t);
  const raw = await upgraded(t, wsd.port);
  raw.write(encodeWsFrame(Opcode.BINARY, Buffer.from('one')));
  t.is((await raw.readFrame()).payload.toString(), 'one');
  raw.write(encodeWsFrame(Opcode.CLOSE, Buffer.concat([Buffer.from([0x0f, 0xa0]), Buffer.from('done here')])));
  const close = await raw.readFrame();
  t.is(close.opcode, Opcode.CLOSE);
  t.deepEqual(closeCodeOf(close), { code: 4000, reason: 'done here' });
  const line = await wsd.proc.waitFor((l) => l.msg === 'connection closed' && l['peer'] === raw.peer, 'connection closed');
  t.is(line['endedBy'], 'client');
  t.is(line['reason'], 'client closed');
  t.is(line['code'], undefined);
  t.is(line['messagesIn'], 1);
  t.is(line['bytesIn'], 3);
});

/** The young generation's size after allocating 40 MB of objects that stay alive, in a node given `args`. */
function newSpaceAfterSurvivors(args: string[]): number {
  const script = `
    const { keepYoungGenerationSmall } = await import(${JSON.stringify(path.join(ROOT, 'dist/gateways/cli/young-generation.js'))});
    const v8 = await import('node:v8');
    keepYoungGenerationSmall();
    const keep = [];
    for (let i = 0; i < 400000; i++) keep.push({ a: i, b: [i], c: 'x' + i });
    console.log(v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size);`;
  return Number(execFileSync(process.execPath, [...args, '--input-type=module', '-e', script], { encoding: 'utf8' }).trim());
}

test('the daemon keeps V8 young generation at its initial size, unless node was given a semi-space flag', (t) => {
  const MiB = 1024 * 1024;
  const kept = newSpaceAfterSurvivors([]);
  t.true(kept <= 4 * MiB, `new space ${kept} bytes`);
  const left = newSpaceAfterSurvivors(['--semi-space-growth-factor=2']);
  t.true(left > 8 * MiB, `new space ${left} bytes with the flag given`);
});

test('frames are unmasked in place only in a net.Socket\'s reads: another stream\'s chunks are left as they were', (t) => {
  const info = { peer: '127.0.0.1:1' } as ConnectionInfo;
  const message = Buffer.from('in place?');
  const expected = Buffer.concat([Buffer.from([0, 0, 0, message.length]), message]);
  for (const [stream, inPlace] of [
    [new PassThrough(), false],
    [new net.Socket(), true],
  ] as const) {
    const endpoint = new WsFrameEndpoint(stream as unknown as net.Socket, 1000, false, info);
    const chunk = encodeWsFrame(Opcode.BINARY, message);
    const sent = Buffer.from(chunk);
    const forwarded: Buffer[] = [];
    endpoint.in(chunk, (frame) => forwarded.push(Buffer.from(frame)));
    t.deepEqual(forwarded, [expected]);
    t.is(chunk.equals(sent), !inPlace, stream.constructor.name);
    stream.destroy();
  }
});

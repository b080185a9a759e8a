import test, { type ExecutionContext } from 'ava';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Connection, ConnectionKind, Context, EventType, type ContextOptions, type EventTypeValue, type IpcEvent } from '../src/context.js';
import { DEFAULT_MAX_PAYLOAD, FrameDecoder, encodeFrame, encodeHeader } from '../src/frame.js';
import { ErrorCode, IpcError } from '../src/errors.js';
import { WAIT, within, until } from './helpers/wait.js';
import { tempDirSync } from './helpers/rundir.js';

/** A context closed when the test ends. */
function context(t: ExecutionContext, options: ContextOptions): Context {
  const ctx = new Context(options);
  t.teardown(() => ctx.closeAll());
  return ctx;
}

async function nextEvent(ctx: Context, what: string): Promise<IpcEvent> {
  const event = await within(ctx.waitEvent(), what);
  if (event === null) throw new Error(`the context closed while waiting for ${what}`);
  return event;
}

/** The next event, which must be of `type`. */
async function expectEvent(t: ExecutionContext, ctx: Context, type: EventTypeValue): Promise<IpcEvent> {
  const event = await nextEvent(ctx, type);
  t.is(event.type, type, `expected ${type}, got ${event.type}`);
  return event;
}

/**
 * Runs the pongd loop on `ctx` (each MESSAGE_RX is scheduled back on its connection) and
 * records every event, until the context closes.
 */
function pongd(ctx: Context): { events: IpcEvent[]; done: Promise<void> } {
  const events: IpcEvent[] = [];
  const done = (async () => {
    for await (const event of ctx) {
      events.push(event);
      if (event.type === EventType.MESSAGE_RX) ctx.schedule(event.connection!, event.payload!);
    }
  })();
  return { events, done };
}

/** A raw client socket (no library code) that collects what it receives and how it ends. */
class RawClient {
  readonly socket: net.Socket;
  readonly chunks: Buffer[] = [];
  readonly errors: NodeJS.ErrnoException[] = [];
  ended = false;
  closed = false;

  constructor(t: ExecutionContext, socketPath: string, allowHalfOpen = false) {
    this.socket = net.connect({ path: socketPath, allowHalfOpen });
    this.socket.on('data', (c: Buffer) => this.chunks.push(c));
    this.socket.on('error', (e: NodeJS.ErrnoException) => this.errors.push(e));
    this.socket.on('end', () => (this.ended = true));
    this.socket.on('close', () => (this.closed = true));
    t.teardown(() => this.socket.destroy());
  }

  get received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  /** The payloads received so far (whole frames only). */
  get payloads(): string[] {
    const decoder = new FrameDecoder();
    return decoder.push(this.received).map((p) => p.toString());
  }

  async connected(): Promise<this> {
    await within(once(this.socket, 'connect'), 'connect');
    return this;
  }
}

function ofType(events: IpcEvent[], type: EventTypeValue, connection?: Connection): IpcEvent[] {
  return events.filter((e) => e.type === type && (connection === undefined || e.connection === connection));
}

// Serving and connecting

test('serve, connect and schedule give CONNECTION, MESSAGE_TX, MESSAGE_RX and DISCONNECTION', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const server = context(t, { rundir });
  const served = await server.serve('pong');
  t.is(served.path, path.join(rundir, 'pong'));
  const client = context(t, { rundir });
  const conn = await client.connect('pong');
  t.is(conn.kind, ConnectionKind.IPC);
  t.is(conn.service, 'pong');

  const accepted = await expectEvent(t, server, EventType.CONNECTION);
  const serverConn = accepted.connection!;
  t.is(serverConn.kind, ConnectionKind.IPC);
  t.is(serverConn.service, 'pong');
  t.not(serverConn, conn);

  client.schedule(conn, 'bounce me');
  t.is((await expectEvent(t, client, EventType.MESSAGE_TX)).connection, conn);
  const rx = await expectEvent(t, server, EventType.MESSAGE_RX);
  t.is(rx.connection, serverConn);
  t.is(rx.payload?.toString(), 'bounce me');

  server.schedule(serverConn, rx.payload!);
  t.is((await expectEvent(t, server, EventType.MESSAGE_TX)).connection, serverConn);
  const echo = await expectEvent(t, client, EventType.MESSAGE_RX);
  t.is(echo.connection, conn);
  t.is(echo.payload?.toString(), 'bounce me');

  client.close(conn);
  t.is((await expectEvent(t, server, EventType.DISCONNECTION)).connection, serverConn);
  // Exactly one DISCONNECTION: the next thing is a TIMER, nothing else happened.
  server.timer = 30;
  await expectEvent(t, server, EventType.TIMER);
});

test('messages of every size, empty included, arrive whole and in order', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const server = context(t, { rundir });
  await server.serve('sizes');
  const client = context(t, { rundir });
  const conn = await client.connect('sizes');
  const sent = ['', 'a', 'bounce me', 'x'.repeat(70_000), '', 'y'.repeat(DEFAULT_MAX_PAYLOAD)];
  for (const m of sent) client.schedule(conn, m);
  await expectEvent(t, server, EventType.CONNECTION);
  const received: string[] = [];
  for (let i = 0; i < sent.length; i++) received.push((await expectEvent(t, server, EventType.MESSAGE_RX)).payload!.toString());
  t.deepEqual(received, sent);
});

test('the service closing a connection gives DISCONNECTION on the client side', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const server = context(t, { rundir });
  await server.serve('pong');
  const client = context(t, { rundir });
  const conn = await client.connect('pong');
  const serverConn = (await expectEvent(t, server, EventType.CONNECTION)).connection!;
  server.close(serverConn);
  t.is((await expectEvent(t, client, EventType.DISCONNECTION)).connection, conn);
});

test('connect to a name nobody serves fails with IPC_ERR_SERVICE_UNAVAILABLE naming the path', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const client = context(t, { rundir });
  const err = await t.throwsAsync(client.connect('nobody'), { instanceOf: IpcError, code: ErrorCode.SERVICE_UNAVAILABLE });
  t.true(err?.message.includes(path.join(rundir, 'nobody')));
});

test('serve of a name another context serves fails with IPC_ERR_SERVICE_IN_USE and the first keeps serving', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const first = context(t, { rundir });
  pongd(first);
  await first.serve('pong');
  const second = context(t, { rundir });
  const err = await t.throwsAsync(second.serve('pong'), { instanceOf: IpcError, code: ErrorCode.SERVICE_IN_USE });
  t.true(err?.message.includes(path.join(rundir, 'pong')));
  const client = await new RawClient(t, path.join(rundir, 'pong')).connected();
  client.socket.write(encodeFrame('still served'));
  await until(() => client.payloads.length === 1, 'the echo');
  t.deepEqual(client.payloads, ['still served']);
});

test('closeAll resolves a pending waitEvent with null and removes the served socket', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const ctx = context(t, { rundir, timer: 60_000 });
  const served = await ctx.serve('pong');
  const waiting = ctx.waitEvent();
  await ctx.closeAll();
  t.is(await within(waiting, 'waitEvent to resolve'), null);
  t.false(existsSync(served.path));
  t.is(await ctx.waitEvent(), null);
});

test('closeAll ends a for-await loop over the context and closes its connections', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const ctx = context(t, { rundir });
  const loop = pongd(ctx);
  await ctx.serve('pong');
  const client = await new RawClient(t, path.join(rundir, 'pong')).connected();
  await until(() => loop.events.length === 1, 'CONNECTION');
  await ctx.closeAll();
  await within(loop.done, 'the loop to end');
  await until(() => client.closed, 'the client to be closed');
  t.is(client.received.length, 0);
});

// TIMER

test('waitEvent yields TIMER after `timer` ms without an event', async (t) => {
  const ctx = context(t, { rundir: tempDirSync(t, 'libipc-context-'), timer: 20 });
  const event = await expectEvent(t, ctx, EventType.TIMER);
  t.is(event.connection, undefined);
  let timers = 0;
  for await (const e of ctx) {
    if (e.type === EventType.TIMER && ++timers === 3) break;
  }
  t.is(timers, 3);
});

test('the timer can be set and changed at any time, and queued events come before TIMER', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const ctx = context(t, { rundir });
  t.is(ctx.timer, null);
  ctx.timer = 10;
  await expectEvent(t, ctx, EventType.TIMER);
  await ctx.serve('pong');
  const client = await new RawClient(t, path.join(rundir, 'pong')).connected();
  client.socket.write(encodeFrame('queued'));
  // Let the events queue up before asking.
  await new Promise((resolve) => setTimeout(resolve, 50));
  await expectEvent(t, ctx, EventType.CONNECTION);
  t.is((await expectEvent(t, ctx, EventType.MESSAGE_RX)).payload?.toString(), 'queued');
  await expectEvent(t, ctx, EventType.TIMER);
});

// EXTERNAL

test('an external socket yields EXTERNAL events carrying its raw bytes, then DISCONNECTION', async (t) => {
  const dir = tempDirSync(t, 'libipc-context-');
  const ctx = context(t, { rundir: dir });
  const server = net.createServer();
  const socketPath = path.join(dir, 'external');
  server.listen(socketPath);
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await within(once(server, 'listening'), 'listen');
  const accepted = once(server, 'connection');
  const peer = await new RawClient(t, socketPath).connected();
  const [socket] = (await within(accepted, 'accept')) as [net.Socket];
  const ext = ctx.addExternal(socket);
  t.is(ext.kind, ConnectionKind.EXTERNAL);

  peer.socket.write('not a frame');
  const event = await expectEvent(t, ctx, EventType.EXTERNAL);
  t.is(event.connection, ext);
  t.is(event.data?.toString(), 'not a frame');
  t.is(event.payload, undefined);

  peer.socket.end();
  t.is((await expectEvent(t, ctx, EventType.DISCONNECTION)).connection, ext);
});

// Switches

/** A temp run directory with a pongd-style echo program serving `pong` in it. */
async function pongBackend(t: ExecutionContext): Promise<{ rundir: string; backend: Context; echo: ReturnType<typeof pongd> }> {
  const rundir = tempDirSync(t, 'libipc-context-');
  const backend = context(t, { rundir });
  const echo = pongd(backend);
  await backend.serve('pong');
  return { rundir, backend, echo };
}

/**
 * An external client arriving at a gateway: [the remote peer, the gateway's accepted
 * socket]. `halfOpen` false gives a socket of Node's default kind.
 */
async function externalPair(t: ExecutionContext, dir: string, halfOpen = true): Promise<[RawClient, net.Socket]> {
  const server = net.createServer({ allowHalfOpen: halfOpen });
  const socketPath = path.join(dir, halfOpen ? 'front' : 'plain');
  server.listen(socketPath);
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await within(once(server, 'listening'), 'listen');
  const accepted = once(server, 'connection');
  const peer = await new RawClient(t, socketPath).connected();
  const [socket] = (await within(accepted, 'accept')) as [net.Socket];
  t.teardown(() => socket.destroy());
  return [peer, socket];
}

test('addSwitch joins an external socket and a service connection, with SWITCH_RX and SWITCH_TX events', async (t) => {
  const { rundir, echo } = await pongBackend(t);

  const gateway = context(t, { rundir, switchEvents: true });
  const [peer, socket] = await externalPair(t, rundir);
  const ext = gateway.addExternal(socket);
  const svc = await gateway.connect('pong');
  const sw = gateway.addSwitch(ext, svc);
  t.is(ext.kind, ConnectionKind.SWITCHED);
  t.is(svc.kind, ConnectionKind.SWITCHED);

  const request = encodeFrame('bounce me');
  peer.socket.write(request);
  const rx = await expectEvent(t, gateway, EventType.SWITCH_RX);
  t.is(rx.connection, ext);
  t.true(rx.payload?.equals(request));
  const tx = await expectEvent(t, gateway, EventType.SWITCH_TX);
  t.is(tx.connection, ext);
  t.true(tx.payload?.equals(request));
  await until(() => peer.payloads.length === 1, 'the echo');
  t.deepEqual(peer.payloads, ['bounce me']);

  // The client's FIN: the echo service sees DISCONNECTION, the switch ends once.
  peer.socket.end();
  const end = await expectEvent(t, gateway, EventType.DISCONNECTION);
  t.is(end.connection, ext);
  t.is(end.summary?.error, undefined);
  t.is(end.summary?.messagesIn, 1);
  t.is(end.summary?.messagesOut, 1);
  t.true(sw.done);
  await until(() => peer.closed, 'the client to be closed');
  await until(() => ofType(echo.events, EventType.DISCONNECTION).length === 1, "the service's DISCONNECTION");
  gateway.timer = 30;
  await expectEvent(t, gateway, EventType.TIMER);
});

test('without switchEvents a switch yields only its DISCONNECTION', async (t) => {
  const { rundir } = await pongBackend(t);
  const gateway = context(t, { rundir });
  const [peer, socket] = await externalPair(t, rundir);
  const ext = gateway.addExternal(socket);
  gateway.addSwitch(ext, await gateway.connect('pong'));
  peer.socket.write(encodeFrame('one'));
  await until(() => peer.payloads.length === 1, 'the echo');
  peer.socket.end(encodeFrame('two'));
  const end = await expectEvent(t, gateway, EventType.DISCONNECTION);
  t.is(end.connection, ext);
  t.deepEqual(peer.payloads, ['one', 'two']);
});

test('an oversize frame through a switch yields DISCONNECTION with the coded error in its summary', async (t) => {
  const { rundir, echo } = await pongBackend(t);
  const gateway = context(t, { rundir, maxPayload: 16 });
  const [peer, socket] = await externalPair(t, rundir);
  const ext = gateway.addExternal(socket);
  gateway.addSwitch(ext, await gateway.connect('pong'));
  peer.socket.write(Buffer.concat([encodeFrame('fits'), encodeHeader(17)]));
  const end = await expectEvent(t, gateway, EventType.DISCONNECTION);
  t.true(end.summary?.error instanceof IpcError);
  t.is((end.summary?.error as IpcError).code, ErrorCode.PAYLOAD_TOO_LARGE);
  t.is(end.summary?.endedBy, 'client');
  // The client is closed; the service got the frame that fit, then its connection closed.
  await until(() => peer.closed, 'the client to be closed');
  await until(() => ofType(echo.events, EventType.DISCONNECTION).length === 1, "the service's DISCONNECTION");
  t.deepEqual(
    ofType(echo.events, EventType.MESSAGE_RX).map((e) => e.payload?.toString()),
    ['fits'],
  );
});

// A program stopping on SIGTERM must not keep its switched clients connected.
test('closeAll also closes switched connections', async (t) => {
  const { rundir } = await pongBackend(t);
  const gateway = context(t, { rundir });
  const [peer, socket] = await externalPair(t, rundir);
  const ext = gateway.addExternal(socket);
  const sw = gateway.addSwitch(ext, await gateway.connect('pong'));
  peer.socket.write(encodeFrame('one'));
  await until(() => peer.payloads.length === 1, 'the echo');
  await gateway.closeAll();
  await until(() => peer.closed, 'the switched client to be closed', 2000);
  t.true(sw.done);
});

// Errors on one connection

const oversize: Array<[string, ContextOptions, number]> = [
  ['a custom maxPayload', { maxPayload: 100 }, 101],
  ['the default maxPayload', {}, DEFAULT_MAX_PAYLOAD + 1],
  ['the default maxPayload, length 2^31', {}, 0x80000000],
];

for (const [what, options, length] of oversize) {
  test(`a payload over ${what} yields ERROR with its code and closes only that connection`, async (t) => {
    const rundir = tempDirSync(t, 'libipc-context-');
    const server = context(t, { rundir, ...options });
    const loop = pongd(server);
    await server.serve('pong');
    const socketPath = path.join(rundir, 'pong');
    const bad = await new RawClient(t, socketPath).connected();
    const good = await new RawClient(t, socketPath).connected();
    await until(() => ofType(loop.events, EventType.CONNECTION).length === 2, 'both connections');

    bad.socket.write(encodeHeader(length));
    await until(() => ofType(loop.events, EventType.DISCONNECTION).length === 1, 'DISCONNECTION');
    const errors = ofType(loop.events, EventType.ERROR);
    t.is(errors.length, 1);
    t.true(errors[0]!.error instanceof IpcError);
    t.is((errors[0]!.error as IpcError).code, ErrorCode.PAYLOAD_TOO_LARGE);
    t.true(errors[0]!.error!.message.includes(String(length)));
    // ERROR comes first, then DISCONNECTION, both for the offending connection only.
    const errorAt = loop.events.indexOf(errors[0]!);
    const disconnection = ofType(loop.events, EventType.DISCONNECTION)[0]!;
    t.true(loop.events.indexOf(disconnection) > errorAt);
    t.is(errors[0]!.connection, disconnection.connection);

    // The offending client sees its connection closed without a byte.
    await until(() => bad.closed, 'the bad client to be closed');
    t.is(bad.received.length, 0);
    // The other connection keeps working.
    good.socket.write(encodeFrame('still working'));
    await until(() => good.payloads.length === 1, 'the echo');
    t.deepEqual(good.payloads, ['still working']);
    t.false(good.closed);
    const goodConn = ofType(loop.events, EventType.MESSAGE_RX)[0]!.connection;
    t.not(goodConn, disconnection.connection);
    t.is(ofType(loop.events, EventType.DISCONNECTION).length, 1);
  });
}

test('a connection ending inside a frame yields ERROR with IPC_ERR_TRUNCATED_FRAME then DISCONNECTION', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const server = context(t, { rundir });
  const loop = pongd(server);
  await server.serve('pong');
  const client = await new RawClient(t, path.join(rundir, 'pong')).connected();
  client.socket.end(Buffer.concat([encodeFrame('whole'), encodeFrame('cut short').subarray(0, 7)]));
  await until(() => ofType(loop.events, EventType.DISCONNECTION).length === 1, 'DISCONNECTION');
  const types = loop.events.filter((e) => e.type !== EventType.MESSAGE_TX).map((e) => e.type);
  t.deepEqual(types, [EventType.CONNECTION, EventType.MESSAGE_RX, EventType.ERROR, EventType.DISCONNECTION]);
  const error = ofType(loop.events, EventType.ERROR)[0]!.error;
  t.true(error instanceof IpcError);
  t.is((error as IpcError).code, ErrorCode.TRUNCATED_FRAME);
  // The client is closed; nothing of the partial frame is echoed.
  await until(() => client.closed, 'the client to be closed');
  t.false(client.payloads.includes('cut short'));
});

// Whether a valid message shares a read with a bad header must not decide its fate
// (docs/errors.md: "complete frames before it were delivered").
test('a message that arrives in the same read as an oversize header is delivered before ERROR', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const server = context(t, { rundir });
  const loop = pongd(server);
  await server.serve('pong');
  const client = await new RawClient(t, path.join(rundir, 'pong')).connected();
  client.socket.write(Buffer.concat([encodeFrame('valid'), encodeHeader(DEFAULT_MAX_PAYLOAD + 1)]));
  await until(() => ofType(loop.events, EventType.DISCONNECTION).length === 1, 'DISCONNECTION');
  t.deepEqual(
    loop.events.map((e) => e.type),
    [EventType.CONNECTION, EventType.MESSAGE_RX, EventType.ERROR, EventType.DISCONNECTION],
  );
});

// Half-close

test('a message sent together with FIN is still echoed by a pongd loop', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const server = context(t, { rundir });
  const loop = pongd(server);
  await server.serve('pong');
  const client = await new RawClient(t, path.join(rundir, 'pong')).connected();
  client.socket.end(encodeFrame('bounce me'));
  await until(() => client.closed, 'the client to be closed');
  t.deepEqual(client.payloads, ['bounce me']);
  t.true(client.ended);
  t.deepEqual(client.errors, []);
  t.deepEqual(
    loop.events.filter((e) => e.type !== EventType.MESSAGE_TX).map((e) => e.type),
    [EventType.CONNECTION, EventType.MESSAGE_RX, EventType.DISCONNECTION],
  );
});

test('several messages coalesced with FIN are all echoed in order', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const server = context(t, { rundir });
  pongd(server);
  await server.serve('pong');
  const client = await new RawClient(t, path.join(rundir, 'pong')).connected();
  const messages = ['one', '', 'three', 'z'.repeat(50_000)];
  client.socket.end(Buffer.concat(messages.map((m) => encodeFrame(m))));
  await until(() => client.closed, 'the client to be closed');
  t.deepEqual(client.payloads, messages);
});

// Flow control

test('a program slower than its peer stops reading at maxQueuedEvents and loses nothing', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const server = context(t, { rundir, maxQueuedEvents: 8 });
  await server.serve('pong');
  const client = await new RawClient(t, path.join(rundir, 'pong')).connected();
  const conn = (await expectEvent(t, server, EventType.CONNECTION)).connection!;

  // The program does not consume events while the client writes, for at most 16 MB.
  const count = 4000;
  let written = 0;
  let stuck = false;
  for (; written < count; written++) {
    if (client.socket.write(encodeFrame(`${written}:${'p'.repeat(4000)}`))) continue;
    const drained = await within(once(client.socket, 'drain'), 'drain', 300).then(
      () => true,
      () => false,
    );
    if (!drained) {
      stuck = true;
      written++;
      break;
    }
  }
  t.true(stuck, 'the client was never paused');
  t.true(conn.socket.isPaused(), 'the context paused reading');

  // Catching up resumes reading: every message arrives, in order.
  client.socket.end();
  const seen: number[] = [];
  for (let i = 0; i < count + 1; i++) {
    const event = await nextEvent(server, `message ${seen.length}`);
    if (event.type === EventType.DISCONNECTION) break;
    t.is(event.type, EventType.MESSAGE_RX);
    seen.push(Number(event.payload!.toString().split(':')[0]));
  }
  t.is(seen.length, written);
  t.true(seen.every((n, i) => n === i));
});

// A client that sends without ever reading must not make a pongd-style program buffer
// its replies without bound: schedule() pauses the connection until the client reads.
test('a client that floods an echo program and never reads is paused: the program holds a bounded amount, then everything echoes', async (t) => {
  const rundir = tempDirSync(t, 'libipc-context-');
  const server = context(t, { rundir });
  const loop = pongd(server);
  await server.serve('pong');
  const client = new RawClient(t, path.join(rundir, 'pong'));
  // The client does not read until the flood is over.
  client.socket.pause();
  await client.connected();
  await until(() => ofType(loop.events, EventType.CONNECTION).length === 1, 'CONNECTION');
  const held = ofType(loop.events, EventType.CONNECTION)[0]!.connection!.socket;

  // At most 32 MB, written as long as the kernel takes them; stuck once no drain comes.
  const BUDGET = 32 * 1024 * 1024;
  const BOUND = 4 * 1024 * 1024;
  const body = 'p'.repeat(4000);
  const sent: string[] = [];
  let written = 0;
  let peak = 0;
  let stuck = false;
  const sampler = setInterval(() => (peak = Math.max(peak, held.writableLength)), 5);
  t.teardown(() => clearInterval(sampler));
  while (written < BUDGET) {
    const message = `${sent.length}:${body}`;
    sent.push(message);
    const frame = encodeFrame(message);
    written += frame.length;
    if (client.socket.write(frame)) continue;
    const drained = await within(once(client.socket, 'drain'), 'drain', 300).then(
      () => true,
      () => false,
    );
    if (!drained) {
      stuck = true;
      break;
    }
  }
  clearInterval(sampler);
  peak = Math.max(peak, held.writableLength);
  t.true(stuck, `the client was never paused (wrote ${written} bytes)`);
  t.true(peak < BOUND, `the program held ${peak} bytes of replies for a client that does not read`);
  t.true(held.isPaused(), 'the context stopped reading the connection');

  // Reading resumes: every message comes back whole and in order.
  client.socket.resume();
  await until(() => client.received.length >= written, `${written} bytes echoed (got ${client.received.length})`);
  const echoed = client.payloads;
  t.is(echoed.length, sent.length);
  const firstBad = echoed.findIndex((p, i) => p !== sent[i]);
  t.is(firstBad, -1, `message ${firstBad} differs`);
  t.is(client.received.length, written);
});

/** A gateway context serving `front`, a client on it, and the client's connection in the context. */
async function frontClient(t: ExecutionContext, gateway: Context, rundir: string): Promise<[RawClient, Connection]> {
  await gateway.serve('front');
  const peer = await new RawClient(t, path.join(rundir, 'front')).connected();
  const accepted = await expectEvent(t, gateway, EventType.CONNECTION);
  return [peer, accepted.connection!];
}

// A gateway reads a first message (which service?) with the context, then switches: bytes
// of the next message that came in the same reads must not be lost.
for (const cut of [1, 4, 6, 12]) {
  test(`addSwitch passes on a partial frame the context already read (cut after ${cut} bytes)`, async (t) => {
    const rundir = tempDirSync(t, 'libipc-context-');
    const backend = context(t, { rundir });
    const echo = pongd(backend);
    await backend.serve('pong');
    const gateway = context(t, { rundir });
    const [peer, front] = await frontClient(t, gateway, rundir);

    const second = encodeFrame('second message');
    const first = encodeFrame('pong');
    peer.socket.write(Buffer.concat([first, second.subarray(0, cut)]));
    t.is((await expectEvent(t, gateway, EventType.MESSAGE_RX)).payload?.toString(), 'pong');
    await until(() => front.socket.bytesRead === first.length + cut, 'the context to read the partial frame');

    gateway.addSwitch(front, await gateway.connect('pong'));
    peer.socket.write(second.subarray(cut));
    // A service that got a corrupt stream closes: the client is closed instead.
    await until(() => peer.payloads.length === 1 || peer.closed, 'the echo');
    t.deepEqual(peer.payloads, ['second message']);
    t.deepEqual(
      ofType(echo.events, EventType.MESSAGE_RX).map((e) => e.payload?.toString()),
      ['second message'],
    );
    t.deepEqual(ofType(echo.events, EventType.ERROR), []);
  });
}

test("addSwitch removes only the context's listeners: Node's own 'end' listener and the program's stay", async (t) => {
  const { rundir, echo } = await pongBackend(t);
  const gateway = context(t, { rundir });
  const [peer, socket] = await externalPair(t, rundir, false);
  t.false(socket.allowHalfOpen);
  const nodeEnd = socket.listeners('end');
  t.true(nodeEnd.length > 0, "Node puts its own 'end' listener on a socket");
  let programSawClose = false;
  const programOnClose = () => (programSawClose = true);
  socket.on('close', programOnClose);

  const ext = gateway.addExternal(socket);
  gateway.addSwitch(ext, await gateway.connect('pong'));
  for (const listener of nodeEnd) t.true(socket.listeners('end').includes(listener), `'end' listener ${listener.name} kept`);
  t.true(socket.listeners('close').includes(programOnClose), "the program's 'close' listener kept");

  peer.socket.write(encodeFrame('one'));
  await until(() => peer.payloads.length === 1, 'the echo');
  // The switch ends with the client: nothing left open on either side.
  peer.socket.end();
  const end = await expectEvent(t, gateway, EventType.DISCONNECTION);
  t.is(end.connection, ext);
  await until(() => peer.closed && socket.destroyed, 'both ends of the client connection closed');
  await until(() => ofType(echo.events, EventType.DISCONNECTION).length === 1, "the service's DISCONNECTION");
  t.true(programSawClose);
  t.deepEqual(peer.payloads, ['one']);
});

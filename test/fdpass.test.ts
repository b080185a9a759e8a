import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, closeSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { MAX_CONCURRENT_LOOKUPS, connectIpc } from '../src/client.js';
import { ErrorCode, IpcError } from '../src/errors.js';
import { encodeFrame } from '../src/frame.js';
import {
  closeFd,
  connectUnix,
  descriptorOf,
  handOverSocket,
  receiveFd,
  sendFd,
  socketFromFd,
  socketPair,
  writeAll,
} from '../src/fdpass.js';
import { tempDirSync } from './helpers/rundir.js';

const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** The open flags of one of our descriptors, from /proc (includes O_CLOEXEC). */
function fdFlags(fd: number): number {
  const match = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  if (!match?.[1]) throw new Error(`no flags for descriptor ${fd}`);
  return parseInt(match[1], 8);
}

const owned = new WeakMap<ExecutionContext, Set<number>>();

/** Registers descriptors to close at teardown unless the test closes them with closeNow. */
function own(t: ExecutionContext, ...fds: number[]): void {
  let set = owned.get(t);
  if (!set) {
    const fresh = new Set<number>();
    owned.set(t, (set = fresh));
    t.teardown(() => {
      for (const fd of fresh) closeFd(fd);
    });
  }
  for (const fd of fds) set.add(fd);
}

/** Closes one of the test's descriptors now (never twice: numbers are reused at once). */
function closeNow(t: ExecutionContext, fd: number): void {
  owned.get(t)?.delete(fd);
  closeFd(fd);
}

/** A socket pair made by the addon, closed at teardown. */
function pair(t: ExecutionContext): [number, number] {
  const fds = socketPair();
  own(t, ...fds);
  return fds;
}

async function listen(
  t: ExecutionContext,
  server: net.Server,
  address: string | number,
): Promise<void> {
  t.teardown(() => server.close());
  server.on('error', (err) => t.fail(String(err)));
  if (typeof address === 'string') server.listen(address);
  else server.listen(address, '127.0.0.1');
  await once(server, 'listening');
}

/** An echo server: every byte comes back. */
async function echoServer(t: ExecutionContext, address: string | number): Promise<net.Server> {
  const server = net.createServer((conn) => {
    conn.on('error', () => conn.destroy());
    conn.pipe(conn);
  });
  await listen(t, server, address);
  return server;
}

/** Writes `text` on `socket` and resolves with as many bytes read back (less at end). */
function roundTrip(socket: net.Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    socket.setEncoding('utf8');
    socket.on('data', function onData(chunk: string) {
      got += chunk;
      if (got.length < text.length) return;
      socket.off('data', onData);
      resolve(got);
    });
    socket.once('end', () => resolve(got));
    socket.once('error', reject);
    socket.write(text);
  });
}

/** Runs a Python script with `fd` as its descriptor 3; resolves with its stdout. */
async function runPython(script: string, fd: number): Promise<string> {
  const child = spawn(python, ['-c', script], { stdio: ['ignore', 'pipe', 'pipe', fd] });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) throw new Error(`python exited with ${code}: ${err}`);
  return out;
}

function assertFdError(t: ExecutionContext, err: unknown, causeCode?: string): void {
  t.true(err instanceof IpcError);
  t.is((err as IpcError).code, ErrorCode.FD_PASSING);
  if (causeCode === undefined) return;
  t.is(((err as IpcError).cause as NodeJS.ErrnoException).code, causeCode);
}

for (const kind of ['unix', 'tcp'] as const) {
  const title = `hands over an accepted ${kind} socket, whose connection lives on in the receiver`;
  test(title, async (t) => {
    const [sender, receiver] = pair(t);
    // pauseOnConnect: Node must not read a socket it hands over (PROTOCOL.md §4a).
    const server = net.createServer({ pauseOnConnect: true }, (conn) => {
      conn.on('error', (err) => t.fail(String(err)));
      handOverSocket(sender, conn);
    });
    const address = kind === 'unix' ? path.join(tempDirSync(t, 'fdpass-'), 'svc') : 0;
    await listen(t, server, address);
    const client =
      kind === 'unix'
        ? net.connect(address as string)
        : net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    t.teardown(() => client.destroy());
    client.on('error', (err) => t.fail(String(err)));
    // Written before the hand-over: it waits in the kernel for the receiver.
    client.write('ping');
    await once(client, 'connect');

    const received = await receiveFd(receiver, 5000);
    t.is(received.data.toString(), 'ok');
    t.not(received.fd, null);
    const fd = received.fd as number;
    t.is(fdFlags(fd) & O_CLOEXEC, O_CLOEXEC, 'received with MSG_CMSG_CLOEXEC');
    t.is(fdFlags(fd) & O_NONBLOCK, 0, 'handed over blocking, like the original');

    const echo = socketFromFd(fd);
    t.teardown(() => echo.destroy());
    echo.on('error', (err) => t.fail(String(err)));
    echo.on('data', (chunk) => echo.write(chunk));
    t.is(await roundTrip(client, 'pong'), 'pingpong');
  });
}

test('sends exactly the bytes ok and one descriptor, as Python recv_fds sees them', async (t) => {
  const [ours, theirs] = pair(t);
  const [passed, peer] = pair(t);
  sendFd(ours, passed);
  const script = [
    'import os, socket',
    's = socket.socket(fileno=3)',
    'msg, fds, flags, addr = socket.recv_fds(s, 1024, 8)',
    "assert msg == b'ok', msg",
    'assert len(fds) == 1, fds',
    'assert flags == 0, flags',
    "os.write(fds[0], b'via python')",
    "print('checked')",
  ].join('\n');
  const run = runPython(script, theirs);
  closeNow(t, theirs);
  t.is((await run).trim(), 'checked');
  const back = await receiveFd(peer, 5000);
  t.is(back.data.toString(), 'via python');
  t.is(back.fd, null);
});

test('puts the descriptor in one SCM_RIGHTS message of one int with 2 data bytes', async (t) => {
  const [ours, theirs] = pair(t);
  const [passed] = pair(t);
  sendFd(ours, passed);
  const script = [
    'import json, socket',
    's = socket.socket(fileno=3)',
    'msg, anc, flags, addr = s.recvmsg(1024, socket.CMSG_SPACE(8 * 4))',
    "print(json.dumps({'msg': msg.hex(), 'flags': flags,",
    "  'anc': [[level, kind, len(data)] for level, kind, data in anc],",
    "  'expect': [socket.SOL_SOCKET, socket.SCM_RIGHTS,",
    '             socket.CMSG_LEN(4), socket.CMSG_SPACE(4)]}))',
  ].join('\n');
  const run = runPython(script, theirs);
  closeNow(t, theirs);
  type Seen = { msg: string; flags: number; anc: number[][]; expect: number[] };
  const seen = JSON.parse(await run) as Seen;
  t.is(seen.msg, '6f6b', 'the 2 bytes ok, no frame header');
  t.is(seen.flags, 0, 'no MSG_CTRUNC');
  const [level, kind, cmsgLen, controlLen] = seen.expect;
  t.deepEqual(seen.anc, [[level, kind, 4]], 'one cmsg carrying one int');
  t.deepEqual([cmsgLen, controlLen], [20, 24], "the original's cmsg_len and msg_controllen");
});

test('receives a descriptor sent by Python send_fds', async (t) => {
  const [ours, theirs] = pair(t);
  const script = [
    'import os, socket',
    's = socket.socket(fileno=3)',
    'r, w = os.pipe()',
    "os.write(w, b'from python')",
    'os.close(w)',
    "socket.send_fds(s, [b'ok'], [r])",
  ].join('\n');
  const run = runPython(script, theirs);
  closeNow(t, theirs);
  const received = await receiveFd(ours, 5000);
  await run;
  t.is(received.data.toString(), 'ok');
  const fd = received.fd as number;
  t.is(typeof fd, 'number');
  t.teardown(() => closeSync(fd));
  t.is(fdFlags(fd) & O_CLOEXEC, O_CLOEXEC);
  t.is(readFileSync(fd, 'utf8'), 'from python');
});

test('carries a whole lookup on an addon socket that Node never reads', async (t) => {
  const dir = tempDirSync(t, 'fdpass-');
  const echoPath = path.join(dir, 'echo');
  await echoServer(t, echoPath);
  // A minimal ipcd: read the lookup frame, connect the service, pass that connection.
  const lookups: string[] = [];
  const ipcd = net.createServer((conn) => {
    conn.on('error', (err) => t.fail(String(err)));
    conn.once('data', (frame) => {
      lookups.push(frame.subarray(4).toString());
      const service = net.connect(echoPath, () => {
        handOverSocket(descriptorOf(conn), service);
        conn.destroy();
      });
      // Paused before it connects, so Node never reads the socket it hands over.
      service.pause();
      service.on('error', (err) => t.fail(String(err)));
    });
  });
  await listen(t, ipcd, path.join(dir, 'ipc'));

  const lookup = connectUnix(path.join(dir, 'ipc'));
  own(t, lookup);
  writeAll(lookup, encodeFrame('echo;echo unix://echo'));
  const received = await receiveFd(lookup, 5000);
  closeNow(t, lookup);
  t.is(received.data.toString(), 'ok');
  t.deepEqual(lookups, ['echo;echo unix://echo']);
  const socket = socketFromFd(received.fd as number);
  t.teardown(() => socket.destroy());
  socket.on('error', (err) => t.fail(String(err)));
  t.is(await roundTrip(socket, 'hello'), 'hello');
});

test('gives fd null when data arrives without a descriptor', async (t) => {
  const [a, b] = pair(t);
  writeAll(a, Buffer.from('no fd'));
  const received = await receiveFd(b, 5000);
  t.is(received.data.toString(), 'no fd');
  t.is(received.fd, null);
});

test('rejects with IPC_ERR_FD_PASSING and ETIMEDOUT when nothing arrives in time', async (t) => {
  const [, b] = pair(t);
  const started = performance.now();
  const err = await t.throwsAsync(receiveFd(b, 100));
  const elapsed = performance.now() - started;
  assertFdError(t, err, 'ETIMEDOUT');
  t.true(elapsed >= 90 && elapsed < 3000, `took ${elapsed} ms`);
});

test('rejects when the peer closes without replying', async (t) => {
  const [a, b] = pair(t);
  closeNow(t, a);
  const err = await t.throwsAsync(receiveFd(b, 5000));
  assertFdError(t, err);
  t.regex((err as Error).message, /without replying/);
});

test('closeFd cancels a pending receive at once', async (t) => {
  const fds = socketPair();
  t.teardown(() => closeFd(fds[0]));
  const started = performance.now();
  const pending = receiveFd(fds[1], 20_000);
  closeFd(fds[1]);
  const err = await t.throwsAsync(pending);
  assertFdError(t, err);
  t.regex((err as Error).message, /closed while receiving/);
  t.true(performance.now() - started < 5000);
});

test('refuses a second receive on the same socket', async (t) => {
  const [a, b] = pair(t);
  const first = receiveFd(b, 5000);
  assertFdError(t, await t.throwsAsync(receiveFd(b, 5000)));
  writeAll(a, Buffer.from('x'));
  t.is((await first).data.toString(), 'x');
});

test('sendFd reports a bad descriptor with its errno name', (t) => {
  const [a] = pair(t);
  assertFdError(t, t.throws(() => sendFd(a, 1_000_000)), 'EBADF');
  assertFdError(t, t.throws(() => sendFd(1_000_000, a, { setBlocking: false })), 'EBADF');
});

test('sendFd is bounded when the socket is full, and restores the mode it changed', async (t) => {
  const [a] = pair(t);
  // Fill a's send buffer: with a zero timeout writeAll stops as soon as it would wait.
  assertFdError(t, t.throws(() => writeAll(a, Buffer.alloc(16 << 20), 0)), 'ETIMEDOUT');
  // A non-blocking descriptor to pass: an addon socket connected to a throwaway server.
  const socketPath = path.join(tempDirSync(t, 'fdpass-'), 's');
  await listen(t, net.createServer(), socketPath);
  const passed = connectUnix(socketPath);
  own(t, passed);
  t.is(fdFlags(passed) & O_NONBLOCK, O_NONBLOCK);
  const started = performance.now();
  assertFdError(t, t.throws(() => sendFd(a, passed, { timeoutMs: 100 })), 'ETIMEDOUT');
  t.true(performance.now() - started >= 90);
  t.is(fdFlags(passed) & O_NONBLOCK, O_NONBLOCK, 'O_NONBLOCK restored after the failed send');
});

test('connectUnix reports an absent service as IPC_ERR_SERVICE_UNAVAILABLE', (t) => {
  const err = t.throws(() => connectUnix(path.join(tempDirSync(t, 'fdpass-'), 'nobody')));
  t.true(err instanceof IpcError);
  t.is((err as IpcError).code, ErrorCode.SERVICE_UNAVAILABLE);
  t.is(((err as IpcError).cause as NodeJS.ErrnoException).code, 'ENOENT');
});

test('descriptorOf refuses a socket without a descriptor', (t) => {
  const socket = new net.Socket();
  assertFdError(t, t.throws(() => descriptorOf(socket)));
});

// Each waiting receive holds a libuv threadpool thread (PROTOCOL.md §4a): connectIpc must
// not start more lookups at once than MAX_CONCURRENT_LOOKUPS, whatever the caller asks.
test('connectIpc runs at most MAX_CONCURRENT_LOOKUPS lookups at once, and every lookup gets its descriptor', async (t) => {
  const dir = tempDirSync(t, 'fdpass-');
  const echoPath = path.join(dir, 'echo');
  await echoServer(t, echoPath);
  // A fake ipcd: counts the lookups it holds (accepted, not answered yet) and answers
  // each after a delay with ok and a connection to the echo service.
  const DELAY = 150;
  const lookups: string[] = [];
  let held = 0;
  let peak = 0;
  const ipcd = net.createServer((conn) => {
    held++;
    peak = Math.max(peak, held);
    conn.on('error', (err) => t.fail(String(err)));
    conn.once('data', (frame) => {
      lookups.push(frame.subarray(4).toString());
      setTimeout(() => {
        const service = net.connect(echoPath, () => {
          held--;
          sendFd(descriptorOf(conn), descriptorOf(service));
          service.destroy();
          conn.destroy();
        });
        // Paused before it connects, so Node never reads the socket it hands over.
        service.pause();
        service.on('error', (err) => t.fail(String(err)));
      }, DELAY);
    });
  });
  await listen(t, ipcd, path.join(dir, 'ipc'));

  const count = MAX_CONCURRENT_LOOKUPS * 3;
  const sockets = await Promise.all(
    Array.from({ length: count }, () => connectIpc('echo', { rundir: dir, network: 'echo unix://echo', lookupTimeout: 10_000 })),
  );
  for (const socket of sockets) {
    t.teardown(() => socket.destroy());
    socket.on('error', (err) => t.fail(String(err)));
  }
  t.is(peak, MAX_CONCURRENT_LOOKUPS, 'lookups held by ipcd at once');
  t.is(lookups.length, count);
  t.true(lookups.every((l) => l === 'echo;echo unix://echo'));
  const replies = await Promise.all(sockets.map((socket, i) => roundTrip(socket, `hello ${i}`)));
  t.deepEqual(
    replies,
    sockets.map((_, i) => `hello ${i}`),
  );
});

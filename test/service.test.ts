import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { serveService, type ServeOptions, type ServiceServer } from '../src/service.js';
import { connectService, connectServiceFd, connectServicePath } from '../src/client.js';
import { socketFromFd } from '../src/fdpass.js';
import { ErrorCode, IpcError } from '../src/errors.js';
import { WAIT, within } from './helpers/wait.js';
import { tempDirSync } from './helpers/rundir.js';

function modeOf(file: string): number {
  return statSync(file).mode & 0o7777;
}

/** Echoes everything back, ending when the peer ends. */
function echo(socket: net.Socket): void {
  socket.on('error', () => {});
  socket.pipe(socket);
}

/** Serves `name` in `rundir` as an echo service, closed when the test ends. */
async function serveEcho(t: ExecutionContext, name: string, rundir: string, options: ServeOptions = {}): Promise<ServiceServer> {
  const served = await serveService(name, { rundir, onConnection: echo, ...options });
  t.teardown(() => served.close());
  return served;
}

/** Connects to `socketPath`, sends `message`, half-closes, and resolves all it received before EOF. */
async function roundTrip(socketPath: string, message: string): Promise<string> {
  const socket = net.connect({ path: socketPath });
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  const closed = once(socket, 'close');
  socket.end(message);
  try {
    await within(closed, `round trip through ${socketPath}`);
  } finally {
    socket.destroy();
  }
  return Buffer.concat(chunks).toString();
}

/** Runs a Node child whose stdout prints `ready` when it is listening; killed when the test ends. */
async function child(t: ExecutionContext, code: string): Promise<ChildProcess> {
  const proc = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const ready = new Promise<void>((resolve, reject) => {
    proc.stdout!.once('data', () => resolve());
    proc.once('exit', (status) => reject(new Error(`child exited (${status}) before it was ready`)));
  });
  await within(ready, 'the child to listen');
  return proc;
}

/** Leaves a stale socket at `socketPath`: a child listens there, then is SIGKILLed. */
async function staleSocket(t: ExecutionContext, socketPath: string): Promise<void> {
  const proc = await child(
    t,
    `require('node:net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('ready'))`,
  );
  const exited = once(proc, 'exit');
  proc.kill('SIGKILL');
  await within(exited, 'the child to die');
  t.true(lstatSync(socketPath).isSocket(), 'the killed child left its socket file');
}

/** Resolves the rejection of `promise`, or fails the test with what it resolved instead. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (value) => ({ resolvedInstead: value }),
    (err: unknown) => err,
  );
}

// Modes

for (const mask of [0, 0o022, 0o077]) {
  test.serial(`the socket is 0660 and a new run directory 0770 under umask ${mask.toString(8).padStart(3, '0')}`, async (t) => {
    const rundir = path.join(tempDirSync(t, 'libipc-service-'), 'run');
    const previous = process.umask(mask);
    let served: ServiceServer;
    try {
      served = await serveEcho(t, 'pong', rundir);
    } finally {
      // serveService restores the umask it changed around bind.
      t.is(process.umask(previous), mask);
    }
    t.is(served.path, path.join(rundir, 'pong'));
    t.true(lstatSync(served.path).isSocket());
    t.is(modeOf(served.path), 0o660);
    t.is(modeOf(rundir), 0o770);
  });
}

// Serving

test('a served name accepts connections at $RUNDIR/<name> and hands them to onConnection', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const served = await serveEcho(t, 'pong', rundir);
  t.is(served.name, 'pong');
  t.true(served.server.listening);
  t.is(await roundTrip(path.join(rundir, 'pong'), 'bounce me'), 'bounce me');
});

test('a run directory given with a trailing slash is used as it is', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-') + '/';
  const served = await serveEcho(t, 'pong', rundir);
  t.is(served.path, path.join(rundir, 'pong'));
  t.is(await roundTrip(served.path, 'x'), 'x');
});

test('with allowHalfOpen a reply written after the client half-closed still reaches it', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const served = await serveService('late', {
    rundir,
    allowHalfOpen: true,
    onConnection(socket) {
      socket.on('error', () => {});
      socket.resume();
      // Reply only once the client's FIN arrived.
      socket.once('end', () => socket.end('late reply'));
    },
  });
  t.teardown(() => served.close());
  t.is(await roundTrip(served.path, 'request'), 'late reply');
});

// Exclusivity

test('a second serveService of a live name fails with IPC_ERR_SERVICE_IN_USE and the first keeps serving', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const first = await serveEcho(t, 'pong', rundir);
  const before = lstatSync(first.path).ino;

  // A client of the first instance, connected before the second tries.
  const client = await connectService('pong', { rundir });
  t.teardown(() => client.destroy());

  const err = await t.throwsAsync(serveService('pong', { rundir }), {
    instanceOf: IpcError,
    code: ErrorCode.SERVICE_IN_USE,
  });
  t.true(err?.message.includes("'pong'"));
  t.true(err?.message.includes(first.path));

  // The first instance is untouched: same socket file, still listening, clients served.
  t.is(lstatSync(first.path).ino, before);
  t.true(first.server.listening);
  t.is(await roundTrip(first.path, 'still here'), 'still here');
  const echoed = once(client, 'data');
  client.write('old client');
  const [data] = await within(echoed, 'the old client echo');
  t.is((data as Buffer).toString(), 'old client');
});

test('serveService of a name served by another process fails with IPC_ERR_SERVICE_IN_USE and leaves it serving', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const socketPath = path.join(rundir, 'pong');
  await child(
    t,
    `require('node:net').createServer((s) => s.pipe(s)).listen(${JSON.stringify(socketPath)}, () => console.log('ready'))`,
  );
  const err = await t.throwsAsync(serveService('pong', { rundir }), {
    instanceOf: IpcError,
    code: ErrorCode.SERVICE_IN_USE,
  });
  t.true(err?.message.includes("'pong'"));
  t.true(err?.message.includes(socketPath));
  t.is(await roundTrip(socketPath, 'other process'), 'other process');
});

// A live server whose accept backlog is full (busy, or blocked) makes a non-blocking Unix
// connect fail with EAGAIN: only ECONNREFUSED means stale.
test('serveService does not take over a live service whose accept backlog is full', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const socketPath = path.join(rundir, 'busy');
  const stop = path.join(rundir, 'stop');
  t.teardown(() => writeFileSync(stop, ''));
  // A live process that does not accept for a while (its event loop is busy).
  await child(
    t,
    `const net = require('node:net'), fs = require('node:fs');
     net.createServer().listen({ path: ${JSON.stringify(socketPath)}, backlog: 1 }, () => {
       console.log('ready');
       const until = Date.now() + 30000;
       while (Date.now() < until && !fs.existsSync(${JSON.stringify(stop)})) {}
       process.exit(0);
     });`,
  );
  const inode = lstatSync(socketPath).ino;
  // Fill its backlog until a connect is refused with EAGAIN.
  let refusedWith: string | undefined;
  for (let i = 0; i < 16 && refusedWith === undefined; i++) {
    const socket = net.connect({ path: socketPath });
    t.teardown(() => socket.destroy());
    const result = await within(
      new Promise<string | undefined>((resolve) => {
        socket.once('connect', () => resolve(undefined));
        socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code));
      }),
      'a connect to the busy service',
    );
    refusedWith = result;
  }
  t.is(refusedWith, 'EAGAIN');

  const result = await rejection(serveService('busy', { rundir }));
  if (!(result instanceof Error)) {
    const served = (result as { resolvedInstead: ServiceServer }).resolvedInstead;
    t.teardown(() => served.close());
  }
  t.true(result instanceof IpcError, 'serveService should have failed');
  t.is((result as IpcError).code, ErrorCode.SERVICE_IN_USE);
  // The running instance's socket file must still be its own.
  t.is(lstatSync(socketPath).ino, inode);
});

// Stale sockets

test('a stale socket left by a SIGKILLed process is recovered', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const socketPath = path.join(rundir, 'pong');
  await staleSocket(t, socketPath);

  const served = await serveEcho(t, 'pong', rundir);
  t.is(served.path, socketPath);
  t.true(lstatSync(socketPath).isSocket());
  t.is(modeOf(socketPath), 0o660);
  t.is(await roundTrip(socketPath, 'recovered'), 'recovered');
});

test('a path that exists and is not a socket fails with IPC_ERR_SERVICE_IN_USE and is left untouched', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const file = path.join(rundir, 'pong');
  writeFileSync(file, 'precious data');
  chmodSync(file, 0o600);
  const err = await t.throwsAsync(serveService('pong', { rundir }), {
    instanceOf: IpcError,
    code: ErrorCode.SERVICE_IN_USE,
  });
  t.true(err?.message.includes(file));
  t.true(err?.message.includes('not a socket'));
  t.true(lstatSync(file).isFile());
  t.is(modeOf(file), 0o600);
  t.is(readFileSync(file, 'utf8'), 'precious data');
});

test('a directory at the service path fails with IPC_ERR_SERVICE_IN_USE and is left untouched', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const dir = path.join(rundir, 'pong');
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'inside'), 'x');
  await t.throwsAsync(serveService('pong', { rundir }), { instanceOf: IpcError, code: ErrorCode.SERVICE_IN_USE });
  t.is(readFileSync(path.join(dir, 'inside'), 'utf8'), 'x');
});

// Symbolic links at the service path (defect 6b): a link would send clients, or a
// restarting server's liveness probe and unlink, to a socket anywhere.

/** Serves an echo at `<elsewhere>/target` and links `$RUNDIR/<name>` to it; counts its connections. */
async function linkedService(t: ExecutionContext, rundir: string, name: string): Promise<{ link: string; target: string; connections: () => number }> {
  const elsewhere = tempDirSync(t, 'libipc-elsewhere-');
  let connections = 0;
  const target = await serveService('target', {
    rundir: elsewhere,
    onConnection(socket) {
      // Counted and dropped: a regression must not leave a connection holding close() open.
      connections++;
      socket.destroy();
    },
  });
  t.teardown(() => target.close());
  const link = path.join(rundir, name);
  symlinkSync(target.path, link);
  return { link, target: target.path, connections: () => connections };
}

test('serveService refuses a symbolic link at the service path, to a live socket, and leaves link and target alone', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const { link, target, connections } = await linkedService(t, rundir, 'pong');
  const err = await t.throwsAsync(serveService('pong', { rundir }), { instanceOf: IpcError, code: ErrorCode.SERVICE_IN_USE });
  t.true(err?.message.includes(link), err?.message);
  t.regex(err?.message ?? '', /symbolic link/);
  t.is(readlinkSync(link), target);
  t.true(lstatSync(target).isSocket());
  t.is(connections(), 0, 'no liveness probe went through the link');
});

test('serveService refuses a symbolic link to a stale socket or to nothing, and unlinks neither', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const elsewhere = tempDirSync(t, 'libipc-elsewhere-');
  const stale = path.join(elsewhere, 'stale');
  await staleSocket(t, stale);
  symlinkSync(stale, path.join(rundir, 'stale'));
  symlinkSync(path.join(elsewhere, 'nothing'), path.join(rundir, 'dangling'));
  for (const name of ['stale', 'dangling']) {
    const err = await t.throwsAsync(serveService(name, { rundir }), { instanceOf: IpcError, code: ErrorCode.SERVICE_IN_USE });
    t.regex(err?.message ?? '', /symbolic link/);
    t.true(lstatSync(path.join(rundir, name)).isSymbolicLink(), `${name}: the link is left`);
  }
  t.true(lstatSync(stale).isSocket(), 'the stale socket the link points to is left');
  t.false(existsSync(path.join(elsewhere, 'nothing')), 'nothing was bound through the dangling link');
});

test('connectService does not follow a symbolic link at $RUNDIR/<name>: IPC_ERR_SERVICE_UNAVAILABLE saying so', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const { link, connections } = await linkedService(t, rundir, 'pong');
  const err = await t.throwsAsync(connectService('pong', { rundir }), { instanceOf: IpcError, code: ErrorCode.SERVICE_UNAVAILABLE });
  t.true(err?.message.includes("'pong'"), err?.message);
  t.true(err?.message.includes(link), err?.message);
  t.regex(err?.message ?? '', /symbolic link/);
  t.regex(err?.message ?? '', /not followed/);
  const direct = await t.throwsAsync(connectServicePath('pong', link), { instanceOf: IpcError, code: ErrorCode.SERVICE_UNAVAILABLE });
  t.regex(direct?.message ?? '', /not followed/);
  t.is(connections(), 0, 'the linked socket never saw a connection');
});

test('connectServiceFd (the native data plane\'s connect): a descriptor that echoes; the same refusals as connectService', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const served = await serveEcho(t, 'pong', rundir);
  const fd = connectServiceFd('pong', served.path);
  t.true(Number.isInteger(fd) && fd > 2);
  const socket = socketFromFd(fd);
  t.teardown(() => socket.destroy());
  const echoed = once(socket, 'data');
  socket.write('through a descriptor');
  t.is(((await within(echoed, 'the echo'))[0] as Buffer).toString(), 'through a descriptor');

  const { link, connections } = await linkedService(t, rundir, 'linked');
  const linked = t.throws(() => connectServiceFd('linked', link), { instanceOf: IpcError, code: ErrorCode.SERVICE_UNAVAILABLE });
  t.regex(linked?.message ?? '', /symbolic link, which is not followed/);
  t.is(connections(), 0, 'the linked socket never saw a connection');

  const absent = t.throws(() => connectServiceFd('absent', path.join(rundir, 'absent')), { instanceOf: IpcError, code: ErrorCode.SERVICE_UNAVAILABLE });
  t.is(absent?.message, `service 'absent' is not available at ${path.join(rundir, 'absent')} (ENOENT)`);
  await staleSocket(t, path.join(rundir, 'stale'));
  const stale = t.throws(() => connectServiceFd('stale', path.join(rundir, 'stale')), { instanceOf: IpcError, code: ErrorCode.SERVICE_UNAVAILABLE });
  t.regex(stale?.message ?? '', /\(ECONNREFUSED\)$/);
  // The same text as the JS socket's connect gives.
  const viaJs = await t.throwsAsync(connectServicePath('absent', path.join(rundir, 'absent')), { instanceOf: IpcError });
  t.is(viaJs?.message, absent?.message);
});

test('connectService in a run directory reached through a symbolic link still connects', async (t) => {
  // Only the service name is not followed: /var/run -> /run style run directories work.
  const base = tempDirSync(t, 'libipc-service-');
  const real = path.join(base, 'real');
  const served = await serveEcho(t, 'pong', real);
  symlinkSync(real, path.join(base, 'link'));
  const socket = await connectService('pong', { rundir: path.join(base, 'link') });
  t.teardown(() => socket.destroy());
  const echoed = once(socket, 'data');
  socket.write('through a linked run directory');
  t.is(((await within(echoed, 'the echo'))[0] as Buffer).toString(), 'through a linked run directory');
  t.true(lstatSync(served.path).isSocket());
});

// The run directory's owner and mode (defect 6a)

test('serveService refuses an existing run directory anyone may write, creating nothing in it', async (t) => {
  const rundir = path.join(tempDirSync(t, 'libipc-service-'), 'run');
  mkdirSync(rundir);
  chmodSync(rundir, 0o1777);
  const err = await t.throwsAsync(serveService('pong', { rundir }), { instanceOf: IpcError, code: ErrorCode.RUNDIR_UNUSABLE });
  t.true(err?.message.includes(rundir), err?.message);
  t.true(err?.message.includes('mode 1777'), err?.message);
  t.deepEqual(readdirSync(rundir), []);
  t.is(modeOf(rundir), 0o1777);
});

// Closing

test('close() removes the socket file, is idempotent, and the name can be served again', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const served = await serveService('pong', { rundir, onConnection: echo });
  const socketPath = served.path;
  t.true(existsSync(socketPath));
  const closing = served.close();
  t.is(served.close(), closing);
  await within(closing, 'close()');
  t.false(existsSync(socketPath));
  t.false(served.server.listening);

  const err = await t.throwsAsync(connectService('pong', { rundir }), {
    instanceOf: IpcError,
    code: ErrorCode.SERVICE_UNAVAILABLE,
  });
  t.true(err?.message.includes(socketPath));

  const again = await serveEcho(t, 'pong', rundir);
  t.is(await roundTrip(again.path, 'again'), 'again');
});

test('close() stops accepting while an open connection keeps working until it ends', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const served = await serveService('pong', { rundir, onConnection: echo });
  const client = await connectService('pong', { rundir });
  t.teardown(() => client.destroy());
  const closing = served.close();
  t.false(existsSync(served.path));
  const echoed = once(client, 'data');
  client.write('in flight');
  t.is(((await within(echoed, 'the echo'))[0] as Buffer).toString(), 'in flight');
  client.end();
  await within(closing, 'close() once the last connection ended');
});

// Refusals before anything is created

test('an invalid name fails with IPC_ERR_INVALID_SERVICE_NAME before the run directory is created', async (t) => {
  const rundir = path.join(tempDirSync(t, 'libipc-service-'), 'run');
  for (const name of ['../pong', 'a/b', '', 'pong\n', 'po ng']) {
    const err = await t.throwsAsync(serveService(name, { rundir }), {
      instanceOf: IpcError,
      code: ErrorCode.INVALID_SERVICE_NAME,
    });
    t.true(err?.message.includes(JSON.stringify(name)));
  }
  t.false(existsSync(rundir));
});

test('an unusable run directory fails with IPC_ERR_RUNDIR_UNUSABLE naming it', async (t) => {
  const file = path.join(tempDirSync(t, 'libipc-service-'), 'file');
  writeFileSync(file, '');
  const rundir = path.join(file, 'run');
  const err = await t.throwsAsync(serveService('pong', { rundir }), {
    instanceOf: IpcError,
    code: ErrorCode.RUNDIR_UNUSABLE,
  });
  t.true(err?.message.includes(rundir));
  t.true(lstatSync(file).isFile());
  t.is(readFileSync(file, 'utf8'), '');
});

// Node 20 silently truncates a Unix socket path to 107 bytes when binding: a server would
// listen at another path. Run in a child process so that a server left listening by a
// regression cannot keep this test file's process alive.
test('a socket path too long for sun_path fails with a coded error and leaves nothing listening', async (t) => {
  const rundir = path.join(tempDirSync(t, 'libipc-service-'), 'd'.repeat(70));
  const name = 'n'.repeat(40);
  const serviceModule = new URL('../src/service.js', import.meta.url).href;
  const proc = spawn(
    process.execPath,
    [
      '--import=tsx',
      '-e',
      `import(${JSON.stringify(serviceModule)}).then(({ serveService }) =>
         serveService(${JSON.stringify(name)}, { rundir: ${JSON.stringify(rundir)} }).then(
           (s) => { console.log(JSON.stringify({ resolved: s.path })); return s.close(); },
           (e) => console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })),
         ));`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  let out = '';
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = once(proc, 'exit');
  // With nothing left listening the child's event loop empties and it exits by itself
  // (bounded by WAIT: tsx startup alone takes seconds on a loaded machine).
  const exitedByItself = await within(exited, 'the child', WAIT).then(
    () => true,
    () => false,
  );
  const result = JSON.parse(out.trim().split('\n')[0] ?? '{}') as { name?: string; code?: string; message?: string };
  t.is(result.name, 'IpcError', out);
  t.true(result.code === ErrorCode.RUNDIR_UNUSABLE || result.code === ErrorCode.INVALID_SERVICE_NAME, out);
  t.true(result.message?.includes(path.join(rundir, name)), out);
  t.true(exitedByItself, 'a server was left listening');
  // No socket was created, at the path or at a truncated one.
  t.deepEqual(existsSync(rundir) ? readdirSync(rundir) : [], []);
});

// Connecting (src/client.ts)

test('connectService connects to a served name and the socket carries data both ways', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  await serveEcho(t, 'pong', rundir);
  const socket = await connectService('pong', { rundir });
  t.teardown(() => socket.destroy());
  t.false(socket.allowHalfOpen);
  const echoed = once(socket, 'data');
  socket.write('both ways');
  t.is(((await within(echoed, 'the echo'))[0] as Buffer).toString(), 'both ways');
});

test('connectService with allowHalfOpen can still send after the service half-closed first', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  let serviceGot: (text: string) => void = () => {};
  const got = new Promise<string>((resolve) => (serviceGot = resolve));
  const served = await serveService('finfirst', {
    rundir,
    allowHalfOpen: true,
    onConnection(socket) {
      socket.on('error', () => {});
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('end', () => serviceGot(Buffer.concat(chunks).toString()));
      // The service speaks and half-closes first.
      socket.end('hello');
    },
  });
  t.teardown(() => served.close());
  const socket = await connectService('finfirst', { rundir, allowHalfOpen: true });
  t.teardown(() => socket.destroy());
  t.true(socket.allowHalfOpen);
  const received: Buffer[] = [];
  socket.on('data', (c: Buffer) => received.push(c));
  await within(once(socket, 'end'), "the service's FIN");
  t.is(Buffer.concat(received).toString(), 'hello');
  socket.end('after your FIN');
  t.is(await within(got, 'the service to read to its end'), 'after your FIN');
});

test('connectService to an absent name fails with IPC_ERR_SERVICE_UNAVAILABLE naming the service and path', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const err = await t.throwsAsync(connectService('nobody', { rundir }), {
    instanceOf: IpcError,
    code: ErrorCode.SERVICE_UNAVAILABLE,
  });
  t.true(err?.message.includes("'nobody'"));
  t.true(err?.message.includes(path.join(rundir, 'nobody')));
  t.is((err?.cause as NodeJS.ErrnoException | undefined)?.code, 'ENOENT');
  t.false(existsSync(path.join(rundir, 'nobody')));
});

test('connectService to a stale socket fails with IPC_ERR_SERVICE_UNAVAILABLE naming the path', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  const socketPath = path.join(rundir, 'dead');
  await staleSocket(t, socketPath);
  const err = await t.throwsAsync(connectService('dead', { rundir }), {
    instanceOf: IpcError,
    code: ErrorCode.SERVICE_UNAVAILABLE,
  });
  t.true(err?.message.includes(socketPath));
  t.true(err?.message.includes('ECONNREFUSED'));
  t.is((err?.cause as NodeJS.ErrnoException | undefined)?.code, 'ECONNREFUSED');
  // Connecting does not clean up: only a new server recovers the name.
  t.true(lstatSync(socketPath).isSocket());
});

test('connectService with an invalid name fails with IPC_ERR_INVALID_SERVICE_NAME', async (t) => {
  const rundir = tempDirSync(t, 'libipc-service-');
  for (const name of ['../pong', '/etc/x', 'a;b']) {
    // Wrapped in an async function: connectService throws this one synchronously.
    const err = await t.throwsAsync(async () => connectService(name, { rundir }), {
      instanceOf: IpcError,
      code: ErrorCode.INVALID_SERVICE_NAME,
    });
    t.true(err?.message.includes(JSON.stringify(name)));
  }
});

/**
 * The command lines, spawned from dist/: pongd (listening line, modes under any umask,
 * exclusivity, stale socket recovery, clean exit on signals, unusable RUNDIR), pong, and
 * tcpd's start and usage errors. Each test has its own RUNDIR.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, lstatSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli, spawnCli, startPongd, startTcpd, type Daemon } from './helpers/daemon.js';
import { byMsg } from './helpers/log-sink.js';
import { frame, probeEcho, RawClient, tcpSession, WAIT } from './helpers/raw-client.js';
import { tempDir, tempRundir } from './helpers/rundir.js';

function mode(file: string): number {
  return statSync(file).mode & 0o777;
}

/** Connects to `socketPath` and resolves the connect error's code (null when it connects). */
function connectError(t: ExecutionContext, socketPath: string): Promise<string | null> {
  return RawClient.unix(t, socketPath).then(
    (client) => {
      client.destroy();
      return null;
    },
    (err: NodeJS.ErrnoException) => err.code ?? err.message,
  );
}

// ---------------------------------------------------------------------------------------
// pongd

test('pongd logs listening with its socket path, serves, and SIGTERM removes the socket with exit 0', async (t) => {
  const rundir = await tempRundir(t);
  const { daemon, path: socketPath } = await startPongd(t, rundir);
  t.is(socketPath, path.join(rundir, 'pong'));
  t.true(lstatSync(socketPath).isSocket());
  const listening = daemon.log.filter(byMsg('listening'))[0]!;
  t.is(listening['service'], 'pong');
  await probeEcho(await RawClient.unix(t, socketPath));
  daemon.kill('SIGTERM');
  t.deepEqual(await daemon.waitExit(WAIT), { code: 0, signal: null });
  t.false(existsSync(socketPath));
});

test('pongd serves the name given by --service and by IPC_SERVICE_NAME', async (t) => {
  const rundir = await tempRundir(t);
  const flag = await startPongd(t, rundir, 'echo');
  t.is(flag.path, path.join(rundir, 'echo'));
  const env = spawnCli(t, 'pongd', [], { env: { RUNDIR: rundir, IPC_SERVICE_NAME: 'other' } });
  t.is((await env.listening())['path'], path.join(rundir, 'other'));
  await probeEcho(await RawClient.unix(t, path.join(rundir, 'other')));
});

const umaskModes = test.macro({
  async exec(t, umask: string) {
    const rundir = await tempRundir(t);
    const daemon = spawnCli(t, 'pongd', ['--service', 'pong'], { env: { RUNDIR: rundir }, umask });
    const socketPath = String((await daemon.listening())['path']);
    t.is(mode(rundir).toString(8), '770', 'run directory');
    t.is(mode(socketPath).toString(8), '660', 'socket');
    await probeEcho(await RawClient.unix(t, socketPath));
  },
  title: (_title, umask: string) => `pongd creates its run directory 0770 and socket 0660 under umask ${umask}`,
});

test(umaskModes, '000');
test(umaskModes, '077');

test('a second pongd on the same name exits 1 naming the service and path, and the first keeps serving', async (t) => {
  const rundir = await tempRundir(t);
  const first = await startPongd(t, rundir);
  const client = await RawClient.unix(t, first.path);
  const second = await runCli(t, 'pongd', ['--service', 'pong'], { env: { RUNDIR: rundir } });
  t.is(second.code, 1);
  t.regex(second.stderr, /'pong'/);
  t.true(second.stderr.includes(first.path), second.stderr);
  // The first is untouched: its open client and a new one are served.
  await probeEcho(client);
  await probeEcho(await RawClient.unix(t, first.path));
  t.true(first.daemon.running);
});

test('a restart recovers the stale socket of a SIGKILLed pongd', async (t) => {
  const rundir = await tempRundir(t);
  const killed = await startPongd(t, rundir);
  killed.daemon.kill('SIGKILL');
  t.is((await killed.daemon.waitExit(WAIT)).signal, 'SIGKILL');
  t.true(lstatSync(killed.path).isSocket(), 'the socket file stays');
  t.is(await connectError(t, killed.path), 'ECONNREFUSED');
  const restarted = await startPongd(t, rundir);
  t.is(restarted.path, killed.path);
  await probeEcho(await RawClient.unix(t, restarted.path));
});

/** The daemon serves (so the signal below reaches a daemon at work, not one starting). */
async function serving(daemon: Daemon, socketPath: string, t: ExecutionContext): Promise<void> {
  await probeEcho(await RawClient.unix(t, socketPath));
  t.true(daemon.running);
}

const signalExit = test.macro({
  async exec(t, signal: NodeJS.Signals) {
    const rundir = await tempRundir(t);
    const { daemon, path: socketPath } = await startPongd(t, rundir);
    await serving(daemon, socketPath, t);
    const open = await RawClient.unix(t, socketPath);
    daemon.kill(signal);
    t.deepEqual(await daemon.waitExit(WAIT), { code: 0, signal: null });
    t.false(existsSync(socketPath), 'socket removed');
    await open.expectEof();
    t.deepEqual(readdirSync(rundir), [], 'nothing left in the run directory');
  },
  title: (_title, signal: NodeJS.Signals) => `pongd removes its socket and exits 0 on ${signal}`,
});

test(signalExit, 'SIGINT');
test(signalExit, 'SIGTERM');
test(signalExit, 'SIGHUP');

test('pongd exits 1 with a clear message when RUNDIR cannot be created (under a regular file)', async (t) => {
  const base = await tempDir(t);
  writeFileSync(path.join(base, 'file'), 'not a directory');
  const rundir = path.join(base, 'file', 'run');
  const run = await runCli(t, 'pongd', [], { env: { RUNDIR: rundir } });
  t.is(run.code, 1);
  t.true(run.stderr.includes(rundir), run.stderr);
  t.regex(run.stderr, /not usable/);
});

test('pongd refuses to replace a file that is not a socket', async (t) => {
  const rundir = await tempRundir(t);
  mkdirSync(rundir, { recursive: true });
  const squatter = path.join(rundir, 'pong');
  writeFileSync(squatter, 'keep me');
  const run = await runCli(t, 'pongd', [], { env: { RUNDIR: rundir } });
  t.is(run.code, 1);
  t.true(run.stderr.includes(squatter), run.stderr);
  t.true(lstatSync(squatter).isFile(), 'the file is untouched');
});

// ---------------------------------------------------------------------------------------
// pong

test('pong prints the echo and exits 0', async (t) => {
  const rundir = await tempRundir(t);
  await startPongd(t, rundir);
  const run = await runCli(t, 'pong', [], { env: { RUNDIR: rundir } });
  t.is(run.code, 0, run.stderr);
  t.is(run.stdout, 'bounce me\n');
  const custom = await runCli(t, 'pong', ['hello there'], { env: { RUNDIR: rundir } });
  t.is(custom.code, 0, custom.stderr);
  t.is(custom.stdout, 'hello there\n');
});

test('pong with no service running exits non-zero naming the service and the socket path', async (t) => {
  const rundir = await tempRundir(t);
  mkdirSync(rundir, { recursive: true });
  const run = await runCli(t, 'pong', ['--service', 'missing'], { env: { RUNDIR: rundir } });
  t.not(run.code, 0);
  t.regex(run.stderr, /'missing'/);
  t.true(run.stderr.includes(path.join(rundir, 'missing')), run.stderr);
});

// ---------------------------------------------------------------------------------------
// tcpd

test('tcpd logs listening with its port and outbound path, passes an echo, and exits 0 on SIGTERM', async (t) => {
  const rundir = await tempRundir(t);
  await startPongd(t, rundir);
  const { daemon, port } = await startTcpd(t, rundir);
  const outbound = await daemon.listening((l) => l['role'] === 'outbound');
  t.is(outbound['path'], path.join(rundir, 'tcp'));
  const client = await tcpSession(t, port);
  await client.write(frame('bounce me'));
  await client.expect(frame('bounce me'));
  client.destroy();
  await daemon.log.waitFor(byMsg('connection closed', client.peer), WAIT, 'teardown');
  daemon.kill('SIGTERM');
  t.deepEqual(await daemon.waitExit(WAIT), { code: 0, signal: null });
  t.false(existsSync(path.join(rundir, 'tcp')), 'outbound socket removed');
});

test('a second tcpd in the same RUNDIR runs without outbound and says why; with --name tcp it exits 1; the first keeps serving', async (t) => {
  const rundir = await tempRundir(t);
  await startPongd(t, rundir);
  const first = await startTcpd(t, rundir);
  await first.daemon.listening((l) => l['role'] === 'outbound');
  // The default name is taken: a warning, and the second serves its TCP clients.
  const second = await startTcpd(t, rundir);
  const warning = await second.daemon.log.waitFor((l) => l['role'] === 'outbound' && l['code'] === 'IPC_ERR_SERVICE_IN_USE', 10_000, 'the warning');
  t.is(warning['service'], 'tcp');
  await probeEcho(await tcpSession(t, second.port));
  // Asked for by name: the name in use is an error, as before.
  const named = await runCli(t, 'tcpd', ['--listen', '127.0.0.1:0', '--allow', '*', '--name', 'tcp'], { env: { RUNDIR: rundir } });
  t.is(named.code, 1);
  t.regex(named.stderr, /'tcp'/);
  t.true(named.stderr.includes(path.join(rundir, 'tcp')), named.stderr);
  await probeEcho(await tcpSession(t, first.port));
  t.true(lstatSync(path.join(rundir, 'tcp')).isSocket(), "the first one's outbound socket is untouched");
  // Inbound only: no outbound service, so no conflict and no warning.
  const inboundOnly = await startTcpd(t, rundir, ['--listen', '127.0.0.1:0', '--allow', '*', '--no-outbound']);
  await probeEcho(await tcpSession(t, inboundOnly.port));
});

const tcpdUsage = test.macro({
  async exec(t, args: string[], mentions: RegExp) {
    const rundir = await tempRundir(t);
    const run = await runCli(t, 'tcpd', args, { env: { RUNDIR: rundir } });
    t.is(run.code, 1);
    t.regex(run.stderr, mentions);
  },
  title: (title = '') => `tcpd exits 1 with a usage message ${title}`,
});

test('without --listen', tcpdUsage, ['--allow', '*'], /--listen/);
test('without --service or --allow', tcpdUsage, ['--listen', '127.0.0.1:0'], /--service/);
test('without any option', tcpdUsage, [], /--listen/);
test('for a malformed listen address', tcpdUsage, ['--listen', 'nowhere', '--allow', '*'], /nowhere/);

// ---------------------------------------------------------------------------------------
// Regressions (bugs found by these tests)

/**
 * The daemons used to log `listening` before installing their SIGINT/SIGTERM/SIGHUP
 * handlers, so a supervisor that signalled as soon as it read the line killed them with
 * the default action: no cleanup, a stale socket left, exit by signal instead of 0.
 */
const signalRightAfterListening = test.macro({
  async exec(t, name: 'pongd' | 'tcpd') {
    // Bounded: the race was lost most of the time; five tries catch it back.
    for (let i = 0; i < 5; i++) {
      const rundir = await tempRundir(t);
      const args = name === 'tcpd' ? ['--listen', '127.0.0.1:0', '--allow', '*'] : [];
      const daemon = spawnCli(t, name, args, { env: { RUNDIR: rundir } });
      // tcpd's last startup line is its outbound service's.
      await daemon.listening((l) => name === 'pongd' || l['role'] === 'outbound');
      daemon.kill('SIGTERM');
      t.deepEqual(await daemon.waitExit(WAIT), { code: 0, signal: null }, `try ${i + 1}`);
      t.deepEqual(readdirSync(rundir), [], `try ${i + 1}: sockets removed`);
    }
  },
  title: (_title, name: string) => `${name} exits 0 and removes its sockets on a SIGTERM sent as soon as it logged listening`,
});

test(signalRightAfterListening, 'pongd');
test(signalRightAfterListening, 'tcpd');

test('a RUNDIR too long for a socket path fails clearly and leaves no stray socket', async (t) => {
  const base = await tempDir(t);
  // 109 characters, as in the vector: $RUNDIR/pong is longer than sun_path (108 bytes),
  // which bind() would truncate silently, creating a socket beside RUNDIR.
  const rundir = path.join(base, 'x'.repeat(109 - base.length - 1));
  t.is(rundir.length, 109);
  const run = await runCli(t, 'pongd', [], { env: { RUNDIR: rundir } });
  t.is(run.code, 1);
  t.deepEqual(
    readdirSync(base).filter((name) => name !== path.basename(rundir)),
    [],
    'nothing created beside RUNDIR',
  );
  t.regex(run.stderr, /too long/);
  t.true(run.stderr.includes(path.join(rundir, 'pong')), run.stderr);
});

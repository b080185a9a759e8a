/**
 * gatewayd with `workers: 2` (gateways/cluster.ts): connections spread over both worker
 * processes, a worker killed under load (its clients closed, the other's kept, a new
 * worker serving), SIGTERM draining every worker, reload reaching every worker, and the
 * outbound services and ipcd served once by the primary. Real processes, real sockets.
 */
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { lstatSync, readdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { runCli, spawnCli, startPongd, type Daemon } from './helpers/daemon.js';
import { tempDir } from './helpers/rundir.js';
import { RawClient, echoOn, frame, probeEcho, tcpSession } from './helpers/raw-client.js';
import { codeOf, type LogLine } from './helpers/log-sink.js';
import { until } from './helpers/wait.js';
import { connectIpc } from '../src/client.js';
import { adminPort, metricValue, scrape } from './helpers/admin.js';

const WAIT = 15_000;

interface Cluster {
  dir: string;
  rundir: string;
  file: string;
  daemon: Daemon;
  /** The TCP port every worker shares. */
  port: number;
  workerPids: number[];
}

async function startCluster(t: ExecutionContext, yaml: string): Promise<Cluster> {
  return startClusterIn(t, await tempDir(t, 'gwk-'), yaml);
}

async function startClusterIn(t: ExecutionContext, dir: string, yaml: string): Promise<Cluster> {
  const rundir = path.join(dir, 'run');
  await startPongd(t, rundir);
  const file = path.join(dir, 'gatewayd.yaml');
  writeFileSync(file, yaml);
  const daemon = spawnCli(t, 'gatewayd', ['--config', file], { env: { RUNDIR: rundir } });
  const started = await daemon.log.waitFor((l) => l.msg === 'gatewayd started' && l['pid'] === daemon.pid, WAIT, 'gatewayd started (primary)');
  const workerPids = started['workerPids'] as number[];
  const listening = daemon.log.lines.find((l) => l.msg === 'listening' && l['transport'] === 'tcp');
  return { dir, rundir, file, daemon, port: (listening?.['port'] as number | undefined) ?? 0, workerPids };
}

const config = (extra = '', allow = '[pong]') =>
  `workers: 2\ndrain-timeout: 1000\n${extra}gateways:\n  - type: tcp\n    listen: 127.0.0.1:0\n    allow: ${allow}\n`;

const from = (daemon: Daemon, mark: number) => (l: LogLine) => daemon.log.lines.indexOf(l) >= mark;

/** One client of the spread test: connect, name pong, one echo, close. Bounded by `timeout`. */
function oneEcho(port: number, payload: Buffer, timeout = WAIT): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const expected = Buffer.concat([Buffer.from('ok'), payload]);
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error(`no echo within ${timeout} ms (got ${got.length} bytes)`)), timeout);
    const finish = (err?: Error) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    socket.on('connect', () => socket.write(Buffer.concat([Buffer.from('pong'), payload])));
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length < expected.length) return;
      if (got.equals(expected)) {
        socket.end();
        socket.once('close', () => finish());
      } else finish(new Error(`wrong echo: ${got.toString('hex')}`));
    });
    socket.on('error', (err) => finish(err));
    socket.on('close', () => {
      if (got.length < expected.length) finish(new Error(`closed after ${got.length} bytes`));
    });
  });
}

/** Runs `count` tasks, `concurrency` at a time. */
async function bounded(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

test('workers: 2 spreads 1000 connections over both workers (each serves at least a third)', async (t) => {
  const c = await startCluster(t, config());
  t.is(c.workerPids.length, 2);
  const mark = c.daemon.log.lines.length;
  const COUNT = 1000;
  await bounded(COUNT, 32, (i) => oneEcho(c.port, frame(`message ${i}`)));
  const closed = (l: LogLine) => l.msg === 'connection closed' && from(c.daemon, mark)(l);
  await c.daemon.log.waitFor(() => c.daemon.log.filter(closed).length >= COUNT, WAIT, `${COUNT} connection closed lines`);
  const perPid = new Map<unknown, number>();
  for (const l of c.daemon.log.filter(closed)) perPid.set(l['pid'], (perPid.get(l['pid']) ?? 0) + 1);
  t.log(`connections per worker: ${c.workerPids.map((pid) => perPid.get(pid) ?? 0).join(' / ')}`);
  t.deepEqual([...perPid.keys()].sort(), [...c.workerPids].sort(), 'every connection line comes from a worker');
  for (const pid of c.workerPids) t.true(perPid.get(pid)! >= COUNT / 3, `worker ${pid} served ${perPid.get(pid)} of ${COUNT}`);
  c.daemon.kill('SIGTERM');
  t.is((await c.daemon.waitExit(WAIT)).code, 0);
});

test('a worker killed with SIGKILL under load: its clients are closed, the other worker\'s keep echoing, a new worker takes new clients', async (t) => {
  const c = await startCluster(t, config());
  const [victim, survivor] = c.workerPids as [number, number];
  const clients = await Promise.all(Array.from({ length: 24 }, () => tcpSession(t, c.port)));
  // Load: every client echoes in a loop until told to stop or its connection fails.
  let stop = false;
  const echoes = clients.map(() => 0);
  const loops = clients.map(async (client, i) => {
    for (let round = 0; round < 100_000 && !stop; round++) {
      try {
        await probeEcho(client);
        echoes[i]! += 1;
      } catch {
        return 'closed' as const;
      }
    }
    return 'served' as const;
  });
  await until(() => echoes.every((n) => n >= 3), 'every client echoing', WAIT);
  process.kill(victim, 'SIGKILL');
  const died = await c.daemon.log.waitFor((l) => l.msg === 'worker died: restarting it', WAIT, 'the primary logging the death');
  t.like(died, { pid: c.daemon.pid, workerPid: victim, signal: 'SIGKILL' });
  const restarted = await c.daemon.log.waitFor((l) => l.msg === 'worker restarted', WAIT, 'worker restarted');
  const newcomer = restarted['workerPid'] as number;
  t.false(c.workerPids.includes(newcomer));
  stop = true;
  const outcome = await Promise.all(loops);
  const lost = clients.filter((_, i) => outcome[i] === 'closed');
  const kept = clients.filter((_, i) => outcome[i] === 'served');
  t.true(lost.length >= 1 && kept.length >= 1, `lost ${lost.length}, kept ${kept.length}`);
  for (const client of kept) await probeEcho(client); // still echoing after the death
  // Mapping: each kept client's end is logged by the survivor; none of the lost ones was its.
  const mark = c.daemon.log.lines.length;
  for (const client of kept) client.socket.end();
  const endOf = (client: RawClient) => (l: LogLine) => l.msg === 'connection closed' && l['peer'] === client.peer;
  for (const client of kept) t.is((await c.daemon.log.waitFor((l) => endOf(client)(l) && from(c.daemon, mark)(l), WAIT, `end of ${client.peer}`))['pid'], survivor);
  for (const client of lost) t.is(c.daemon.log.filter(endOf(client)).length, 0, `${client.peer} was the killed worker's`);
  // New clients reach the new worker too (round-robin: within a few connections).
  let servedByNewcomer = false;
  for (let i = 0; i < 10 && !servedByNewcomer; i++) {
    const m = c.daemon.log.lines.length;
    await oneEcho(c.port, frame(`new ${i}`));
    const line = await c.daemon.log.waitFor((l) => l.msg === 'connection closed' && from(c.daemon, m)(l), WAIT, 'the new client\'s end');
    servedByNewcomer = line['pid'] === newcomer;
  }
  t.true(servedByNewcomer, 'the restarted worker serves new clients');
});

test('SIGTERM with workers: 2 and an open connection: every worker drains within drain-timeout, exit 0', async (t) => {
  const c = await startCluster(t, config());
  const open = await tcpSession(t, c.port);
  await probeEcho(open);
  c.daemon.kill('SIGTERM');
  // The open connection is closed when drain-timeout (1 s) ends, then everything exits.
  t.is(await open.expectEof(WAIT), 'eof');
  const exit = await c.daemon.waitExit(WAIT);
  t.is(exit.code, 0);
  t.is(c.daemon.log.filter((l) => l.msg === 'worker stopped' && l['pid'] === c.daemon.pid && l['code'] === 0).length, 2);
  t.is(c.daemon.log.filter((l) => l.msg === 'worker still running after drain-timeout: killing it').length, 0, 'both drained by themselves');
  t.truthy(c.daemon.log.lines.find((l) => l.msg === 'connection closed' && l['peer'] === open.peer && codeOf(l) === 'IPC_ERR_SHUTDOWN'));
  for (const pid of c.workerPids) t.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `worker ${pid} is gone`);
});

test('SIGTERM: a worker that cannot drain (stopped) is killed after drain-timeout + margin; the primary exits 0', async (t) => {
  const c = await startCluster(t, config().replace('drain-timeout: 1000', 'drain-timeout: 300'));
  const [frozen] = c.workerPids as [number];
  process.kill(frozen, 'SIGSTOP');
  t.teardown(() => {
    try {
      process.kill(frozen, 'SIGKILL');
    } catch {
      // gone
    }
  });
  c.daemon.kill('SIGTERM');
  t.is((await c.daemon.waitExit(WAIT)).code, 0);
  t.like(c.daemon.log.lines.find((l) => l.msg === 'worker still running after drain-timeout: killing it'), { workerPid: frozen, drainTimeout: 300 });
  t.throws(() => process.kill(frozen, 0), { code: 'ESRCH' });
});

test('SIGHUP reaches every worker (a widened allow-list applies in both), a bad file is refused once by the primary, a storm of 10 is survived', async (t) => {
  const c = await startCluster(t, config());
  /** Opens `n` clients naming `other` one after another; resolves the refusal line of each. */
  const refusals = async (n: number): Promise<LogLine[]> => {
    const lines: LogLine[] = [];
    for (let i = 0; i < n; i++) {
      const client = await RawClient.tcp(t, c.port);
      await client.write(Buffer.from('other'));
      await client.expectEof();
      lines.push(await c.daemon.log.waitFor((l) => l.msg === 'connection refused' && l['peer'] === client.peer, WAIT, `refusal of ${client.peer}`));
    }
    return lines;
  };
  const before = await refusals(4);
  t.true(before.every((l) => codeOf(l) === 'IPC_ERR_SERVICE_NOT_ALLOWED'));

  const mark = c.daemon.log.lines.length;
  writeFileSync(c.file, config('', "'*'"));
  c.daemon.kill('SIGHUP');
  await c.daemon.log.waitFor((l) => l.msg === 'reloaded every worker' && from(c.daemon, mark)(l), WAIT, 'reloaded every worker');
  const reloadedBy = c.daemon.log.filter((l) => l.msg === 'reloaded' && from(c.daemon, mark)(l)).map((l) => l['pid']);
  t.deepEqual(reloadedBy.sort(), [...c.workerPids].sort(), 'each worker logs its reload');
  const after = await refusals(6);
  t.true(after.every((l) => codeOf(l) === 'IPC_ERR_SERVICE_UNAVAILABLE'), 'now allowed: refused only because nothing serves it');
  t.deepEqual([...new Set(after.map((l) => l['pid']))].sort(), [...c.workerPids].sort(), 'both workers apply the new allow-list');

  // A broken file: one refusal line, by the primary; the workers never see it.
  const mark2 = c.daemon.log.lines.length;
  writeFileSync(c.file, 'gateways: [\n');
  c.daemon.kill('SIGHUP');
  const refused = await c.daemon.log.waitFor((l) => l.msg === 'reload refused: keeping the configuration in use' && from(c.daemon, mark2)(l), WAIT, 'reload refused');
  t.is(refused['pid'], c.daemon.pid);
  t.regex(String(refused['reason']), /YAML syntax error/);
  await probeEcho(await tcpSession(t, c.port));
  t.is(c.daemon.log.filter((l) => l.msg === 'reload refused: keeping the configuration in use' && from(c.daemon, mark2)(l)).length, 1);
  t.is(c.daemon.log.filter((l) => (l.msg === 'reloaded' || l.msg === 'reload refused: keeping the configuration in use') && l['pid'] !== c.daemon.pid && from(c.daemon, mark2)(l)).length, 0);

  // A storm: 10 SIGHUPs at once, with a good file (the kernel may merge pending ones):
  // every reload the primary forwards reaches both workers, nothing dies.
  writeFileSync(c.file, config());
  const mark3 = c.daemon.log.lines.length;
  for (let i = 0; i < 10; i++) c.daemon.kill('SIGHUP');
  const since = (msg: string) => c.daemon.log.filter((l) => l.msg === msg && from(c.daemon, mark3)(l)).length;
  await c.daemon.log.waitFor((l) => l.msg === 'reloaded every worker' && from(c.daemon, mark3)(l), WAIT, 'a reload after the storm');
  await new Promise((resolve) => setTimeout(resolve, 300)); // signals still being handled
  await until(() => since('reloaded every worker') === since('reloading every worker'), 'every forwarded reload done', WAIT);
  t.is(since('reloaded'), 2 * since('reloading every worker'));
  t.is(c.daemon.log.filter((l) => l.msg === 'worker died: restarting it').length, 0);
  t.true((await refusals(2)).every((l) => codeOf(l) === 'IPC_ERR_SERVICE_NOT_ALLOWED'), 'the allow-list is back to [pong]');
  await probeEcho(await tcpSession(t, c.port));

  // workers changes only at a restart: said once by the primary, the 2 workers go on.
  const mark4 = c.daemon.log.lines.length;
  writeFileSync(c.file, config().replace('workers: 2', 'workers: 3'));
  c.daemon.kill('SIGHUP');
  const line = await c.daemon.log.waitFor((l) => l.msg?.startsWith('reloading every worker') === true && from(c.daemon, mark4)(l), WAIT, 'the forwarded reload');
  t.deepEqual(line['needsRestart'], ['workers']);
  await c.daemon.log.waitFor((l) => l.msg === 'reloaded every worker' && from(c.daemon, mark4)(l), WAIT, 'reloaded every worker');
  t.is(c.daemon.log.filter((l) => l.msg === 'worker started' && from(c.daemon, mark4)(l)).length, 0);
  t.true(c.daemon.log.filter((l) => l.msg === 'reloaded' && from(c.daemon, mark4)(l)).every((l) => l['needsRestart'] === undefined), 'workers run with the keys the primary started with');
});

test('the outbound services and ipcd are served once, by the primary; a lookup goes ipcd -> outbound tcp -> a worker -> pongd', async (t) => {
  const c = await startCluster(t, config('ipcd: true\noutbound:\n  tcp: {}\n'));
  t.deepEqual(readdirSync(c.rundir).sort(), ['ipc', 'pong', 'tcp']);
  const ipcLines = c.daemon.log.filter((l) => l.msg === 'listening' && l['service'] === 'ipc');
  const outboundLines = c.daemon.log.filter((l) => l.msg === 'listening' && l['role'] === 'outbound');
  t.is(ipcLines.length, 1);
  t.is(outboundLines.length, 1);
  t.is(ipcLines[0]!['pid'], c.daemon.pid);
  t.is(outboundLines[0]!['pid'], c.daemon.pid);
  const mark = c.daemon.log.lines.length;
  for (let i = 0; i < 4; i++) {
    const socket = await connectIpc('pong', { rundir: c.rundir, network: `pong tcp://127.0.0.1:${c.port}/pong` });
    t.teardown(() => socket.destroy());
    const message = frame(`lookup ${i}`);
    const reply = await echoOn(socket, message, WAIT);
    t.is(reply.toString('hex'), message.toString('hex'));
    socket.destroy();
  }
  // Four lookups through the outbound service (its lines: the primary's) reached the
  // workers' tcp gateway (both, round-robin).
  const ends = () => c.daemon.log.filter((l) => l.msg === 'connection closed' && l['service'] === 'pong' && l['pid'] !== c.daemon.pid && from(c.daemon, mark)(l));
  await until(() => ends().length >= 4, 'the four tcp connections closed', WAIT);
  t.deepEqual([...new Set(ends().map((l) => l['pid']))].sort(), [...c.workerPids].sort());
});

const refused = test.macro({
  async exec(t, workers: string, message: RegExp) {
    const dir = await tempDir(t, 'gwk-');
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(file, config().replace('workers: 2', `workers: ${workers}`));
    const run = await runCli(t, 'gatewayd', ['--check', '--config', file]);
    t.is(run.code, 1);
    t.regex(run.stderr, message);
  },
  title: (title = '') => `--check refuses workers: ${title}`,
});
test('0', refused, '0', /workers: expected "auto" or an integer from 1 to 256, got 0/);
test('many', refused, 'many', /workers: expected "auto" or an integer from 1 to 256, got/);
test('1000', refused, '1000', /workers: expected "auto" or an integer from 1 to 256, got 1000/);
test('2.5', refused, '2.5', /workers: expected "auto" or an integer/);

test('workers: auto is one per core; workers: 1 stays one process (no cluster)', async (t) => {
  const dir = await tempDir(t, 'gwk-');
  const file = path.join(dir, 'auto.yaml');
  writeFileSync(file, config().replace('workers: 2', 'workers: auto'));
  const run = await runCli(t, 'gatewayd', ['--check', '--config', file]);
  t.is(run.code, 0, run.stderr);
  const one = await startOne(t, config().replace('workers: 2', 'workers: 1'));
  t.is(one.log.filter((l) => l.msg === 'worker started').length, 0);
  t.true(one.log.lines.every((l) => l['pid'] === one.pid));
  one.kill('SIGTERM');
  t.is((await one.waitExit(WAIT)).code, 0);
});

async function startOne(t: ExecutionContext, yaml: string): Promise<Daemon> {
  const dir = await tempDir(t, 'gwk-');
  const file = path.join(dir, 'one.yaml');
  writeFileSync(file, yaml);
  const daemon = spawnCli(t, 'gatewayd', ['--config', file], { env: { RUNDIR: path.join(dir, 'run') } });
  await daemon.log.waitFor((l) => l.msg === 'gatewayd started', WAIT, 'gatewayd started');
  return daemon;
}

test('a worker that keeps dying restarts after a doubling backoff (no spinning crash loop)', async (t) => {
  const c = await startCluster(t, config());
  let pid = c.workerPids[0]!;
  const delays: number[] = [];
  for (let i = 0; i < 3; i++) {
    const mark = c.daemon.log.lines.length;
    process.kill(pid, 'SIGKILL');
    const died = await c.daemon.log.waitFor((l) => l.msg === 'worker died: restarting it' && from(c.daemon, mark)(l), WAIT, 'the death');
    delays.push(died['restartInMs'] as number);
    pid = (await c.daemon.log.waitFor((l) => l.msg === 'worker restarted' && from(c.daemon, mark)(l), WAIT, 'the restart'))['workerPid'] as number;
  }
  t.deepEqual(delays, [100, 200, 400]);
  await probeEcho(await tcpSession(t, c.port));
});

test('a start that fails in the primary (certificate file missing) exits 1 with the file named, before any worker', async (t) => {
  const dir = await tempDir(t, 'gwk-');
  const file = path.join(dir, 'tls.yaml');
  const missing = path.join(dir, 'missing.pem');
  writeFileSync(file, `workers: 2\ngateways:\n  - type: tls\n    listen: 127.0.0.1:0\n    allow: [pong]\n    cert: ${missing}\n    key: ${missing}\n`);
  const run = await runCli(t, 'gatewayd', ['--config', file], { env: { RUNDIR: path.join(dir, 'run') } });
  t.is(run.code, 1);
  t.true(run.stderr.includes(missing), run.stderr);
  t.is(run.daemon.log.filter((l) => l.msg === 'worker started').length, 0);
});

test('a start that fails in a worker (address in use) stops the other workers and exits 1', async (t) => {
  const busy = net.createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => busy.close());
  const port = (busy.address() as net.AddressInfo).port;
  const dir = await tempDir(t, 'gwk-');
  const file = path.join(dir, 'busy.yaml');
  writeFileSync(file, config().replace('127.0.0.1:0', `127.0.0.1:${port}`));
  const run = await runCli(t, 'gatewayd', ['--config', file], { env: { RUNDIR: path.join(dir, 'run') } });
  t.is(run.code, 1);
  t.regex(run.stderr, /EADDRINUSE/);
  // runCli resolved on 'close': stdout was held by no worker any more.
  t.is(run.daemon.log.filter((l) => l.msg === 'gatewayd started').length, 0);
});

test('a unix: listen address with workers: 2: a stale socket file is cleared once by the primary, both workers serve it', async (t) => {
  const dir = await tempDir(t, 'gwk-');
  const socketPath = path.join(dir, 'gw.sock');
  // A socket file left by a dead process: it listened, then was killed (no unlink).
  spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  t.true(lstatSync(socketPath).isSocket());
  const c = await startClusterIn(t, dir, config().replace('127.0.0.1:0', `unix:${socketPath}`));
  const mark = c.daemon.log.lines.length;
  for (let i = 0; i < 6; i++) {
    const client = await RawClient.unix(t, socketPath);
    await client.write(Buffer.from('pong'));
    await client.expect(Buffer.from('ok'));
    await probeEcho(client);
    client.socket.end();
    await client.expectEof();
  }
  const ends = () => c.daemon.log.filter((l) => l.msg === 'connection closed' && from(c.daemon, mark)(l));
  await until(() => ends().length >= 6, 'six connection closed lines', WAIT);
  t.deepEqual([...new Set(ends().map((l) => l['pid']))].sort(), [...c.workerPids].sort());
  c.daemon.kill('SIGTERM');
  t.is((await c.daemon.waitExit(WAIT)).code, 0);
});

test('with workers: 2 the primary\'s /metrics adds up both workers (connections and messages), /readyz follows the workers, and promtool accepts it', async (t) => {
  const cl = await startCluster(t, config('admin: 127.0.0.1:0\n'));
  const admin = await adminPort(cl.daemon);
  const N = 60;
  for (let i = 0; i < N; i++) await oneEcho(cl.port, frame(`m${i}`));
  await until(() => cl.daemon.log.lines.filter((l) => l.msg === 'connection closed').length >= N, 'every teardown logged');
  const servedBy = new Set(cl.daemon.log.lines.filter((l) => l.msg === 'connection closed').map((l) => l['pid']));
  t.is(servedBy.size, 2, 'both workers served some');
  const text = await scrape(admin);
  const listener = `127.0.0.1:${cl.port}`;
  t.is(metricValue(text, 'libipc_connections_total', { transport: 'tcp', listener }), N);
  t.is(metricValue(text, 'libipc_messages_total', { transport: 'tcp', listener, service: 'pong', direction: 'in' }), N);
  t.is(metricValue(text, 'libipc_service_connections_total', { transport: 'tcp', listener, service: 'pong' }), N);
  const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  t.is(check.status, 0, `promtool: ${check.stdout}${check.stderr}`);
  t.is((await fetch(`http://127.0.0.1:${admin}/readyz`)).status, 200);
  // One worker killed: not ready until its replacement serves.
  process.kill(cl.workerPids[0]!, 'SIGKILL');
  await cl.daemon.log.waitFor((l) => l.msg === 'worker restarted', WAIT, 'worker restarted');
  t.is((await fetch(`http://127.0.0.1:${admin}/readyz`)).status, 200);
  // Counters never go down: the dead worker's counts stay in the sum.
  const afterRestart = await scrape(admin);
  t.is(metricValue(afterRestart, 'libipc_connections_total', { transport: 'tcp', listener }), N);
  t.is(metricValue(afterRestart, 'libipc_messages_total', { transport: 'tcp', listener, service: 'pong', direction: 'in' }), N);
  cl.daemon.kill('SIGTERM');
  t.is((await cl.daemon.waitExit(WAIT)).code, 0);
});

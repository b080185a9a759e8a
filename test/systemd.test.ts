/**
 * gatewayd under systemd, without systemd as PID 1: Debian's systemd-socket-activate
 * passes real LISTEN_FDS (it execs gatewayd on the first connection, as a socket unit
 * does), and a NOTIFY_SOCKET of the test's own (a python3 child binding an AF_UNIX
 * SOCK_DGRAM socket, since Node has none) receives the sd_notify datagrams: READY=1,
 * RELOADING=1, READY=1, STOPPING=1 in that order. Also: the systemd-notify fallback
 * (addon forced off), passed sockets matching no configured address (refused at start),
 * and the unit files checked by systemd-analyze.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import dgram from 'node:dgram';
import path from 'node:path';
import { cliPath, REPO_ROOT } from './helpers/paths.js';
import { freePort } from './helpers/ports.js';
import { childEnv, Daemon, killAtTeardown, LoggedProcess, spawnCli, startPongd } from './helpers/daemon.js';
import { tempDir } from './helpers/rundir.js';
import { probeEcho, RawClient, tcpSession } from './helpers/raw-client.js';
import { until } from './helpers/wait.js';
import { ListenFdsError, takeListenFds } from '../gateways/systemd.js';
import { takeNotifySocket } from '../src/sd-notify.js';
import { notifyDatagram } from '../src/fdpass.js';

const WAIT = 15_000;

/** A NOTIFY_SOCKET of our own: each datagram python3 receives, as one JSON string line. */
class NotifySocket extends LoggedProcess {
  readonly address: string;

  constructor(address: string) {
    // An address starting with '@' is in the abstract namespace (as systemd writes it).
    const script = [
      'import json, socket, sys',
      'a = sys.argv[1]',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
      "s.bind('\\0' + a[1:] if a.startswith('@') else a)",
      "print(json.dumps('bound'), flush=True)",
      'while True:',
      "    print(json.dumps(s.recv(65536).decode()), flush=True)",
    ].join('\n');
    super('notify-socket', spawn('python3', ['-u', '-c', script, address], { stdio: ['ignore', 'pipe', 'pipe'] }));
    this.address = address;
  }

  /** Every datagram received so far. */
  get datagrams(): string[] {
    return this.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as string).filter((d) => d !== 'bound');
  }

  async bound(): Promise<void> {
    await until(() => this.stdout.includes('"bound"') || !this.running, 'the notify socket bound', WAIT);
    if (!this.running) throw new Error(`python3 notify socket: ${this.stderr}`);
  }

  /** Waits for the `count`-th datagram whose first line is `state`. */
  async waitFor(state: string, count = 1): Promise<void> {
    await until(() => this.datagrams.filter((d) => d.split('\n').includes(state)).length >= count, `${count} × ${state}`, WAIT);
  }
}

async function notifySocket(t: ExecutionContext, address: string): Promise<NotifySocket> {
  const socket = killAtTeardown(t, new NotifySocket(address));
  await socket.bound();
  return socket;
}

/** A TCP port free right now on 127.0.0.1 (systemd-socket-activate cannot bind port 0). */
/**
 * systemd-socket-activate listening on `listen` (it execs gatewayd on the first
 * connection, with LISTEN_FDS, LISTEN_PID = its own pid, LISTEN_FDNAMES from `names`).
 * It passes no environment but what -E names.
 */
async function socketActivated(t: ExecutionContext, listen: readonly string[], names: readonly string[], env: Record<string, string>, config: string): Promise<Daemon> {
  const args = [
    ...listen.flatMap((l) => ['-l', l]),
    ...(names.length ? [`--fdname=${names.join(':')}`] : []),
    ...Object.entries(env).flatMap(([k, v]) => ['-E', `${k}=${v}`]),
    process.execPath,
    cliPath('gatewayd'),
    '--config',
    config,
  ];
  const daemon = killAtTeardown(t, new Daemon('gatewayd', spawn('systemd-socket-activate', args, { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })));
  await until(() => listen.every((l, i) => daemon.stderr.includes(`as ${3 + i}.`)) || !daemon.running, 'systemd-socket-activate listening', WAIT);
  t.true(daemon.running, daemon.stderr);
  return daemon;
}

test('socket activation: passed sockets matched by name and by address serve; READY, RELOADING, READY, STOPPING in order', async (t) => {
  const dir = await tempDir(t, 'sdn-');
  const rundir = path.join(dir, 'run');
  await startPongd(t, rundir);
  const notify = await notifySocket(t, `@libipc-test-${process.pid}-${path.basename(dir)}`);
  const [port, anyPort, v6Port] = [await freePort(), await freePort(), await freePort()];
  const unixPath = path.join(dir, 'gw.sock');
  const file = path.join(dir, 'gatewayd.yaml');
  // localhost:PORT is matched by its name (the bound 127.0.0.1 would not match it); the
  // others, named after nothing in the file, by the address they are bound to: a path,
  // [::]:PORT (systemd's socket for a bare port, every interface), [::1]:PORT.
  writeFileSync(file, `gateways:\n  - type: tcp\n    listen: [localhost:${port}, unix:${unixPath}, ${anyPort}, "[::1]:${v6Port}"]\n    allow: [pong]\n`);
  const daemon = await socketActivated(
    t,
    [`127.0.0.1:${port}`, unixPath, String(anyPort), `[::1]:${v6Port}`],
    [`localhost_${port}`, 'web', 'any', 'v6'],
    { RUNDIR: rundir, NOTIFY_SOCKET: notify.address },
    file,
  );

  // The first client makes systemd-socket-activate exec gatewayd; it waits in the backlog.
  const first = await RawClient.unix(t, unixPath);
  await first.write(Buffer.from('pong'));
  await first.expect(Buffer.from('ok'), WAIT);
  await probeEcho(first);
  await notify.waitFor('READY=1');
  t.is(daemon.log.lines.filter((l) => l.msg === 'socket passed by systemd').length, 4);
  t.is(daemon.log.lines.filter((l) => l.msg === 'listening' && l['kept'] === true).length, 4, 'all taken over, none bound again');
  const tcp = await tcpSession(t, port);
  await probeEcho(tcp);
  for (const [p, host] of [[anyPort, '127.0.0.1'], [v6Port, '::1']] as const) {
    const other = await tcpSession(t, p, 'pong', host);
    await probeEcho(other);
    other.socket.destroy();
  }

  daemon.kill('SIGHUP');
  await notify.waitFor('READY=1', 2);
  await probeEcho(tcp); // a reload keeps the connection and the passed socket
  const late = await tcpSession(t, port);
  await probeEcho(late);

  // Clients gone first: SIGTERM then stops at once instead of draining them.
  for (const c of [first, tcp, late]) c.socket.destroy();
  daemon.kill('SIGTERM');
  await notify.waitFor('STOPPING=1');
  t.is((await daemon.waitExit(WAIT)).code, 0);
  const states = notify.datagrams.map((d) => d.split('\n')[0]);
  t.deepEqual(states, ['READY=1', 'RELOADING=1', 'READY=1', 'STOPPING=1']);
  const reloading = notify.datagrams[1]!;
  t.regex(reloading, /\nMONOTONIC_USEC=\d+\n/);
  t.regex(notify.datagrams[0]!, /\nSTATUS=serving 1 gateway$/);
});

test('passed sockets that match no configured address are refused at start, naming them', async (t) => {
  const dir = await tempDir(t, 'sdn-');
  const [port, stray] = [await freePort(), await freePort()];
  const file = path.join(dir, 'gatewayd.yaml');
  writeFileSync(file, `gateways:\n  - type: tcp\n    listen: 127.0.0.1:${port}\n    allow: [pong]\n`);
  const daemon = await socketActivated(t, [`127.0.0.1:${port}`, `127.0.0.1:${stray}`], ['tcp', 'stray'], { RUNDIR: path.join(dir, 'run') }, file);
  const client = await RawClient.tcp(t, port);
  const exit = await daemon.waitExit(WAIT);
  t.is(exit.code, 1);
  t.regex(daemon.stderr, new RegExp(`match no listen address of the configuration: fd 4 \\(name stray, bound to 127\\.0\\.0\\.1:${stray}\\)`));
  t.notRegex(daemon.stderr.slice(daemon.stderr.indexOf('gatewayd: cannot start')), /fd 3/, 'the matched one is not named');
  t.truthy(daemon.log.lines.find((l) => l.msg === 'gatewayd: cannot start'));
  // Closed with the process (EOF or reset), never served.
  await until(() => client.ended || client.closed || client.error !== null, 'the waiting client closed', WAIT);
  t.is(client.received, 0);
});

test('a passed descriptor that is not a listening stream socket (a file, a UDP socket) is refused at start', async (t) => {
  const dir = await tempDir(t, 'sdn-');
  const file = path.join(dir, 'gatewayd.yaml');
  const port = await freePort();
  writeFileSync(file, `gateways:\n  - type: tcp\n    listen: 127.0.0.1:${port}\n    allow: [pong]\n`);
  // A file as descriptor 3, with LISTEN_PID set to the shell that execs gatewayd.
  const shell = killAtTeardown(
    t,
    new Daemon(
      'gatewayd',
      spawn('/bin/sh', ['-c', 'exec 3<"$0"; LISTEN_PID=$$ LISTEN_FDS=1 exec "$1" "$2" --config "$0"', file, process.execPath, cliPath('gatewayd')], {
        env: childEnv({ RUNDIR: path.join(dir, 'run') }),
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    ),
  );
  t.is((await shell.waitExit(WAIT)).code, 1);
  t.regex(shell.stderr, /LISTEN_FDS: descriptor 3 is not a socket/);

  // A UDP socket (systemd-socket-activate --datagram execs on the first datagram).
  const udp = await socketActivatedDatagram(t, port, path.join(dir, 'run'), file);
  t.is((await udp.waitExit(WAIT)).code, 1);
  t.regex(udp.stderr, /LISTEN_FDS: descriptor 3 is not a TCP or Unix stream socket/);
});

async function socketActivatedDatagram(t: ExecutionContext, port: number, rundir: string, config: string): Promise<Daemon> {
  const args = ['--datagram', '-l', `127.0.0.1:${port}`, '-E', `RUNDIR=${rundir}`, process.execPath, cliPath('gatewayd'), '--config', config];
  const daemon = killAtTeardown(t, new Daemon('gatewayd', spawn('systemd-socket-activate', args, { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })));
  await until(() => daemon.stderr.includes('as 3.') || !daemon.running, 'systemd-socket-activate listening', WAIT);
  const sender = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => sender.send('x', port, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
  sender.close();
  return daemon;
}

test('without the addon, the states go through systemd-notify with our pid (MAINPID), in order', async (t) => {
  const dir = await tempDir(t, 'sdn-');
  const rundir = path.join(dir, 'run');
  await startPongd(t, rundir);
  const notify = await notifySocket(t, path.join(dir, 'notify.sock'));
  const file = path.join(dir, 'gatewayd.yaml');
  writeFileSync(file, 'gateways:\n  - type: tcp\n    listen: 127.0.0.1:0\n    allow: [pong]\n');
  const daemon = spawnCli(t, 'gatewayd', ['--config', file], { env: { RUNDIR: rundir, NOTIFY_SOCKET: notify.address, LIBIPC_NO_ADDON: '1' } });
  await notify.waitFor('READY=1');
  t.truthy(daemon.log.lines.find((l) => String(l.msg).startsWith('sd_notify: the fdpass addon is not built')));
  const port = daemon.log.lines.find((l) => l.msg === 'listening')!['port'] as number;
  const client = await tcpSession(t, port);
  await probeEcho(client);
  client.socket.destroy();
  daemon.kill('SIGHUP');
  await notify.waitFor('READY=1', 2);
  daemon.kill('SIGTERM');
  t.is((await daemon.waitExit(WAIT)).code, 0);
  await notify.waitFor('STOPPING=1');
  // systemd-notify --pid=<gatewayd> adds MAINPID=<gatewayd>: the state is ours, not the child's.
  const { datagrams } = notify;
  t.deepEqual(
    datagrams.map((d) => d.split('\n').find((l) => /^(READY|RELOADING|STOPPING)=1$/.test(l))),
    ['READY=1', 'RELOADING=1', 'READY=1', 'STOPPING=1'],
  );
  for (const d of datagrams) t.true(d.split('\n').includes(`MAINPID=${daemon.pid}`), d);
});

test('without NOTIFY_SOCKET and LISTEN_FDS nothing is sent and every address is bound as usual', async (t) => {
  const dir = await tempDir(t, 'sdn-');
  const file = path.join(dir, 'gatewayd.yaml');
  writeFileSync(file, 'gateways:\n  - type: tcp\n    listen: 127.0.0.1:0\n    allow: [pong]\n');
  // LISTEN_PID of another process: the descriptors are not ours (sd_listen_fds(3)).
  const daemon = spawnCli(t, 'gatewayd', ['--config', file], { env: { RUNDIR: path.join(dir, 'run'), LISTEN_PID: '1', LISTEN_FDS: '1' } });
  await daemon.log.waitFor((l) => l.msg === 'gatewayd started', WAIT);
  t.falsy(daemon.log.lines.find((l) => l.msg === 'socket passed by systemd'));
  t.falsy(daemon.log.lines.find((l) => l.msg === 'listening' && l['kept'] === true));
  daemon.kill('SIGTERM');
  t.is((await daemon.waitExit(WAIT)).code, 0);
});

test('the unit files pass systemd-analyze verify and its offline security check', async (t) => {
  const dir = await tempDir(t, 'sdu-');
  // verify checks that ExecStart's program exists: point it at the built CLI.
  const service = readFileSync(path.join(REPO_ROOT, 'systemd', 'gatewayd.service'), 'utf8').replaceAll('/usr/local/bin/gatewayd', cliPath('gatewayd'));
  writeFileSync(path.join(dir, 'gatewayd.service'), service);
  copyFileSync(path.join(REPO_ROOT, 'systemd', 'gatewayd.socket'), path.join(dir, 'gatewayd.socket'));
  const verify = spawnSync('systemd-analyze', ['verify', '--man=no', path.join(dir, 'gatewayd.service'), path.join(dir, 'gatewayd.socket')], { encoding: 'utf8', timeout: WAIT });
  t.is(verify.status, 0, verify.stderr);
  t.is(verify.stderr.trim(), '', 'no warning either (verify exits 0 on ignored lines)');
  // The check can fail: a misspelt value is reported.
  writeFileSync(path.join(dir, 'broken.service'), service.replace('NoNewPrivileges=yes', 'NoNewPrivileges=perhaps'));
  const broken = spawnSync('systemd-analyze', ['verify', '--man=no', path.join(dir, 'broken.service')], { encoding: 'utf8', timeout: WAIT });
  t.regex(broken.stderr, /NoNewPrivileges|Failed to parse/);
  // The hardening: systemd's own exposure score (0 best, 10 worst), below 3.
  const security = spawnSync('systemd-analyze', ['security', '--offline=yes', '--threshold=30', '--no-pager', path.join(dir, 'gatewayd.service')], { encoding: 'utf8', timeout: WAIT });
  t.is(security.status, 0, security.stdout + security.stderr);
  const level = /Overall exposure level for gatewayd\.service: (\d+\.\d)/.exec(security.stdout);
  t.truthy(level, security.stdout);
  t.true(Number(level![1]) < 3, level![0]);
  const socket = readFileSync(path.join(REPO_ROOT, 'systemd', 'gatewayd.socket'), 'utf8');
  t.regex(socket, /^Service=gatewayd\.service$/m);
  t.regex(service, /^Type=notify$/m);
  t.regex(service, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
});

test('LISTEN_* and NOTIFY_SOCKET leave the environment once read (processes we start must not take them as theirs)', (t) => {
  const env: NodeJS.ProcessEnv = { LISTEN_PID: '1', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b', KEEP: 'x' };
  t.is(takeListenFds(() => undefined, env, 12345).sockets.length, 0, 'LISTEN_PID of another process: not ours');
  t.deepEqual(env, { KEEP: 'x' });
  const notifyEnv: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '@sd', KEEP: 'y' };
  t.is(takeNotifySocket(notifyEnv), '@sd');
  t.deepEqual(notifyEnv, { KEEP: 'y' });
});

test('a malformed LISTEN_FDS for our pid is refused with what was expected', (t) => {
  const env: NodeJS.ProcessEnv = { LISTEN_PID: String(process.pid), LISTEN_FDS: 'three' };
  const err = t.throws(() => takeListenFds(() => undefined, env), { instanceOf: ListenFdsError });
  t.regex(err!.message, /LISTEN_FDS: expected a count of descriptors, got "three"/);
  t.deepEqual(env, {});
});

test('the addon sends one datagram to a path or an abstract name; a missing socket is an error with its code', async (t) => {
  const dir = await tempDir(t, 'sdn-');
  for (const address of [path.join(dir, 'n.sock'), `@libipc-test-${process.pid}-direct`]) {
    const receiver = await notifySocket(t, address);
    t.true(notifyDatagram(address, 'READY=1\nSTATUS=a b\nX=é'));
    await receiver.waitFor('READY=1');
    t.deepEqual(receiver.datagrams, ['READY=1\nSTATUS=a b\nX=é']);
  }
  const missing = t.throws(() => notifyDatagram(path.join(dir, 'absent.sock'), 'READY=1'));
  t.is((missing as NodeJS.ErrnoException).code, 'ENOENT');
  const bad = t.throws(() => notifyDatagram('relative', 'READY=1'));
  t.is((bad as NodeJS.ErrnoException).code, 'EINVAL');
});

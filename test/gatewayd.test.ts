/**
 * gatewayd: the sample configuration (gatewayd.example.yaml) served end to end, the
 * checks of a configuration file (--check), and live reload on SIGHUP: listening sockets
 * kept (same inode), open connections untouched, a bad file refused while the old one serves.
 */
import test, { type ExecutionContext } from 'ava';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './helpers/paths.js';
import { runCli, spawnCli, startPongd, type Daemon } from './helpers/daemon.js';
import { tempDir } from './helpers/rundir.js';
import { probeEcho, RawClient, tcpSession } from './helpers/raw-client.js';
import { openWs } from './helpers/ws-client.js';
import { codeOf } from './helpers/log-sink.js';
import { listeningInode } from './helpers/proc-net.js';

const WAIT = 15_000;

async function setup(t: ExecutionContext, yaml: string): Promise<{ rundir: string; file: string; daemon: Daemon }> {
  const dir = await tempDir(t, 'gwd-');
  const rundir = path.join(dir, 'run');
  await startPongd(t, rundir);
  const file = path.join(dir, 'gatewayd.yaml');
  writeFileSync(file, yaml);
  const daemon = spawnCli(t, 'gatewayd', ['--config', file], { env: { RUNDIR: rundir } });
  await daemon.log.waitFor((l) => l.msg === 'gatewayd started', WAIT, 'gatewayd started');
  return { rundir, file, daemon };
}

function portOf(daemon: Daemon, transport: string, host = '127.0.0.1', from = 0): number {
  const line = daemon.log.lines.slice(from).find((l) => l.msg === 'listening' && l['transport'] === transport && String(l['address']).startsWith(host));
  if (line === undefined) throw new Error(`no ${transport} listener on ${host}`);
  return line['port'] as number;
}


const refused = test.macro({
  async exec(t, yaml: string | null, message: RegExp) {
    const dir = await tempDir(t, 'gwd-');
    const file = path.join(dir, 'bad.yaml');
    if (yaml !== null) writeFileSync(file, yaml);
    const run = await runCli(t, 'gatewayd', ['--check', '--config', file]);
    t.is(run.code, 1);
    t.true(run.stderr.startsWith(file), run.stderr);
    t.regex(run.stderr, message);
  },
  title: (title = '') => `--check refuses ${title}, naming the file and the key`,
});

const ok = 'gateways:\n  - type: tcp\n    listen: 127.0.0.1:0\n    allow: [pong]\n';
test('a missing file', refused, null, /cannot read the configuration \(ENOENT\)/);
test('a YAML syntax error with its line and column', refused, 'gateways:\n  - type: tcp\n    listen: [127.0.0.1:1\n', /YAML syntax error: line \d+, column \d+/);
test('an unknown key', refused, ok.replace('allow', 'alow'), /gateways\[0\]\.alow: expected a flag of tcpd/);
test('an unknown top-level key', refused, `listen: 1\n${ok}`, /listen: expected one of rundir/);
test('a wrong type', refused, `${ok}    max-connections: many\n`, /gateways\[0\]\.max-connections: expected an integer/);
test('a port out of range', refused, ok.replace('127.0.0.1:0', '127.0.0.1:70000'), /gateways\[0\]\.listen: expected PORT/);
test('a duplicate listen address', refused, `${ok.replace(':0', ':8998')}  - type: ws\n    listen: 127.0.0.1:8998\n    allow: [pong]\n`, /gateways\[1\]\.listen: expected an address no other gateway listens on \(gateways\[0\] does\)/);
test('both service and allow', refused, `${ok}    service: pong\n`, /gateways\[0\]\.allow: expected one of service/);
test('a per-process key inside a gateway', refused, `${ok}    drain-timeout: 5\n`, /gateways\[0\]\.drain-timeout: expected a key of the whole file/);
test('a TLS gateway without its files', refused, 'gateways:\n  - type: tls\n    listen: 0\n    allow: [pong]\n', /gateways\[0\]\.cert: expected cert and key files/);

test('--check accepts the sample configuration', async (t) => {
  const run = await runCli(t, 'gatewayd', ['--check', '--config', path.join(REPO_ROOT, 'gatewayd.example.yaml')]);
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /valid \(3 gateways, 1 outbound services, ipcd on\)/);
});

test('SIGHUP reloads: the listening socket is kept, an open connection keeps echoing, an added gateway serves, a bad file is refused', async (t) => {
  const { file, daemon } = await setup(t, ok);
  const port = portOf(daemon, 'tcp');
  const inodeBefore = listeningInode(port);
  t.truthy(inodeBefore);
  const open = await tcpSession(t, port);
  await probeEcho(open);
  // A name outside the allow-list is refused before the reload...
  const before = await RawClient.tcp(t, port);
  await before.write(Buffer.from('other'));
  await before.expectEof();

  // ...the reload widens the allow-list and adds a ws gateway on another address.
  const mark = daemon.log.lines.length;
  writeFileSync(file, `${ok.replace('allow: [pong]', "allow: '*'")}  - type: ws\n    listen: 127.0.0.2:0\n    allow: [pong]\n`);
  daemon.kill('SIGHUP');
  const reloaded = await daemon.log.waitFor((l) => l.msg === 'reloaded' && daemon.log.lines.indexOf(l) >= mark, WAIT, 'reloaded');
  t.deepEqual(reloaded['kept'], ['127.0.0.1:0']);
  t.deepEqual(reloaded['added'], ['127.0.0.2:0']);
  t.is(listeningInode(port), inodeBefore, 'the same listening socket (no close and reopen)');
  await probeEcho(open); // the connection made before the reload is untouched
  const after = await RawClient.tcp(t, port);
  await after.write(Buffer.from('other'));
  await after.expectEof();
  const line = await daemon.log.waitFor((l) => l.msg === 'connection refused' && l['peer'] === after.peer, WAIT, 'the refusal of other');
  t.is(codeOf(line), 'IPC_ERR_SERVICE_UNAVAILABLE', 'now allowed: refused only because nothing serves it');
  const ws = await openWs(t, `ws://127.0.0.2:${portOf(daemon, 'ws', '127.0.0.2', mark)}/pong`);
  ws.ws.send('x');
  t.is((await ws.next()).data.toString(), 'x');
  ws.ws.terminate();

  // A broken file is refused; the configuration in use keeps serving.
  const mark2 = daemon.log.lines.length;
  writeFileSync(file, 'gateways: [\n');
  daemon.kill('SIGHUP');
  const refusal = await daemon.log.waitFor((l) => l.msg === 'reload refused: keeping the configuration in use' && daemon.log.lines.indexOf(l) >= mark2, WAIT, 'reload refused');
  t.regex(String(refusal['reason']), /YAML syntax error/);
  await probeEcho(open);
  await probeEcho(await tcpSession(t, port));
  t.is(listeningInode(port), inodeBefore);
});

/**
 * gatewayd reloads beyond the single SIGHUP of test/gatewayd.test.ts: --watch-config
 * (a file replaced by rename, as editors do, and one written in place; a broken one
 * refused while the old configuration serves), and a SIGHUP storm (10 in a second)
 * with a client connected: the reloads run one after another, the connection and the
 * daemon survive, and the final file is what serves.
 */
import test, { type ExecutionContext } from 'ava';
import { renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawnCli, startPongd, type Daemon } from './helpers/daemon.js';
import { tempDir } from './helpers/rundir.js';
import { pause, probeEcho, RawClient, tcpSession } from './helpers/raw-client.js';
import { openWs } from './helpers/ws-client.js';
import { codeOf, type LogLine } from './helpers/log-sink.js';

const WAIT = 15_000;
const ok = 'gateways:\n  - type: tcp\n    listen: 127.0.0.1:0\n    allow: [pong]\n';
const withWs = `${ok}  - type: ws\n    listen: 127.0.0.2:0\n    allow: [pong]\n`;

async function setup(t: ExecutionContext, yaml: string, args: readonly string[] = []): Promise<{ file: string; daemon: Daemon; port: number }> {
  const dir = await tempDir(t, 'gwr-');
  const rundir = path.join(dir, 'run');
  await startPongd(t, rundir);
  const file = path.join(dir, 'gatewayd.yaml');
  writeFileSync(file, yaml);
  const daemon = spawnCli(t, 'gatewayd', ['--config', file, ...args], { env: { RUNDIR: rundir } });
  await daemon.log.waitFor((l) => l.msg === 'gatewayd started', WAIT, 'gatewayd started');
  const port = daemon.log.lines.find((l) => l.msg === 'listening' && l['transport'] === 'tcp')!['port'] as number;
  return { file, daemon, port };
}

/** The lines logged from index `from` on with message `msg`. */
function linesSince(daemon: Daemon, from: number, msg: string): LogLine[] {
  return daemon.log.lines.slice(from).filter((l) => l.msg === msg);
}

/** Writes `file` the way editors do: a new file renamed over the old one. */
function replaceByRename(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

test('--watch-config reloads a file replaced by rename and one written in place; a broken file is refused and the old one serves', async (t) => {
  const { file, daemon, port } = await setup(t, ok, ['--watch-config']);
  await daemon.log.waitFor((l) => l.msg === 'watching the configuration file', WAIT);
  const open = await tcpSession(t, port);
  await probeEcho(open);

  // Replaced by rename: a ws gateway is added.
  let mark = daemon.log.lines.length;
  replaceByRename(file, withWs);
  const added = await daemon.log.waitFor((l) => l.msg === 'reloaded' && daemon.log.lines.indexOf(l) >= mark, WAIT, 'reloaded after the rename');
  t.deepEqual(added['added'], ['127.0.0.2:0']);
  const wsPort = linesSince(daemon, mark, 'listening').find((l) => l['transport'] === 'ws')!['port'] as number;
  const ws = await openWs(t, `ws://127.0.0.2:${wsPort}/pong`);
  ws.ws.send('x');
  t.is((await ws.next()).data.toString(), 'x');
  ws.ws.terminate();
  await probeEcho(open);

  // Written in place, broken: refused, the configuration in use keeps serving.
  mark = daemon.log.lines.length;
  writeFileSync(file, 'gateways: [\n');
  const refused = await daemon.log.waitFor((l) => l.msg === 'reload refused: keeping the configuration in use' && daemon.log.lines.indexOf(l) >= mark, WAIT, 'reload refused');
  t.regex(String(refused['reason']), /YAML syntax error: line \d+, column \d+/);
  await probeEcho(open);
  const during = await tcpSession(t, port);
  await probeEcho(during);
  during.socket.destroy();

  // Written in place, fixed (the ws gateway removed): reloaded. One save, one reload:
  // the burst of events a write makes is debounced.
  mark = daemon.log.lines.length;
  writeFileSync(file, ok);
  const removed = await daemon.log.waitFor((l) => l.msg === 'reloaded' && daemon.log.lines.indexOf(l) >= mark, WAIT, 'reloaded after the fix');
  t.deepEqual(removed['removed'], ['127.0.0.2:0']);
  await probeEcho(open);
  t.is(linesSince(daemon, mark, 'configuration file changed: reloading').length, 1);
  t.true(daemon.running);

  // SIGHUP still works beside the watch.
  mark = daemon.log.lines.length;
  daemon.kill('SIGHUP');
  await daemon.log.waitFor((l) => l.msg === 'reloaded' && daemon.log.lines.indexOf(l) >= mark, WAIT, 'reloaded by SIGHUP');
  open.socket.destroy();
  daemon.kill('SIGTERM');
  t.is((await daemon.waitExit(WAIT)).code, 0);
});

test('a SIGHUP storm (10 in a second) with a client connected: reloads one after another, the client and the daemon survive, the final file serves', async (t) => {
  const { file, daemon, port } = await setup(t, ok);
  const open = await tcpSession(t, port);
  await probeEcho(open);
  const mark = daemon.log.lines.length;
  for (let i = 0; i < 10; i++) {
    // Halfway through, the file changes: the reloads after it add the ws gateway.
    if (i === 5) writeFileSync(file, withWs);
    daemon.kill('SIGHUP');
    await pause(50);
  }
  await probeEcho(open); // during the reloads too
  // Node may merge two signals that arrive before it runs; every SIGHUP it saw reloads once.
  const asked = () => linesSince(daemon, mark, 'SIGHUP: reloading the configuration').length;
  await daemon.log.waitFor(() => asked() >= 2 && linesSince(daemon, mark, 'reloaded').length === asked(), WAIT, 'every SIGHUP reloaded');
  t.true(asked() >= 2 && asked() <= 10, `${asked()} SIGHUPs seen`);
  t.log(`${asked()} of 10 SIGHUPs seen, each reloaded once`);
  t.true(daemon.running);

  // Serialised: each reload logs its kept socket, then `reloaded`, before the next starts.
  const sequence = daemon.log.lines
    .slice(mark)
    .filter((l) => l.msg === 'reloaded' || (l.msg === 'listening' && l['kept'] === true && l['transport'] === 'tcp'))
    .map((l) => (l.msg === 'reloaded' ? 'R' : 'k'))
    .join('');
  t.is(sequence, 'kR'.repeat(asked()), 'one reload at a time');
  t.falsy(linesSince(daemon, mark, 'reload: a gateway could not start')[0]);

  await probeEcho(open);
  const after = await tcpSession(t, port);
  await probeEcho(after);
  after.socket.destroy();
  // The final file serves: the ws gateway it added answers (bound once, kept after).
  const wsLines = linesSince(daemon, mark, 'listening').filter((l) => l['transport'] === 'ws');
  t.is(wsLines.filter((l) => l['kept'] !== true).length, 1, 'the added gateway bound once, then kept');
  const wsPort = wsLines.find((l) => typeof l['port'] === 'number')!['port'] as number;
  const ws = await openWs(t, `ws://127.0.0.2:${wsPort}/pong`);
  ws.ws.send('y');
  t.is((await ws.next()).data.toString(), 'y');
  ws.ws.terminate();
  const refusedNow = await RawClient.tcp(t, port);
  await refusedNow.write(Buffer.from('other'));
  await refusedNow.expectEof();
  const line = await daemon.log.waitFor((l) => l.msg === 'connection refused' && l['peer'] === refusedNow.peer, WAIT, 'the refusal of other');
  t.is(codeOf(line), 'IPC_ERR_SERVICE_NOT_ALLOWED', 'the allow-list of the final file');
  open.socket.destroy();
  daemon.kill('SIGTERM');
  t.is((await daemon.waitExit(WAIT)).code, 0);
});

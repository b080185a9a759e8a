/**
 * A real HAProxy (Debian's haproxy) in front of two spawned tcpd with --accept-proxy,
 * running examples/haproxy.cfg as README shows it (`send-proxy-v2` on each server):
 * clients connecting from 127.0.0.2 and 127.0.0.3 are echoed by pongd through either
 * gateway, and each gateway logs them with those addresses (HAProxy's as `proxiedBy`).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { LoggedProcess, killAtTeardown, startPongd, startTcpd } from './helpers/daemon.js';
import { REPO_ROOT } from './helpers/paths.js';
import { freePort } from './helpers/ports.js';
import { PROBE } from './helpers/raw-client.js';
import { tempRundir } from './helpers/rundir.js';
import type { LogLine } from './helpers/log-sink.js';
import { adminPort } from './helpers/admin.js';
import { until } from './helpers/wait.js';

const HAPROXY = ['/usr/sbin/haproxy', '/usr/bin/haproxy'].find((p) => existsSync(p));
const CONFIG = path.join(REPO_ROOT, 'examples', 'haproxy.cfg');
const WAIT = 10_000;

// In CI a missing HAProxy is a failure (scripts/install-system-deps.sh installs it), not a skip.
const haproxyTest = HAPROXY !== undefined || process.env['CI'] ? test : test.skip;
if (HAPROXY === undefined) console.warn('haproxy.test.ts: haproxy is missing, skipped (apt-get install haproxy)');

/** Resolves once something accepts on `port` (bounded tries). */
async function untilListening(port: number, proc: LoggedProcess): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (!proc.running) throw new Error(`haproxy exited: ${proc.stderr}`);
    const ok = await new Promise<boolean>((resolve) => {
      const probe = net.connect({ host: '127.0.0.1', port });
      probe.once('connect', () => {
        probe.destroy();
        resolve(true);
      });
      probe.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`haproxy not listening on ${port}; stderr: ${proc.stderr}`);
}

/** Connects from `localAddress`, sends the probe frame, expects its echo, closes; resolves the client's port. */
function echoFrom(t: ExecutionContext, port: number, localAddress: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    t.teardown(() => socket.destroy());
    const want = Buffer.from(PROBE, 'hex');
    let got: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no echo from ${localAddress} within ${WAIT} ms (got ${got.toString('hex')})`));
    }, WAIT);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('connect', () => socket.write(want));
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length < want.length) return;
      clearTimeout(timer);
      const localPort = socket.localPort!;
      socket.end();
      if (got.equals(want)) resolve(localPort);
      else reject(new Error(`echo ${got.toString('hex')}`));
    });
  });
}

/**
 * Two tcpd (--accept-proxy, --admin), each with its own $RUNDIR and pongd, behind HAProxy
 * running examples/haproxy.cfg (send-proxy-v2, health checks on /readyz).
 */
async function balanced(t: ExecutionContext) {
  const instances = [];
  for (let i = 0; i < 2; i++) {
    const rundir = await tempRundir(t);
    const pongd = await startPongd(t, rundir);
    const gw = await startTcpd(t, rundir, ['--listen', '127.0.0.1:0', '--service', 'pong', '--accept-proxy', '--no-outbound', '--admin', '127.0.0.1:0']);
    instances.push({ rundir, pongd, ...gw, admin: await adminPort(gw.daemon) });
  }
  const lbPort = await freePort();
  const haproxy = killAtTeardown(
    t,
    new LoggedProcess(
      'haproxy',
      spawn(HAPROXY ?? 'haproxy', ['-db', '-f', CONFIG], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          ...process.env,
          LB_BIND: `127.0.0.1:${lbPort}`,
          GW1_ADDR: `127.0.0.1:${instances[0]!.port}`,
          GW1_ADMIN: String(instances[0]!.admin),
          GW2_ADDR: `127.0.0.1:${instances[1]!.port}`,
          GW2_ADMIN: String(instances[1]!.admin),
        },
      }),
    ),
  );
  await untilListening(lbPort, haproxy);
  return { gateways: instances, lbPort, haproxy };
}

haproxyTest('HAProxy with send-proxy-v2: clients from 127.0.0.2 and 127.0.0.3 appear with their addresses in both gateways\' logs', async (t) => {
  const { gateways, lbPort } = await balanced(t);
  // The probe connection above reached a gateway too (HAProxy connects on accept): it
  // closed without a byte, so that gateway logs a refusal, not a client.

  const expected: string[] = [];
  for (const address of ['127.0.0.2', '127.0.0.3', '127.0.0.2', '127.0.0.3']) {
    expected.push(`${address}:${await echoFrom(t, lbPort, address)}`);
  }
  const closed = (line: LogLine) => line.msg === 'connection closed' && expected.includes(String(line['peer']));
  const seen = new Map<string, LogLine>();
  const deadline = performance.now() + WAIT;
  while (seen.size < expected.length && performance.now() < deadline) {
    for (const gw of gateways) for (const line of gw.daemon.log.filter(closed)) seen.set(String(line['peer']), line);
    await new Promise((r) => setTimeout(r, 50));
  }
  t.deepEqual([...seen.keys()].sort(), [...expected].sort(), 'every client logged with its own address');
  for (const line of seen.values()) {
    t.regex(String(line['proxiedBy']), /^127\.0\.0\.1:\d+$/, 'HAProxy is the TCP peer');
    t.is(line['messagesIn'], 1);
  }
  for (const [i, gw] of gateways.entries()) {
    t.true(gw.daemon.log.filter(closed).length >= 1, `gateway ${i + 1} served clients (round robin)`);
  }
});

haproxyTest('HAProxy health checks on /readyz: the gateway whose service stopped is marked down, clients keep being served by the other, and it comes back with its service', async (t) => {
  const { gateways, lbPort, haproxy } = await balanced(t);
  const [gw1, gw2] = gateways as [(typeof gateways)[0], (typeof gateways)[0]];
  // Both up: round robin reaches both.
  for (const address of ['127.0.0.2', '127.0.0.3', '127.0.0.2', '127.0.0.3']) await echoFrom(t, lbPort, address);
  gw1.pongd.daemon.kill('SIGTERM');
  await gw1.pongd.daemon.waitExit(WAIT);
  // /readyz follows within its probe cache period (1 s); HAProxy's checks (every 500 ms,
  // down after 2 failures) then take gw1 out.
  let status = 0;
  for (let i = 0; i < 50 && status !== 503; i++) {
    status = (await fetch(`http://127.0.0.1:${gw1.admin}/readyz`)).status;
    if (status !== 503) await new Promise((r) => setTimeout(r, 100));
  }
  t.is(status, 503);
  await until(() => /gw1 is DOWN/.test(haproxy.stderr), 'HAProxy marks gw1 down', WAIT);
  const servedBefore = gw2.daemon.log.filter((l) => l.msg === 'connection closed').length;
  const refusedBefore = gw1.daemon.log.filter((l) => l.msg === 'connection refused' && l['code'] === 'IPC_ERR_SERVICE_UNAVAILABLE').length;
  // Every client is served, by gw2 alone.
  const peers = [];
  for (let i = 0; i < 6; i++) {
    const address = i % 2 === 0 ? '127.0.0.2' : '127.0.0.3';
    peers.push(`${address}:${await echoFrom(t, lbPort, address)}`);
  }
  await until(() => gw2.daemon.log.filter((l) => l.msg === 'connection closed').length >= servedBefore + 6, 'gw2 logged the 6 clients', WAIT);
  const servedBy2 = gw2.daemon.log.filter((l) => l.msg === 'connection closed').slice(servedBefore).map((l) => String(l['peer']));
  t.deepEqual(servedBy2.sort(), peers.sort());
  t.is(gw1.daemon.log.filter((l) => l.msg === 'connection refused' && l['code'] === 'IPC_ERR_SERVICE_UNAVAILABLE').length, refusedBefore, 'no client sent to gw1 while down');

  // The service back: /readyz 200, HAProxy sends clients to gw1 again.
  await startPongd(t, gw1.rundir);
  await until(() => /gw1 is UP/.test(haproxy.stderr), 'HAProxy marks gw1 up', WAIT);
  const gw1Before = gw1.daemon.log.filter((l) => l.msg === 'connection closed').length;
  for (let i = 0; i < 4; i++) await echoFrom(t, lbPort, '127.0.0.2');
  await until(() => gw1.daemon.log.filter((l) => l.msg === 'connection closed').length > gw1Before, 'gw1 serves again', WAIT);
  t.pass();
});

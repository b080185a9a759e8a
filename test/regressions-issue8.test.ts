/**
 * Regression tests for the defects issue 8's hostile-client review found in the byte-
 * stream gateways, ipcd and connectIpc. Each failed on the code before the lifecycle
 * redesign (but the guards noted as such) and passes since.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { connectIpc } from '../src/client.js';
import { ErrorCode } from '../src/errors.js';
import { GatewayCore } from '../gateways/gateway.js';
import { PendingConnection } from '../gateways/lifecycle.js';
import { normalizeGatewayOptions } from '../gateways/options.js';
import { IpcError } from '../src/errors.js';
import { runCli, spawnCli, startPongd, START_TIMEOUT, type Daemon } from './helpers/daemon.js';
import { HOSTILE_NODE_ARGS, openFds } from './helpers/hostile.js';
import { bounded, endLines, named, open, verifiedEcho, type Transport } from './helpers/hostile-byte.js';
import { captureLogger } from './helpers/log-sink.js';
import { RawClient, frame, pause } from './helpers/raw-client.js';
import { tempDir } from './helpers/rundir.js';
import { startFrameService } from './helpers/services.js';
import { makeMaterial, type Material } from './helpers/tls-certs.js';
import { limiter } from './helpers/limit.js';
import { until } from './helpers/wait.js';

/** Each test spawns two or three node processes: this many tests at once. */
const slot = limiter(3);
function rtest(title: string, body: (t: ExecutionContext) => Promise<void>): void {
  test(title, (t) => slot(() => body(t)));
}

type Gw = 'tcpd' | 'tlsd';

interface World {
  rundir: string;
  daemon: Daemon;
  transport: Transport;
  material?: Material;
}

/** pongd and `gw` (tlsd with a test certificate) with `args` and `--no-outbound`. */
async function world(t: ExecutionContext, gw: Gw, args: readonly string[]): Promise<World> {
  const dir = await tempDir(t, 'reg8-');
  const rundir = path.join(dir, 'run');
  await startPongd(t, rundir);
  const material = gw === 'tlsd' ? makeMaterial(dir) : undefined;
  const daemon = spawnCli(
    t,
    gw,
    ['--listen', '127.0.0.1:0', '--no-outbound', ...(material?.args ?? []), ...args],
    { nodeArgs: HOSTILE_NODE_ARGS, env: { RUNDIR: rundir } },
  );
  const line = await daemon.listening((l) => typeof l['port'] === 'number', START_TIMEOUT);
  const transport: Transport = { port: line['port'] as number, ...(material ? { tls: { ca: material.ca.cert } } : {}) };
  return { rundir, daemon, transport, ...(material ? { material } : {}) };
}

/**
 * Connects and closes at once: for TCP as soon as connected, for TLS as soon as the
 * handshake is done (tlsd connects the service only then). Either way before the gateway's
 * service connect completes.
 */
async function connectAndClose(w: World, cycles: number): Promise<void> {
  await bounded(cycles, 20, async (i) => {
    await new Promise<void>((resolve) => {
      const raw = net.connect({ host: '127.0.0.1', port: w.transport.port });
      raw.on('error', () => undefined);
      const timer = setTimeout(() => raw.destroy(), 10_000);
      raw.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (w.transport.tls === undefined) {
        raw.once('connect', () => raw.destroy());
        return;
      }
      const socket = tls.connect({ ...w.transport.tls, socket: raw });
      socket.on('error', () => undefined);
      // Alternately a FIN and a reset right after the handshake.
      socket.once('secureConnect', () => {
        if (i % 2 === 0) raw.resetAndDestroy();
        else {
          socket.destroy();
          raw.destroy();
        }
      });
    });
  });
}

for (const gw of ['tcpd', 'tlsd'] as const) {
  // Failed on tcpd before the redesign (tlsd did not show it: a guard there).
  rtest(`defect 1: ${gw} with a fixed target leaks no descriptor for clients that close before the service connect completes`, async (t) => {
    const w = await world(t, gw, ['--service', 'pong']);
    await verifiedEcho(t, w.daemon, w.transport, null);
    const baseline = openFds(w.daemon.pid);
    await connectAndClose(w, 300);
    await until(() => openFds(w.daemon.pid) === baseline, 'descriptors back to the baseline', 10_000).catch(() => undefined);
    t.is(openFds(w.daemon.pid), baseline, `${gw}: open descriptors after 300 connect-then-close cycles`);
  });

  rtest(`defect 1: ${gw} with a fixed target and --max-connections 50 still serves a client after 60 clients closed before the service connect`, async (t) => {
    const w = await world(t, gw, ['--service', 'pong', '--max-connections', '50']);
    await connectAndClose(w, 60);
    // Every one of the 60 has ended (refused mid-handshake or switched and closed) before
    // the check: with the native data plane a switch's end arrives from its thread.
    const ended = (l: { msg?: unknown }) => l.msg === 'connection refused' || l.msg === 'connection closed';
    await w.daemon.log.waitForCount(ended, 60, 10_000, 'the 60 clients ended');
    // During the burst (20 at a time) a loaded daemon may accept several before it reads
    // their closes, and refuse a few at the limit: that is the limit working. A leak shows
    // after the burst: every slot must be free again, so a new client is served.
    const burstRefusals = w.daemon.log.filter((l) => l.msg === 'connection refused' && l['code'] === ErrorCode.TOO_MANY_CONNECTIONS).length;
    t.log(`refused at the limit during the burst: ${burstRefusals}`);
    await verifiedEcho(t, w.daemon, w.transport, null);
    const after = w.daemon.log.filter((l) => l.msg === 'connection refused' && l['code'] === ErrorCode.TOO_MANY_CONNECTIONS).length;
    t.is(after, burstRefusals, 'the client after the burst is not refused for the connection limit');
  });

    rtest(`defect 2: ${gw} exits within its drain timeout after SIGTERM although a client stays connected`, async (t) => {
    const w = await world(t, gw, ['--allow', '*', '--drain-timeout', '1000', '--handshake-timeout', '60000']);
    const conn = await open(t, w.transport);
    await pause(100);
    w.daemon.kill('SIGTERM');
    await w.daemon.log.waitFor((l) => l.msg === 'stopping', 10_000, 'stopping line');
    const stopped = Date.now();
    // Named after the SIGTERM: it may be served; it must not hold the process.
    await conn.write(Buffer.from('pong'));
    const exit = await w.daemon.waitExit(8000).catch((err: Error) => err);
    t.false(exit instanceof Error, `${gw} exited within 8 s of SIGTERM (drain timeout 1 s): ${exit instanceof Error ? exit.message.slice(0, 200) : ''}`);
    t.log(`exited ${Date.now() - stopped} ms after SIGTERM`);
  });

    rtest(`defect 4: ${gw} serves a client whose FIN comes right after a valid name (same tick)`, async (t) => {
    const w = await world(t, gw, ['--allow', '*']);
    const conn = await open(t, w.transport);
    void conn.write(Buffer.from('pong'));
    conn.endWrite();
    await conn.expect(Buffer.from('ok'));
    await conn.expectEnd();
    t.pass();
  });

  // Passes today (the frame's bytes share the read with the name): kept as a guard.
  rtest(`defect 4: ${gw} serves 'pong' + a frame + FIN in one write: ok, the echo, a clean end`, async (t) => {
    const w = await world(t, gw, ['--allow', '*']);
    const conn = await open(t, w.transport);
    void conn.write(Buffer.concat([Buffer.from('pong'), frame('ping')]));
    conn.endWrite();
    await conn.expect(Buffer.concat([Buffer.from('ok'), frame('ping')]));
    await conn.expectEnd();
    t.pass();
  });
}

rtest("defect 9: tcpd's refusal at --max-connections carries a code", async (t) => {
  const w = await world(t, 'tcpd', ['--allow', '*', '--max-connections', '1']);
  const holder = await open(t, w.transport); // silent: holds the only slot
  const second = await open(t, w.transport);
  await second.expectEnd();
  const { byPeer } = await endLines(w.daemon, [second.peer]);
  t.is(byPeer.get(second.peer)?.[0]?.['code'], ErrorCode.TOO_MANY_CONNECTIONS);
  holder.destroy();
});

test("defect 9: a gateway's admission refusal while closing carries a code", async (t) => {
  // In process: over TCP the listener is closed with close(), so the race that reaches
  // admit() while closing cannot be aimed at from outside.
  const { logger, sink } = captureLogger();
  const core = new GatewayCore(normalizeGatewayOptions('tcp', { allow: '*', logger, drainTimeout: 60_000 }));
  const draining = core.admit('127.0.0.1:1'); // a connection still draining
  t.true(draining instanceof PendingConnection);
  void core.close();
  const refused = core.admit('127.0.0.1:2');
  t.true(refused instanceof IpcError, 'no client admitted while closing');
  (draining as PendingConnection).handOver();
  const line = sink.lines.find((l) => l.msg === 'connection refused');
  t.truthy(line, 'the refusal is logged');
  t.is(typeof line?.['code'], 'string', `a code on ${JSON.stringify(line)}`);
});

rtest("defect 9: ipcd's refusal at --max-lookups carries a code", async (t) => {
  const dir = await tempDir(t, 'reg8-');
  const rundir = path.join(dir, 'run');
  const ipcd = spawnCli(t, 'ipcd', ['--max-lookups', '1', '--lookup-timeout', '20000'], { env: { RUNDIR: rundir } });
  const line = await ipcd.listening(() => true, START_TIMEOUT);
  const stuck = await RawClient.unix(t, String(line['path'])); // never sends its lookup
  await pause(100);
  const second = await RawClient.unix(t, String(line['path']));
  // Refused at accept: ipcd may close before the lookup is written (EPIPE), which is fine.
  await second.write(frame('pong;pong unix://pong')).catch(() => undefined);
  await second.expectEof();
  const refusal = await ipcd.log.waitFor((l) => l.msg === 'lookup refused', 10_000, 'lookup refused');
  t.is(typeof refusal['code'], 'string', `a code on ${JSON.stringify(refusal)}`);
  stuck.destroy();
});

rtest('defect 10a: connectIpc bounds the wait for a lookup slot by lookupTimeout too', async (t) => {
  const dir = await tempDir(t, 'reg8-');
  const rundir = path.join(dir, 'run');
  // A fake ipcd that accepts and never answers.
  await startFrameService(t, rundir, 'ipc', () => null);
  const started = Date.now();
  const settled: number[] = [];
  const results = await Promise.allSettled(
    Array.from({ length: 6 }, () =>
      connectIpc('pong', { rundir, network: 'pong unix://pong', lookupTimeout: 1500 }).finally(() => settled.push(Date.now() - started)),
    ),
  );
  for (const r of results) {
    t.is(r.status, 'rejected');
    if (r.status === 'fulfilled') r.value.destroy();
  }
  t.log(`settled after ${settled.join(', ')} ms`);
  t.true(Math.max(...settled) < 3500, `every lookup settled within 3,500 ms (lookupTimeout 1,500): ${settled.join(', ')} ms`);
});

/** tlsd serving pong over TLS and its own outbound `tls` service (trusting the test CA). */
async function outboundTlsd(t: ExecutionContext): Promise<{ rundir: string; port: number }> {
  const dir = await tempDir(t, 'reg8-');
  const rundir = path.join(dir, 'run');
  await startPongd(t, rundir);
  const material = makeMaterial(dir);
  const daemon = spawnCli(t, 'tlsd', ['--listen', '127.0.0.1:0', ...material.args, '--allow', 'pong', '--outbound-ca', material.files.ca], {
    env: { RUNDIR: rundir },
  });
  const port = (await daemon.listening((l) => typeof l['port'] === 'number', START_TIMEOUT))['port'] as number;
  await daemon.listening((l) => String(l['path'] ?? '').endsWith('/tls'), START_TIMEOUT);
  return { rundir, port };
}

rtest("defect 10b: tlsd's outbound `tls` service: a frame then a half-close after the framed ok still gets the reply", async (t) => {
  const { rundir, port } = await outboundTlsd(t);
  const local = await RawClient.unix(t, path.join(rundir, 'tls'));
  await local.write(frame(`tls://127.0.0.1:${port}/pong`));
  await local.expect(frame('ok'));
  await local.write(frame('ping'));
  local.endWrite();
  await local.expect(frame('ping'), 10_000);
  await local.expectEof();
  t.pass();
});

// Passes today, as the variant above (defect 10b not reproduced in these forms): a guard.
rtest("defect 10b: tlsd's outbound `tls` service: URI, a frame and a half-close in one write still get the ok and the reply", async (t) => {
  const { rundir, port } = await outboundTlsd(t);
  const local = await RawClient.unix(t, path.join(rundir, 'tls'));
  await local.write(Buffer.concat([frame(`tls://127.0.0.1:${port}/pong`), frame('ping')]));
  local.endWrite();
  await local.expect(Buffer.concat([frame('ok'), frame('ping')]), 10_000);
  await local.expectEof();
  t.pass();
});

/** TLS files in a temp directory, and a loopback port another server already holds. */
async function busyPortAndMaterial(t: ExecutionContext): Promise<{ dir: string; material: ReturnType<typeof makeMaterial>; port: number }> {
  const dir = await tempDir(t, 'reg8-');
  const material = makeMaterial(dir);
  const busy = net.createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => busy.close());
  return { dir, material, port: (busy.address() as net.AddressInfo).port };
}

// Passes today: the CLI's fail() calls process.exit(1). The library-level defect is below.
rtest('defect 10c: tlsd --watch-certs exits 1 promptly when its --listen port is in use', async (t) => {
  const { dir, material, port } = await busyPortAndMaterial(t);
  const result = await runCli(
    t,
    'tlsd',
    ['--listen', `127.0.0.1:${port}`, ...material.args, '--watch-certs', '--service', 'pong', '--no-outbound'],
    { env: { RUNDIR: path.join(dir, 'run') } },
    8000,
  ).catch((err: Error) => err);
  t.false(result instanceof Error, `tlsd exited: ${result instanceof Error ? result.message.slice(0, 300) : ''}`);
  if (!(result instanceof Error)) t.is(result.code, 1);
});

rtest('defect 4 (control): a FIN well after a valid name is a half-close: ok, then a clean end (tcpd)', async (t) => {
  const w = await world(t, 'tcpd', ['--allow', '*']);
  const conn = await named(t, w.transport);
  conn.endWrite();
  await conn.expectEnd();
  t.pass();
});

rtest('defect 10c: a TlsGateway with watchCerts whose listen() failed keeps no handle alive (its process ends by itself)', async (t) => {
  const { dir, material, port } = await busyPortAndMaterial(t);
  // An embedding program: it catches the listen error and returns, without process.exit.
  const program = `
    import { createTlsGateway } from ${JSON.stringify(path.resolve('gateways/tls.ts'))};
    const gateway = createTlsGateway({ service: 'pong', rundir: ${JSON.stringify(path.join(dir, 'run'))},
      listen: [{ host: '127.0.0.1', port: ${port} }], watchCerts: true,
      cert: ${JSON.stringify(material.files.cert)}, key: ${JSON.stringify(material.files.key)} });
    try { await gateway.listen(); } catch (err) { console.log('listen failed: ' + err.code); }
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', program], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const code = await new Promise<number | null | 'running'>((resolve) => {
    const timer = setTimeout(() => resolve('running'), 8000);
    child.once('close', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  t.regex(out, /listen failed: EADDRINUSE/, out);
  t.not(code, 'running', `the process still runs 8 s after listen() failed: ${out}`);
});

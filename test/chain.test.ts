/**
 * The whole network path (PROTOCOL.md §4): a client on host A asks ipcd for a service,
 * ipcd reaches it through A's outbound gateway and B's inbound gateway, and passes the
 * descriptor. Two "hosts" on one machine: two run directories and loopback ports.
 *
 * Shared by every test (started once): on B, pongd and the inbound gateways tcpd, tlsd,
 * wsd (ws) and wsd (wss), listening on ephemeral ports with `--allow pong
 * --no-outbound`; on A, pongd and the outbound gateways (`--outbound-only`).
 * Each test gets its own host A view: a run directory with its own ipcd, whose local
 * services (`tcp`, `tls`, `ws`, `wss`, `pong`) are recording Unix proxies to the shared
 * ones, so each test sees the bytes of its own hops and its own ipcd log. A recording TCP
 * proxy between A's tcpd and B's tcpd shows the remote hop. Fakes replace a gateway
 * where a test needs one to misbehave.
 *
 * Timeouts are upper bounds only. The daemons' own timeouts (ipcd --lookup-timeout,
 * --handshake-timeout) are 30 s, far above the bounds the clients wait here, so a refusal
 * seen within a bound is a prompt refusal, never a timeout.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createCa, createServerCertificate } from '../src/certs.js';
import { echoOn } from './helpers/raw-client.js';
import { connectIpc } from '../src/client.js';
import { ErrorCode, IpcError } from '../src/errors.js';
import { pyLookup, runPong, spawnDaemon, type LogLine, type Proc, type PyLookupResult } from './helpers/chain-procs.js';
import {
  BOUNCE,
  FRAMED_OK,
  closedPort,
  exchange,
  fakeServer,
  frame,
  hex,
  hop,
  hopsOf,
  limiter,
  loadIndex,
  loadVector,
  recordingProxy,
  rewriteHex,
  withPort,
  type ChainVector,
  type RecordingProxy,
} from './helpers/chain-net.js';

/** Bound of one wait on a reply, a log line or a close (ms). */
const WAIT = 15_000;
/** The daemons' own timeouts: far above WAIT (see above). */
const DAEMON_TIMEOUT = '30000';

// ---------------------------------------------------------------------------------------
// The shared hosts

interface World {
  dir: string;
  rundirA: string;
  rundirB: string;
  caPath: string;
  procs: Proc[];
  tcpdA: Proc;
  tlsdA: Proc;
  wsdA: Proc;
  tcpdB: Proc;
  /** Inbound ports on B. */
  port: { tcp: number; tls: number; ws: number; wss: number };
}

let world: World;
const stops: (() => Promise<void>)[] = [];

test.before(async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ipcc-'));
  // B's run directory is named like the recording's, so `../run-remote/pong` exists.
  const rundirA = path.join(dir, 'a');
  const rundirB = path.join(dir, 'run-remote');
  const ca = createCa();
  const server = createServerCertificate(ca);
  const caPath = path.join(dir, 'ca.pem');
  const certPath = path.join(dir, 'server.pem');
  const keyPath = path.join(dir, 'server-key.pem');
  await Promise.all([writeFile(caPath, ca.cert), writeFile(certPath, server.cert), writeFile(keyPath, server.key)]);
  const tlsFiles = ['--cert', certPath, '--key', keyPath];
  const inbound = ['--listen', '127.0.0.1:0', '--allow', 'pong', '--no-outbound', '--handshake-timeout', DAEMON_TIMEOUT];
  const outbound = ['--outbound-only', '--handshake-timeout', DAEMON_TIMEOUT];
  const spawn = (cli: Parameters<typeof spawnDaemon>[1], rundir: string, args: string[]) =>
    spawnDaemon((stop) => stops.push(stop), cli, rundir, args);

  const pongdB = spawn('pongd', rundirB, ['--service', 'pong']);
  const pongdA = spawn('pongd', rundirA, ['--service', 'pong']);
  const tcpdB = spawn('tcpd', rundirB, inbound);
  const tlsdB = spawn('tlsd', rundirB, [...inbound, ...tlsFiles]);
  const wsdB = spawn('wsd', rundirB, [...inbound, '--no-static']);
  const wssdB = spawn('wsd', rundirB, [...inbound, '--no-static', ...tlsFiles]);
  const tcpdA = spawn('tcpd', rundirA, outbound);
  // tlsd needs a certificate even when it only dials out.
  const tlsdA = spawn('tlsd', rundirA, [...outbound, '--outbound-ca', caPath, ...tlsFiles]);
  const wsdA = spawn('wsd', rundirA, [...outbound, '--outbound-ca', caPath]);
  const procs = [pongdB, pongdA, tcpdB, tlsdB, wsdB, wssdB, tcpdA, tlsdA, wsdA];
  const [tcp, tls, ws, wss] = await Promise.all([tcpdB.port(), tlsdB.port(), wsdB.port(), wssdB.port()]);
  await Promise.all([pongdB.listening(), pongdA.listening(), tcpdA.listening(), tlsdA.listening(), wsdA.listening(2)]);
  world = { dir, rundirA, rundirB, caPath, procs, tcpdA, tlsdA, wsdA, tcpdB, port: { tcp: tcp!, tls: tls!, ws: ws!, wss: wss! } };
});

test.after.always(async () => {
  await Promise.all(stops.map((stop) => stop()));
  if (world) await rm(world.dir, { recursive: true, force: true });
});

// Two CPUs: a few tests at a time, each starting its own ipcd and clients.
const slot = limiter(4);

/** Runs a test body in a slot; every test here spawns processes. */
function chainTest(title: string, body: (t: ExecutionContext) => Promise<void>): void {
  test(title, (t) => slot(() => body(t)));
}


// ---------------------------------------------------------------------------------------
// One test's view of host A

interface HostA {
  rundir: string;
  /** `$RUNDIR/ipc`. */
  ipcPath: string;
  ipcd: Proc;
  /** The recording Unix proxies standing for the local services, by name. */
  unix: Partial<Record<string, RecordingProxy>>;
}

const LOCAL_SERVICES = ['tcp', 'tls', 'ws', 'wss', 'pong'] as const;

/**
 * A run directory for host A with its own ipcd and a recording proxy to each shared local
 * service, except those in `without`. `before` may add its own services (fakes) first.
 */
async function hostA(
  t: ExecutionContext,
  options: { without?: readonly string[]; lookupTimeout?: number; before?: (rundir: string) => Promise<void> } = {},
): Promise<HostA> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ipch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const rundir = path.join(dir, 'run');
  await mkdir(rundir, { mode: 0o770 });
  const unix: HostA['unix'] = {};
  for (const name of LOCAL_SERVICES) {
    if (options.without?.includes(name)) continue;
    unix[name] = await recordingProxy(t.teardown.bind(t), { path: path.join(rundir, name) }, { path: path.join(world.rundirA, name) });
  }
  await options.before?.(rundir);
  const ipcd = spawnDaemon(t.teardown.bind(t), 'ipcd', rundir, ['--lookup-timeout', String(options.lookupTimeout ?? DAEMON_TIMEOUT)]);
  await ipcd.listening();
  return { rundir, ipcPath: path.join(rundir, 'ipc'), ipcd, unix };
}

/** A recording TCP proxy in front of B's tcpd (the remote hop). */
function remoteProxy(t: ExecutionContext, port = world.port.tcp): Promise<RecordingProxy> {
  return recordingProxy(t.teardown.bind(t), { port: 0 }, { port });
}

function unixProxy(host: HostA, name: string): RecordingProxy {
  const proxy = host.unix[name];
  if (!proxy) throw new Error(`no ${name} proxy in this host`);
  return proxy;
}

/** The lookup frame of `pong` with `network`, hex. */
const lookupHex = (network: string): string => hex(frame(`pong;${network}`));

/** The step of a python-client transcript with this direction. */
function stepOf(vector: ChainVector, dir: string): ChainVector['steps'][number] {
  const step = vector.steps.find((s) => s.dir === dir);
  if (!step) throw new Error(`${vector.scenario}: no step ${dir}`);
  return step;
}

/** The lookup was answered the original's way: exactly `ok`, one SCM_RIGHTS descriptor, then EOF. */
function assertPassed(t: ExecutionContext, r: PyLookupResult, echo = BOUNCE): void {
  t.falsy(r.timeout, 'no reply within the bound');
  t.is(r.data, '6f6b', 'recvmsg reads exactly "ok"');
  t.deepEqual(r.ancillary, [{ level: 1, type: 1, len: 4 }], 'one SOL_SOCKET/SCM_RIGHTS message with one descriptor');
  t.is(r.nfds, 1);
  t.is(r.after, '', 'ipcd closes the lookup connection after passing the descriptor');
  t.true(r.fd_is_socket, 'the descriptor is a socket');
  t.is(r.fd_read, echo, 'the descriptor reaches the service');
}

/** The lookup was refused the original's way: closed without a byte or a descriptor, within the bound. */
function assertRefused(t: ExecutionContext, r: PyLookupResult): void {
  t.falsy(r.connect_error, `connected to ipcd (${r.connect_error})`);
  t.falsy(r.timeout, 'ipcd did not close the lookup within the bound');
  t.falsy(r.reset, 'closed, not reset');
  t.is(r.data, '', 'no byte');
  t.deepEqual(r.ancillary, []);
  t.is(r.nfds, 0);
  t.is(r.after, '', 'EOF');
}

/** pong fails promptly (before its own 5 s lookup bound) with ipcd's refusal. */
async function assertPongRefused(t: ExecutionContext, host: HostA, network: string): Promise<void> {
  const r = await runPong(host.rundir, network);
  t.false(r.timedOut, 'pong still running at the bound');
  t.is(r.code, 1, `pong exit code; stderr: ${r.stderr}`);
  t.is(r.stdout, '');
  t.regex(r.stderr, /^pong: ipcd at .+\/ipc refused the lookup of 'pong'/);
}

/** ipcd's refusal line for the lookup of `target`. */
function refusal(host: HostA, target: string | ((line: LogLine) => boolean)): Promise<LogLine> {
  const match = typeof target === 'string' ? (l: LogLine) => l['target'] === target : target;
  return host.ipcd.waitLog((l) => l.msg === 'lookup refused' && match(l), WAIT, `'lookup refused' for ${String(target)}`);
}

/** A shared gateway's refusal line for the outbound URI `uri`. */
function gatewayRefusal(gateway: Proc, uri: string): Promise<LogLine> {
  return gateway.waitLog((l) => l.msg === 'connection refused' && l['uri'] === uri, WAIT, `'connection refused' for ${uri}`);
}

/**
 * Every daemon still serves: this host's ipcd answers a unix:// lookup and (unless
 * `unixOnly`) a tcp:// one through A's and B's tcpd; every shared daemon runs.
 */
async function assertServing(t: ExecutionContext, host: HostA, unixOnly = false): Promise<void> {
  const local = await pyLookup(host.ipcPath, lookupHex('pong unix://pong'), { fdSend: BOUNCE, fdRead: 13 });
  assertPassed(t, local);
  if (!unixOnly) {
    const remote = await pyLookup(host.ipcPath, lookupHex(`pong tcp://127.0.0.1:${world.port.tcp}/pong`), { fdSend: BOUNCE, fdRead: 13 });
    assertPassed(t, remote);
  }
  t.true(host.ipcd.running, 'ipcd runs');
  for (const proc of world.procs) t.true(proc.running, `${proc.name} runs`);
}

// ---------------------------------------------------------------------------------------
// pong across the hosts

const SCHEMES = ['tcp', 'tls', 'ws', 'wss'] as const;

for (const scheme of SCHEMES) {
  chainTest(`pong on host A reaches pongd on host B through ${scheme}://`, async (t) => {
    const host = await hostA(t);
    const target = `${scheme}://127.0.0.1:${world.port[scheme]}/pong`;
    const r = await runPong(host.rundir, `pong ${target}`, [`hello over ${scheme}`]);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, `hello over ${scheme}\n`);
    const answered = await host.ipcd.waitLog((l) => l.msg === 'lookup answered', WAIT, 'lookup answered');
    t.like(answered, { service: 'pong', target });
    // ipcd reached the local gateway named by the scheme, and only it.
    for (const name of LOCAL_SERVICES) t.is(unixProxy(host, name).connections.length, name === scheme ? 1 : 0, name);
  });
}

// ---------------------------------------------------------------------------------------
// The recorded bytes, hop by hop

chainTest('chain_tcp_basic: every hop carries the recorded bytes (real pong, ipcd, both tcpd, pongd)', async (t) => {
  const v = loadVector('chain_tcp_basic');
  const host = await hostA(t);
  const remote = await remoteProxy(t);
  const r = await runPong(host.rundir, withPort(v.ipc_network!, remote.port));
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'bounce me\n');

  const local = unixProxy(host, 'tcp').connections[0]!;
  await local.closed;
  t.deepEqual(local.runs(), [
    `> ${rewriteHex(hop(v, 'ipcd', 'local_tcpd'), remote.port)}`,
    `< ${hop(v, 'local_tcpd', 'ipcd')}`,
    `> ${hop(v, 'pong', 'local_tcpd')}`,
    `< ${hop(v, 'local_tcpd', 'pong')}`,
  ]);
  t.is(hop(v, 'local_tcpd', 'ipcd'), FRAMED_OK);
  const wire = remote.connections[0]!;
  await wire.closed;
  t.deepEqual(wire.runs(), [
    `> ${hop(v, 'local_tcpd', 'remote_tcpd', 0)}`,
    `< ${hop(v, 'remote_tcpd', 'local_tcpd', 0)}`,
    `> ${hop(v, 'local_tcpd', 'remote_tcpd', 1)}`,
    `< ${hop(v, 'remote_tcpd', 'local_tcpd', 1)}`,
  ]);
  t.is(hop(v, 'local_tcpd', 'remote_tcpd', 0), hex('pong'));
  t.is(hop(v, 'remote_tcpd', 'local_tcpd', 0), hex('ok'));
});

chainTest("lookup_py_tcp: a raw client's lookup gets exactly 'ok' and one descriptor that echoes frames", async (t) => {
  const v = loadVector('lookup_py_tcp');
  const host = await hostA(t);
  const remote = await remoteProxy(t);
  const reply = stepOf(v, 'ipcd->client(recvmsg)');
  const r = await pyLookup(host.ipcPath, rewriteHex(stepOf(v, 'client->ipcd').hex!, remote.port), {
    fdSend: stepOf(v, 'client->passed_fd').hex!,
    fdRead: 13,
  });
  assertPassed(t, r, stepOf(v, 'passed_fd->client').hex);
  t.is(r.data, reply.hex);
  t.deepEqual(
    r.ancillary,
    reply.ancillary!.map((a) => ({ level: a.level, type: a.type, len: a.data_hex.length / 2 })),
  );
  const local = unixProxy(host, 'tcp').connections[0]!;
  await local.closed;
  t.deepEqual(local.runs(), [
    `> ${rewriteHex(hop(v, 'ipcd', 'local_tcpd'), remote.port)}`,
    `< ${hop(v, 'local_tcpd', 'ipcd')}`,
    `> ${stepOf(v, 'client->passed_fd').hex!}`,
    `< ${hop(v, 'local_tcpd', '?')}`,
  ]);
  const wire = remote.connections[0]!;
  await wire.closed;
  t.deepEqual(wire.runs(), [
    `> ${hop(v, 'local_tcpd', 'remote_tcpd', 0)}`,
    `< ${hop(v, 'remote_tcpd', 'local_tcpd', 0)}`,
    `> ${hop(v, 'local_tcpd', 'remote_tcpd', 1)}`,
    `< ${hop(v, 'remote_tcpd', 'local_tcpd', 1)}`,
  ]);
});

chainTest('lookup_py_unix: ipcd connects $RUNDIR/NAME itself and passes that descriptor with ok', async (t) => {
  const v = loadVector('lookup_py_unix');
  const host = await hostA(t);
  const r = await pyLookup(host.ipcPath, stepOf(v, 'client->ipcd').hex!, { fdSend: stepOf(v, 'client->passed_fd').hex!, fdRead: 13 });
  assertPassed(t, r, stepOf(v, 'passed_fd->client').hex);
  t.is(r.data, hop(v, 'ipcd', '?'));
  // The descriptor is ipcd's own connection to $RUNDIR/pong: the client's frame went there.
  const pong = unixProxy(host, 'pong').connections[0]!;
  await pong.closed;
  t.deepEqual(pong.runs(), [`> ${stepOf(v, 'client->passed_fd').hex!}`, `< ${hop(v, 'local_pongd', '?')}`]);
  t.is(unixProxy(host, 'tcp').connections.length, 0, 'no gateway involved');
});

// The recorded IPC_NETWORK values that reach pong: pong succeeds, and a raw client
// replaying the recorded lookup gets the recorded reply.
for (const scenario of [
  'chain_unix_scheme',
  'chain_multi_entries_space_after_semicolon',
  'chain_multi_entries_space_before_semicolon',
  'chain_multi_match_last_wins',
]) {
  chainTest(`${scenario}: ${loadVector(scenario).ours}`, async (t) => {
    const v = loadVector(scenario);
    const host = await hostA(t);
    const r = await runPong(host.rundir, v.ipc_network);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, 'bounce me\n');
    // The original fails the trimmed case: no recorded echo there, but pong's is the same.
    const sent = hopsOf(v, 'pong', 'local_pongd')[0] ?? BOUNCE;
    const echoed = hopsOf(v, 'local_pongd', 'pong')[0] ?? BOUNCE;
    const replay = await pyLookup(host.ipcPath, hop(v, 'pong', 'ipcd'), { fdSend: sent, fdRead: 13 });
    assertPassed(t, replay, echoed);
    const answered = host.ipcd.find((l) => l.msg === 'lookup answered');
    t.is(answered.length, 2);
    for (const line of answered) t.like(line, { service: 'pong', target: 'unix://pong' });
  });
}

chainTest('the last matching entry wins even when it leads nowhere (no fallback to an earlier one)', async (t) => {
  const host = await hostA(t);
  const network = 'pong unix://pong;pong unix://nothing';
  assertRefused(t, await pyLookup(host.ipcPath, lookupHex(network)));
  const line = await refusal(host, 'unix://nothing');
  t.is(line['code'], ErrorCode.SERVICE_UNAVAILABLE);
  t.true(String(line['reason']).includes(path.join(host.rundir, 'nothing')));
  await assertServing(t, host);
});

// pong's own lookup frame, caught by a fake ipcd that records it and closes.
for (const scenario of [
  'chain_tcp_basic',
  'chain_unix_scheme',
  'chain_multi_entries_space_after_semicolon',
  'chain_multi_entries_space_before_semicolon',
  'chain_multi_match_last_wins',
  'chain_no_match',
  'chain_no_uri',
  'chain_no_local_tcpd',
  'chain_remote_unknown_service',
  'chain_remote_unreachable',
  'chain_uri_nested_path',
  'chain_uri_without_path',
]) {
  chainTest(`${scenario}: pong sends ipcd the recorded framed lookup`, async (t) => {
    const v = loadVector(scenario);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ipcf-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const fake = await fakeServer(t.teardown.bind(t), { path: path.join(dir, 'ipc') }, (conn) => {
      const r = conn.received;
      if (r.length >= 4 && r.length >= 4 + r.readUInt32BE(0)) conn.socket.destroy();
    });
    const r = await runPong(dir, v.ipc_network);
    t.is(fake.connections.length, 1);
    t.is(fake.connections[0]!.received.toString('hex'), hop(v, 'pong', 'ipcd'));
    t.false(r.timedOut);
    t.is(r.code, 1);
    t.regex(r.stderr, /refused the lookup of 'pong'/);
  });
}

chainTest("a fake local gateway gets the recorded framed URI; after its framed ok, the client owns ipcd's connection to it", async (t) => {
  const v = loadVector('lookup_py_tcp');
  const greeting = hex(frame('hello from the gateway'));
  let gateway!: Awaited<ReturnType<typeof fakeServer>>;
  const host = await hostA(t, {
    without: ['tcp'],
    before: async (rundir) => {
      gateway = await fakeServer(t.teardown.bind(t), { path: path.join(rundir, 'tcp') }, (conn, chunk) => {
        const uriLength = conn.received.length >= 4 ? 4 + conn.received.readUInt32BE(0) : Infinity;
        if (conn.received.length - chunk.length >= uriLength) {
          conn.socket.write(chunk); // past the URI: echo
        } else if (conn.received.length >= uriLength) {
          // The framed ok and a first frame in one write: the frame is the client's.
          conn.socket.write(Buffer.from(FRAMED_OK + greeting, 'hex'));
        }
      });
    },
  });
  const r = await pyLookup(host.ipcPath, stepOf(v, 'client->ipcd').hex!, { fdSend: BOUNCE, fdRead: greeting.length / 2 + 13 });
  assertPassed(t, r, greeting + BOUNCE);
  t.is(gateway.connections.length, 1);
  t.is(gateway.connections[0]!.received.toString('hex'), hop(v, 'ipcd', 'local_tcpd') + BOUNCE);
  await assertServing(t, host, true);
});

chainTest('a fake remote gateway gets the raw path; bytes after its raw ok reach the client', async (t) => {
  const v = loadVector('chain_tcp_basic');
  const greeting = hex(frame('hello from the remote'));
  const remote = await fakeServer(t.teardown.bind(t), { port: 0 }, (conn, chunk) => {
    if (conn.received.length - chunk.length >= 4) conn.socket.write(chunk); // echo
    else if (conn.received.length >= 4) conn.socket.write(Buffer.from(hex('ok') + greeting, 'hex'));
  });
  const host = await hostA(t);
  const r = await pyLookup(host.ipcPath, rewriteHex(hop(v, 'pong', 'ipcd'), remote.port), {
    fdSend: BOUNCE,
    fdRead: greeting.length / 2 + 13,
  });
  assertPassed(t, r, greeting + BOUNCE);
  t.is(remote.connections[0]!.received.toString('hex'), hop(v, 'local_tcpd', 'remote_tcpd') + BOUNCE);
  const local = unixProxy(host, 'tcp').connections[0]!;
  t.is(local.bytes('>'), rewriteHex(hop(v, 'ipcd', 'local_tcpd'), remote.port) + BOUNCE);
  t.is(local.bytes('<'), FRAMED_OK + greeting + BOUNCE);
  await assertServing(t, host);
});

chainTest('a remote gateway answering something else than ok is refused promptly', async (t) => {
  const remote = await fakeServer(t.teardown.bind(t), { port: 0 }, (conn) => {
    if (conn.received.length >= 4 && conn.received.length < 6) conn.socket.write('no');
  });
  const host = await hostA(t);
  const target = `tcp://127.0.0.1:${remote.port}/pong`;
  assertRefused(t, await pyLookup(host.ipcPath, lookupHex(`pong ${target}`)));
  t.like(await gatewayRefusal(world.tcpdA, target), { code: ErrorCode.HANDSHAKE_REFUSED });
  t.is((await refusal(host, target))['code'], ErrorCode.HANDSHAKE_REFUSED);
  // The gateway dropped the remote connection too.
  await remote.waitFor((c) => c.ended || c.closed, WAIT);
  await assertServing(t, host);
});

chainTest('connectIpc returns the passed descriptor as a live socket (unix:// and tcp:// routes)', async (t) => {
  const host = await hostA(t);
  for (const network of ['pong unix://pong', `pong tcp://127.0.0.1:${world.port.tcp}/pong`]) {
    const socket = await connectIpc('pong', { rundir: host.rundir, network });
    t.teardown(() => socket.destroy());
    const reply = await echoOn(socket, frame(`through ${network}`));
    t.is(reply.toString('latin1'), frame(`through ${network}`).toString('latin1'), network);
    socket.destroy();
  }
  const err = await t.throwsAsync(connectIpc('pong', { rundir: host.rundir, network: 'other unix://pong' }), { instanceOf: IpcError });
  t.is(err?.code, ErrorCode.NO_ROUTE);
});


// ---------------------------------------------------------------------------------------
// Failures: prompt refusal, logged, every daemon keeps serving

chainTest('chain_no_ipcd: pong fails promptly naming $RUNDIR/ipc, and works once ipcd runs', async (t) => {
  const v = loadVector('chain_no_ipcd');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ipcn-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await recordingProxy(t.teardown.bind(t), { path: path.join(dir, 'pong') }, { path: path.join(world.rundirA, 'pong') });
  const r = await runPong(dir, v.ipc_network);
  t.false(r.timedOut);
  t.is(r.code, 1);
  t.true(r.stderr.includes(path.join(dir, 'ipc')), r.stderr);
  t.regex(r.stderr, /ipcd is not available/);
  const ipcd = spawnDaemon(t.teardown.bind(t), 'ipcd', dir, []);
  await ipcd.listening();
  const again = await runPong(dir, v.ipc_network);
  t.is(again.code, 0, again.stderr);
  t.is(again.stdout, 'bounce me\n');
});

chainTest('chain_no_local_tcpd: ipcd closes the lookup promptly, logs the missing gateway, keeps serving', async (t) => {
  const v = loadVector('chain_no_local_tcpd');
  const host = await hostA(t, { without: ['tcp'] });
  const target = `tcp://127.0.0.1:${world.port.tcp}/pong`;
  assertRefused(t, await pyLookup(host.ipcPath, rewriteHex(hop(v, 'pong', 'ipcd'), world.port.tcp)));
  const line = await refusal(host, target);
  t.is(line['code'], ErrorCode.SERVICE_UNAVAILABLE);
  t.true(String(line['reason']).includes(path.join(host.rundir, 'tcp')), String(line['reason']));
  await assertPongRefused(t, host, withPort(v.ipc_network!, world.port.tcp));
  await assertServing(t, host, true);
});

for (const [scenario, code, reason] of [
  ['chain_no_match', ErrorCode.NO_ROUTE, /no route for 'pong'/],
  ['chain_no_uri', ErrorCode.INVALID_URI, /no '<scheme>:\/\/'/],
] as const) {
  chainTest(`${scenario}: ${loadVector(scenario).ours}`, async (t) => {
    const v = loadVector(scenario);
    const host = await hostA(t);
    assertRefused(t, await pyLookup(host.ipcPath, hop(v, 'pong', 'ipcd')));
    const line = await refusal(host, () => true);
    t.is(line['code'], code);
    t.regex(String(line['reason']), reason);
    await assertPongRefused(t, host, v.ipc_network!);
    await assertServing(t, host);
  });
}

chainTest("lookup_py_no_semicolon: ipcd closes the lookup without a byte, logs why, keeps serving", async (t) => {
  const v = loadVector('lookup_py_no_semicolon');
  const host = await hostA(t);
  const r = await pyLookup(host.ipcPath, stepOf(v, 'client->ipcd').hex!);
  assertRefused(t, r);
  t.is(r.data, stepOf(v, 'ipcd->client(recvmsg)').hex);
  const line = await refusal(host, () => true);
  t.is(line['code'], ErrorCode.INVALID_URI);
  t.regex(String(line['reason']), /without ';'/);
  await assertServing(t, host);
});

chainTest('chain_remote_unknown_service: the recorded bytes up to the refusal, then closes at every hop; all keep serving', async (t) => {
  const v = loadVector('chain_remote_unknown_service');
  const host = await hostA(t);
  const remote = await remoteProxy(t);
  const target = `tcp://127.0.0.1:${remote.port}/nosuch`;
  assertRefused(t, await pyLookup(host.ipcPath, rewriteHex(hop(v, 'pong', 'ipcd'), remote.port)));
  const local = unixProxy(host, 'tcp').connections[0]!;
  await local.closed;
  t.deepEqual(local.runs(), [`> ${rewriteHex(hop(v, 'ipcd', 'local_tcpd'), remote.port)}`]);
  t.is(local.firstEnd, 'target', 'the local gateway closed it');
  const wire = remote.connections[0]!;
  await wire.closed;
  t.deepEqual(wire.runs(), [`> ${hop(v, 'local_tcpd', 'remote_tcpd')}`]);
  t.is(wire.firstEnd, 'target', 'the remote gateway closed it');
  const remoteLine = await world.tcpdB.waitLog(
    (l) => l.msg === 'connection refused' && l['peer'] === `127.0.0.1:${wire.upstreamPort}`,
    WAIT,
    "remote tcpd's refusal",
  );
  t.is(remoteLine['code'], ErrorCode.SERVICE_NOT_ALLOWED);
  t.is((await gatewayRefusal(world.tcpdA, target))['code'], ErrorCode.HANDSHAKE_REFUSED);
  t.is((await refusal(host, target))['code'], ErrorCode.HANDSHAKE_REFUSED);
  await assertPongRefused(t, host, withPort(v.ipc_network!, remote.port));
  await assertServing(t, host);
});

chainTest("chain_remote_unreachable: the local gateway answers the refusal promptly and keeps serving", async (t) => {
  const v = loadVector('chain_remote_unreachable');
  const host = await hostA(t);
  const port = await closedPort();
  const target = `tcp://127.0.0.1:${port}/pong`;
  assertRefused(t, await pyLookup(host.ipcPath, rewriteHex(hop(v, 'pong', 'ipcd'), port)));
  const local = unixProxy(host, 'tcp').connections[0]!;
  await local.closed;
  t.deepEqual(local.runs(), [`> ${rewriteHex(hop(v, 'ipcd', 'local_tcpd'), port)}`]);
  t.is(local.firstEnd, 'target');
  const line = await gatewayRefusal(world.tcpdA, target);
  t.is(line['code'], ErrorCode.SERVICE_UNAVAILABLE);
  t.regex(String(line['reason']), /ECONNREFUSED/);
  t.is((await refusal(host, target))['code'], ErrorCode.HANDSHAKE_REFUSED);
  await assertPongRefused(t, host, withPort(v.ipc_network!, port));
  await assertServing(t, host);
});

chainTest('chain_uri_nested_path: the remote gateway refuses ../run-remote/pong without a byte (the path exists)', async (t) => {
  const v = loadVector('chain_uri_nested_path');
  const host = await hostA(t);
  const remote = await remoteProxy(t);
  // What the original reached: B's run directory is named run-remote.
  t.is(path.basename(world.rundirB), 'run-remote');
  assertRefused(t, await pyLookup(host.ipcPath, rewriteHex(hop(v, 'pong', 'ipcd'), remote.port)));
  const local = unixProxy(host, 'tcp').connections[0]!;
  await local.closed;
  t.deepEqual(local.runs(), [`> ${rewriteHex(hop(v, 'ipcd', 'local_tcpd'), remote.port)}`]);
  const wire = remote.connections[0]!;
  await wire.closed;
  t.deepEqual(wire.runs(), [`> ${hop(v, 'local_tcpd', 'remote_tcpd', 0)}`], 'no ok back');
  t.is(hop(v, 'local_tcpd', 'remote_tcpd', 0), hex('../run-remote/pong'));
  const remoteLine = await world.tcpdB.waitLog(
    (l) => l.msg === 'connection refused' && l['peer'] === `127.0.0.1:${wire.upstreamPort}`,
    WAIT,
    "remote tcpd's refusal",
  );
  t.is(remoteLine['code'], ErrorCode.INVALID_SERVICE_NAME);
  await assertPongRefused(t, host, withPort(v.ipc_network!, remote.port));
  await assertServing(t, host);
});

chainTest('chain_uri_without_path: refused promptly (no deadlock), logged', async (t) => {
  const v = loadVector('chain_uri_without_path');
  const host = await hostA(t);
  const target = `tcp://127.0.0.1:${world.port.tcp}`;
  assertRefused(t, await pyLookup(host.ipcPath, rewriteHex(hop(v, 'pong', 'ipcd'), world.port.tcp)));
  const line = await refusal(host, target);
  // ipcd may refuse the URI itself or forward it for the gateway to refuse: either way,
  // the bytes it sends are the recorded ones and nothing comes back.
  t.true(line['code'] === ErrorCode.INVALID_URI || line['code'] === ErrorCode.HANDSHAKE_REFUSED, String(line['code']));
  for (const local of unixProxy(host, 'tcp').connections) {
    await local.closed;
    t.deepEqual(local.runs(), [`> ${rewriteHex(hop(v, 'ipcd', 'local_tcpd'), world.port.tcp)}`]);
  }
  await assertPongRefused(t, host, withPort(v.ipc_network!, world.port.tcp));
  await assertServing(t, host);
});

// Framed URIs sent straight to A's tcpd (its Unix service `tcp`).
for (const [scenario, why] of [
  ['tcpd_local_uri_bad_port', /expected host:port/],
  ['tcpd_local_uri_no_port', /expected host:port/],
  ['tcpd_local_uri_without_scheme', /no '<scheme>:\/\/'/],
  ['chain_uri_without_path', /no \/path/],
] as const) {
  chainTest(`${scenario}: tcpd's local service closes the connection promptly without a byte, logs it, keeps serving`, async (t) => {
    const v = loadVector(scenario);
    const sent =
      scenario === 'chain_uri_without_path'
        ? rewriteHex(hop(v, 'ipcd', 'local_tcpd'), world.port.tcp)
        : v.steps.find((s) => s.dir === 'localclient->tcpd')!.hex!;
    const uri = Buffer.from(sent, 'hex').subarray(4).toString('latin1');
    const r = await exchange({ path: path.join(world.rundirA, 'tcp') }, Buffer.from(sent, 'hex'), WAIT);
    t.is(r.end, 'eof');
    t.is(r.received, '');
    const line = await gatewayRefusal(world.tcpdA, uri);
    t.is(line['code'], ErrorCode.INVALID_URI);
    t.regex(String(line['reason']), why);
    // Still serving: a good URI gets the framed ok, then the switch echoes.
    const good = await goodUri(world.port.tcp);
    t.is(good.received, FRAMED_OK + BOUNCE);
    t.true(world.tcpdA.running);
  });
}

/** A framed URI to B's pongd sent straight to A's tcpd; the bounce frame once ok came back. */
function goodUri(port: number): Promise<{ received: string; end: string }> {
  return exchange(
    { path: path.join(world.rundirA, 'tcp') },
    frame(`tcp://127.0.0.1:${port}/pong`),
    WAIT,
    (got) => got.length >= 19,
    (got, socket) => {
      if (got.toString('hex') === FRAMED_OK) socket.write(Buffer.from(BOUNCE, 'hex'));
    },
  );
}

chainTest("tcpd's local service keeps a first frame sent with the URI in one write", async (t) => {
  // Like the inbound side (PROTOCOL.md §3): bytes that follow the handshake in the same
  // segment are the client's first message, forwarded after ok (the original drops them).
  const message = Buffer.concat([frame(`tcp://127.0.0.1:${world.port.tcp}/pong`), Buffer.from(BOUNCE, 'hex')]);
  const r = await exchange({ path: path.join(world.rundirA, 'tcp') }, message, WAIT, (got) => got.length >= 19);
  t.is(r.received, FRAMED_OK + BOUNCE);
  t.is(r.end, 'enough');
});

chainTest("tcpd's local service serves a client that half-closes after its URI and first frame", async (t) => {
  const message = Buffer.concat([frame(`tcp://127.0.0.1:${world.port.tcp}/pong`), Buffer.from(BOUNCE, 'hex')]);
  const r = await exchange({ path: path.join(world.rundirA, 'tcp') }, message, WAIT, (got) => got.length >= 19, undefined, true);
  t.is(r.received, FRAMED_OK + BOUNCE);
});

// Other schemes: the same refusals through tlsd and wsd.
for (const scheme of ['tls', 'ws', 'wss'] as const) {
  chainTest(`${scheme}://: an unknown remote service is refused promptly and the gateways keep serving`, async (t) => {
    const host = await hostA(t);
    const target = `${scheme}://127.0.0.1:${world.port[scheme]}/nosuch`;
    assertRefused(t, await pyLookup(host.ipcPath, lookupHex(`pong ${target}`)));
    const gateway = scheme === 'tls' ? world.tlsdA : world.wsdA;
    t.is((await gatewayRefusal(gateway, target))['code'], ErrorCode.HANDSHAKE_REFUSED);
    t.is((await refusal(host, target))['code'], ErrorCode.HANDSHAKE_REFUSED);
    const good = await pyLookup(host.ipcPath, lookupHex(`pong ${scheme}://127.0.0.1:${world.port[scheme]}/pong`), {
      fdSend: BOUNCE,
      fdRead: 13,
    });
    assertPassed(t, good);
    await assertServing(t, host);
  });

  chainTest(`${scheme}://: a nested path (../run-remote/pong) is refused by the remote gateway, promptly`, async (t) => {
    const host = await hostA(t);
    const target = `${scheme}://127.0.0.1:${world.port[scheme]}/../run-remote/pong`;
    assertRefused(t, await pyLookup(host.ipcPath, lookupHex(`pong ${target}`)));
    const gateway = scheme === 'tls' ? world.tlsdA : world.wsdA;
    t.is((await gatewayRefusal(gateway, target))['code'], ErrorCode.HANDSHAKE_REFUSED);
    t.is((await refusal(host, target))['code'], ErrorCode.HANDSHAKE_REFUSED);
    await assertServing(t, host);
  });

  chainTest(`${scheme}://: an unreachable remote is refused promptly and the gateways keep serving`, async (t) => {
    const host = await hostA(t);
    const target = `${scheme}://127.0.0.1:${await closedPort()}/pong`;
    assertRefused(t, await pyLookup(host.ipcPath, lookupHex(`pong ${target}`)));
    const gateway = scheme === 'tls' ? world.tlsdA : world.wsdA;
    t.is((await gatewayRefusal(gateway, target))['code'], ErrorCode.SERVICE_UNAVAILABLE);
    await refusal(host, target);
    await assertServing(t, host);
  });
}

// ---------------------------------------------------------------------------------------
// Concurrency

chainTest('a lookup whose local gateway never answers does not delay another; it is closed after --lookup-timeout', async (t) => {
  let silent!: Awaited<ReturnType<typeof fakeServer>>;
  const host = await hostA(t, {
    without: ['tcp'],
    // Long enough for the other lookup to finish first, by a wide margin.
    lookupTimeout: 8000,
    before: async (rundir) => {
      silent = await fakeServer(t.teardown.bind(t), { path: path.join(rundir, 'tcp') }, () => undefined);
    },
  });
  const target = `tcp://127.0.0.1:${world.port.tcp}/pong`;
  let stuckDone = false;
  const stuck = pyLookup(host.ipcPath, lookupHex(`pong ${target}`), { timeout: 30 }).finally(() => (stuckDone = true));
  // The lookup is pending in ipcd once its URI reached the silent gateway.
  const pending = await silent.waitFor((c) => c.received.length >= frame(target).length, WAIT);
  t.is(pending.received.toString('hex'), hex(frame(target)));
  const other = await pyLookup(host.ipcPath, lookupHex('pong unix://pong'), { fdSend: BOUNCE, fdRead: 13 });
  assertPassed(t, other);
  t.false(stuckDone, 'the unix:// lookup was answered while the other one was still pending');
  assertRefused(t, await stuck);
  // (The timeout's log line does not name the target: matched by its code.)
  await refusal(host, (l) => l['code'] === ErrorCode.HANDSHAKE_TIMEOUT);
  // ipcd dropped its connection to the silent gateway.
  await silent.waitFor((c) => c.ended || c.closed, WAIT);
  await assertServing(t, host, true);
});

chainTest('a client that leaves before its answer: ipcd drops the gateway connection and keeps serving', async (t) => {
  let gateway!: Awaited<ReturnType<typeof fakeServer>>;
  const host = await hostA(t, {
    without: ['tcp'],
    before: async (rundir) => {
      gateway = await fakeServer(t.teardown.bind(t), { path: path.join(rundir, 'tcp') }, () => undefined);
    },
  });
  const target = `tcp://127.0.0.1:${world.port.tcp}/pong`;
  const client = net.connect({ path: host.ipcPath });
  client.on('error', () => undefined);
  t.teardown(() => client.destroy());
  client.write(frame(`pong;pong ${target}`));
  const pending = await gateway.waitFor((c) => c.received.length >= frame(target).length, WAIT);
  client.destroy();
  // The gateway answers once nobody waits any more.
  pending.socket.write(Buffer.from(FRAMED_OK, 'hex'));
  // ipcd lets go of the gateway connection (well before its 30 s lookup timeout).
  await gateway.waitFor((c) => c.ended || c.closed, WAIT);
  await assertServing(t, host, true);
});

chainTest('a lookup frame longer than the limit is closed promptly and logged; ipcd keeps serving', async (t) => {
  const host = await hostA(t);
  const r = await pyLookup(host.ipcPath, 'ffffffff616263');
  assertRefused(t, r);
  const line = await refusal(host, () => true);
  t.is(line['code'], ErrorCode.PAYLOAD_TOO_LARGE);
  await assertServing(t, host, true);
});

// A client may shutdown(SHUT_WR) after its lookup and still wait for the reply: the
// original ipcd answers it (it handles the message before it reads the EOF), so does ours.
chainTest('a client that half-closes after its lookup still gets its answer', async (t) => {
  const host = await hostA(t);
  const r = await pyLookup(host.ipcPath, lookupHex('pong unix://pong'), { shutWrite: true, fdSend: BOUNCE, fdRead: 13 });
  assertPassed(t, r);
});

test('every scenario of INDEX.json that this file covers exists', (t) => {
  const scenarios = new Set(loadIndex().map((e) => e.scenario));
  for (const name of [
    'chain_no_ipcd',
    'chain_no_local_tcpd',
    'chain_no_match',
    'chain_no_uri',
    'chain_remote_unknown_service',
    'chain_remote_unreachable',
    'chain_uri_nested_path',
    'chain_uri_without_path',
    'lookup_py_no_semicolon',
    'lookup_py_tcp',
    'lookup_py_unix',
    'chain_tcp_basic',
    'chain_unix_scheme',
    'chain_multi_entries_space_after_semicolon',
    'chain_multi_entries_space_before_semicolon',
    'chain_multi_match_last_wins',
    'tcpd_local_uri_bad_port',
    'tcpd_local_uri_no_port',
    'tcpd_local_uri_without_scheme',
  ]) {
    t.true(scenarios.has(name), name);
  }
});

// ---------------------------------------------------------------------------------------
// The outbound ws service against a fake remote that speaks right after its 101

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/**
 * A fake remote WebSocket gateway on a raw TCP server (not half-open: it closes once
 * wsd ends its side): it answers each upgrade with a valid 101 and, in the same write,
 * the raw bytes `after` (RFC 6455 §4.2.2). Records each request's path.
 */
async function fakeWsRemote(t: ExecutionContext, after: Buffer, halfOpen = false): Promise<{ port: number; paths: string[] }> {
  const paths: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: halfOpen }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let head = '';
    socket.on('data', function onHead(chunk: Buffer) {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onHead);
      socket.resume(); // what follows (masked frames, the close frame) is read and ignored
      paths.push(/^GET (\S+) /.exec(head)?.[1] ?? '');
      const key = /^sec-websocket-key:\s*(\S+)\s*$/im.exec(head.slice(0, end))?.[1] ?? '';
      const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
      const response =
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`;
      socket.write(Buffer.concat([Buffer.from(response, 'latin1'), after]));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as net.AddressInfo).port, paths };
}

/** A wsd of the test's own that only serves outbound (`ws`, `wss` in a fresh run directory). */
async function outboundWsd(t: ExecutionContext): Promise<{ proc: Proc; wsPath: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ipcw-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const rundir = path.join(dir, 'run');
  await mkdir(rundir, { mode: 0o770 });
  const proc = spawnDaemon(t.teardown.bind(t), 'wsd', rundir, ['--outbound-only', '--handshake-timeout', DAEMON_TIMEOUT]);
  await proc.listening(2);
  return { proc, wsPath: path.join(rundir, 'ws') };
}

chainTest('outbound ws: a message the remote sends in the same write as its 101 reaches the local client after the framed ok', async (t) => {
  const remote = await fakeWsRemote(t, Buffer.from('810568656c6c6f', 'hex')); // FIN, text, unmasked, 'hello'
  const wsd = await outboundWsd(t);
  const uri = `ws://127.0.0.1:${remote.port}/pong`;
  const r = await exchange({ path: wsd.wsPath }, frame(uri), WAIT, (got) => got.length >= 6 + 9);
  t.is(r.received, FRAMED_OK + '0000000568656c6c6f');
  t.is(r.end, 'enough');
  t.deepEqual(remote.paths, ['/pong']);
  t.true(wsd.proc.running);
});

chainTest('outbound ws: an invalid frame in the same write as the 101 closes the local connection, logged, and wsd keeps serving', async (t) => {
  const remote = await fakeWsRemote(t, Buffer.from('f100', 'hex')); // RSV1-3 set: invalid without extensions
  const wsd = await outboundWsd(t);
  const uri = `ws://127.0.0.1:${remote.port}/pong`;
  const r = await exchange({ path: wsd.wsPath }, frame(uri), WAIT);
  t.is(r.end, 'eof', 'the local connection is closed');
  t.true(r.received === '' || r.received === FRAMED_OK, r.received);
  const line = await wsd.proc.waitLog(
    (l) => (l.msg === 'connection closed' || l.msg === 'connection refused') && l['uri'] === uri,
    WAIT,
    `the end of the connection to ${uri}`,
  );
  t.truthy(line['reason']);
  t.true(wsd.proc.running, `wsd runs; stderr: ${wsd.proc.stderr}`);
  // Another outbound connection through the same wsd, to B's real wsd.
  const good = await exchange(
    { path: wsd.wsPath },
    frame(`ws://127.0.0.1:${world.port.ws}/pong`),
    WAIT,
    (got) => got.length >= 19,
    (got, socket) => {
      if (got.toString('hex') === FRAMED_OK) socket.write(Buffer.from(BOUNCE, 'hex'));
    },
  );
  t.is(good.received, FRAMED_OK + BOUNCE);
  t.true(wsd.proc.running);
});

// An error raised by ws between 'open' and the start of the switch (the bad frame came
// with the 101) is kept by the endpoint and ends the switch as soon as it starts: the
// local connection closes at once, with the error's code, even if the remote stays open.
test(
  'outbound ws: an invalid frame with the 101 ends the local connection promptly, with its error logged, even if the remote stays open',
  (t) => slot(async () => {
    const remote = await fakeWsRemote(t, Buffer.from('f100', 'hex'), true);
    const wsd = await outboundWsd(t);
    const uri = `ws://127.0.0.1:${remote.port}/pong`;
    const r = await exchange({ path: wsd.wsPath }, frame(uri), WAIT);
    t.is(r.end, 'eof', `the local connection is closed within ${WAIT} ms`);
    const line = await wsd.proc.waitLog((l) => l['uri'] === uri, WAIT, `the end of the connection to ${uri}`);
    t.is(typeof line['code'], 'string', `the frame error is logged: ${JSON.stringify(line)}`);
  }),
);

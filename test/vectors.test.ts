/**
 * Interop: every pongd_*, tcpd_in_* and pong_client_* transcript recorded from the original
 * libipc (shared/vectors) replayed against our pongd and tcpd, started from dist/ as child
 * processes, each test with its own RUNDIR and ephemeral port. Where INDEX.json's `ours`
 * says "identical" the bytes the original put on the wire are asserted; elsewhere `ours`
 * (PROTOCOL.md's robust behaviour) is, logs included. Outbound scenarios (chain_*,
 * lookup_*, tcpd_local_uri_*) need two hosts and ipcd: test/chain.test.ts replays them;
 * a test here checks that each of them is named there.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { runCli, spawnCli, startPongd, startTcpd, type Pongd, type Tcpd } from './helpers/daemon.js';
import { byMsg, codeOf, type LogLine } from './helpers/log-sink.js';
import { limiter } from './helpers/limit.js';
import { vectorsDir } from './helpers/paths.js';
import { frame, pattern, pause, probeEcho, RawClient, tcpSession, WAIT } from './helpers/raw-client.js';
import { tempDir, tempRundir } from './helpers/rundir.js';
import { startFrameService } from './helpers/services.js';
import { loadIndex, loadVector, replay, stepHex, type Vector } from './helpers/vectors.js';

const BOUNCE = '00000009626f756e6365206d65';
/** Scenarios of outbound gateways and ipcd: later work. */
const LATER = /^(chain_|lookup_|tcpd_local_uri_)/;

/** At most this many scenarios (each spawning one to three daemons) run at once. */
const slot = limiter(6);

interface PongdEnv {
  rundir: string;
  pongd: Pongd;
  connect: () => Promise<RawClient>;
}

interface TcpdEnv extends PongdEnv {
  tcpd: Tcpd;
  /** A TCP client to tcpd that has named `service` and received `ok`. */
  session: (service?: string) => Promise<RawClient>;
}

async function pongdEnv(t: ExecutionContext, service = 'pong'): Promise<PongdEnv> {
  const rundir = await tempRundir(t);
  const pongd = await startPongd(t, rundir, service);
  return { rundir, pongd, connect: () => RawClient.unix(t, pongd.path) };
}

async function tcpdEnv(t: ExecutionContext, service = 'pong', tcpdArgs?: string[]): Promise<TcpdEnv> {
  const rundir = await tempRundir(t);
  const [pongd, tcpd] = await Promise.all([startPongd(t, rundir, service), startTcpd(t, rundir, tcpdArgs)]);
  return {
    rundir,
    pongd,
    tcpd,
    connect: () => RawClient.tcp(t, tcpd.port),
    session: (name = service) => tcpSession(t, tcpd.port, name),
  };
}

/** The service still serves: a fresh client gets the vectors' probe echoed. */
async function pongdKeepsServing(t: ExecutionContext, env: PongdEnv): Promise<void> {
  await probeEcho(await env.connect());
  t.true(env.pongd.daemon.running, 'pongd is still running');
}

/** tcpd still serves: a fresh TCP client gets `ok` and its echo. */
async function tcpdKeepsServing(t: ExecutionContext, env: TcpdEnv, service = 'pong'): Promise<void> {
  await probeEcho(await env.session(service));
  t.true(env.tcpd.daemon.running, 'tcpd is still running');
}

/** pongd logged a connection error with `code`. */
async function pongdLogged(t: ExecutionContext, env: PongdEnv, code: string): Promise<LogLine> {
  const line = await env.pongd.daemon.log.waitFor(
    (l) => l.msg === 'connection error' && codeOf(l) === code,
    WAIT,
    `pongd 'connection error' ${code}`,
  );
  t.is(codeOf(line), code);
  return line;
}

/** tcpd logged the refusal of `client` with `code` and a reason. */
async function tcpdRefused(t: ExecutionContext, env: TcpdEnv, client: RawClient, code: string): Promise<LogLine> {
  const line = await env.tcpd.daemon.log.waitFor(byMsg('connection refused', client.peer), WAIT, `refusal of ${client.peer}`);
  t.is(codeOf(line), code);
  t.is(typeof line['reason'], 'string');
  return line;
}

/** tcpd logged the teardown of `client`'s connection, with its summary fields. */
async function tcpdClosed(t: ExecutionContext, env: TcpdEnv, client: RawClient, code?: string): Promise<LogLine> {
  const line = await env.tcpd.daemon.log.waitFor(byMsg('connection closed', client.peer), WAIT, `teardown of ${client.peer}`);
  for (const field of ['bytesIn', 'bytesOut', 'messagesIn', 'messagesOut', 'durationMs']) {
    t.is(typeof line[field], 'number', `${field} is logged`);
  }
  t.is(typeof line['reason'], 'string');
  if (code !== undefined) t.is(codeOf(line), code);
  return line;
}

/** The bytes of every `from->...` step, concatenated (what a whole echo must be). */
function sentBy(vector: Vector, dir: string): Buffer {
  return Buffer.concat(vector.steps.filter((s) => s.dir === dir).map((s) => Buffer.from(s.hex ?? '', 'hex')));
}

/** Half-closes and expects the end of the stream with nothing more received. */
async function closeCleanly(client: RawClient): Promise<void> {
  client.endWrite();
  await client.expectEof();
  client.destroy();
}

type Script = (t: ExecutionContext, vector: Vector) => Promise<void>;

// ---------------------------------------------------------------------------------------
// pongd

/** "identical bytes": the transcript replayed as is; nothing else comes back. */
const pongdIdentical: Script = async (t, vector) => {
  const env = await pongdEnv(t);
  await replay(vector.steps, { connect: env.connect });
  await pongdKeepsServing(t, env);
};

/** Over the limit: that connection closes, logged; another client keeps its echo. */
const pongdOversize: Script = async (t, vector) => {
  const env = await pongdEnv(t);
  const other = await env.connect();
  await probeEcho(other);
  const client = await env.connect();
  await client.write(stepHex(vector, 'client->server')).catch(() => undefined);
  await client.expectEof();
  const line = await pongdLogged(t, env, 'IPC_ERR_PAYLOAD_TOO_LARGE');
  t.regex(String((line['err'] as Record<string, unknown>)['message']), /exceeds the limit/);
  await probeEcho(other);
  await pongdKeepsServing(t, env);
};

/**
 * An incomplete frame waits (no zero padding, no echo) while others are served, then is
 * echoed whole once the rest arrives.
 */
const pongdIncomplete: Script = async (t, vector) => {
  const env = await pongdEnv(t);
  const first = Buffer.from(stepHex(vector, 'client->server'), 'hex');
  const length = first.readUInt32BE(0);
  const rest = pattern(length - (first.length - 4), 7, 3);
  const client = await env.connect();
  await client.write(first);
  await pongdKeepsServing(t, env);
  await client.write(rest);
  await client.expect(Buffer.concat([first, rest]));
  await closeCleanly(client);
  t.is(client.received, first.length + rest.length, 'echoed once, whole, nothing before it');
};

/** Replay, then the truncated frame is logged and the service keeps serving. */
const pongdTruncated =
  (close: 'graceful' | 'destroy'): Script =>
  async (t, vector) => {
    const env = await pongdEnv(t);
    const clients = await replay(vector.steps, { connect: env.connect, close });
    await pongdLogged(t, env, 'IPC_ERR_TRUNCATED_FRAME');
    t.is([...clients.values()][0]!.received, 0, 'nothing echoed');
    await pongdKeepsServing(t, env);
  };

/** Split frames: the client's writes, sent as separate segments, come back once, whole. */
const pongdSplit: Script = async (t, vector) => {
  const env = await pongdEnv(t);
  const parts = vector.steps.filter((s) => s.dir === 'client->server').map((s) => s.hex!);
  t.true(parts.length >= 2);
  const client = await env.connect();
  for (const [i, part] of parts.entries()) {
    if (i > 0) await pause(50);
    await client.write(part);
  }
  await client.expect(sentBy(vector, 'client->server'));
  await closeCleanly(client);
  await pongdKeepsServing(t, env);
};

const scripts: Record<string, Script> = {
  pongd_basic_echo: pongdIdentical,
  pongd_one_byte_payload: pongdIdentical,
  pongd_two_clients: pongdIdentical,
  // "nothing written": the graceful close expects the end of the stream with no byte.
  pongd_connect_then_close: pongdIdentical,
  pongd_length_100001: pongdOversize,
  pongd_length_99993_short: pongdOversize,
  pongd_length_ffffffff: pongdOversize,
  pongd_length_99992_short: pongdIncomplete,
  pongd_length_gt_data_keep_open: pongdIncomplete,
  pongd_length_gt_data_shutdown_wr: pongdTruncated('graceful'),
  pongd_length_gt_data_then_close: pongdTruncated('destroy'),
  pongd_split_after_header: pongdSplit,
  pongd_split_in_header: pongdSplit,
  pongd_split_in_payload: pongdSplit,

  async pongd_three_raw_bytes(t, vector) {
    const env = await pongdEnv(t);
    const client = await env.connect();
    await client.write(stepHex(vector, 'client->server'));
    // An incomplete header waits: the service goes on serving others meanwhile.
    await pongdKeepsServing(t, env);
    client.endWrite();
    await client.expectEof();
    await pongdLogged(t, env, 'IPC_ERR_TRUNCATED_FRAME');
    await pongdKeepsServing(t, env);
  },

  async pongd_two_messages_one_write(t, vector) {
    const env = await pongdEnv(t);
    const client = await env.connect();
    await client.write(stepHex(vector, 'client->server'));
    await client.expect(frame('abc'));
    await client.expect(frame('def'));
    await closeCleanly(client);
    await pongdKeepsServing(t, env);
  },

  async pongd_zero_length(t, vector) {
    const env = await pongdEnv(t);
    const client = await env.connect();
    await client.write(stepHex(vector, 'client->server'));
    await client.expect('00000000');
    await closeCleanly(client);
    await pongdKeepsServing(t, env);
  },

  async pongd_max_payload_99992(t) {
    const env = await pongdEnv(t);
    // As recorded: one write of the header and 99,992 payload bytes (i*7+1)%251.
    const message = frame(pattern(99_992, 7, 1, 251));
    const client = await env.connect();
    await client.write(message);
    await client.expect(message);
    await closeCleanly(client);
    await pongdKeepsServing(t, env);
  },

  async pongd_lock_and_stale_socket(t) {
    const rundir = await tempRundir(t);
    // A: RUNDIR did not exist; created 0770, socket 0660.
    const a = await startPongd(t, rundir);
    t.is(statSync(rundir).mode & 0o777, 0o770);
    t.is(statSync(a.path).mode & 0o777, 0o660);
    // B on the same RUNDIR fails clearly and leaves A serving.
    const b = await runCli(t, 'pongd', ['--service', 'pong'], { env: { RUNDIR: rundir } });
    t.is(b.code, 1);
    t.true(b.stderr.includes("'pong'") && b.stderr.includes(a.path), `B names the service and path: ${b.stderr}`);
    await probeEcho(await RawClient.unix(t, a.path));
    // SIGKILL A: the socket file stays and refuses connections.
    a.daemon.kill('SIGKILL');
    await a.daemon.waitExit(WAIT);
    t.true(lstatSync(a.path).isSocket(), 'stale socket file left by SIGKILL');
    const refused = await RawClient.unix(t, a.path).then(
      () => null,
      (err: NodeJS.ErrnoException) => err.code,
    );
    t.is(refused, 'ECONNREFUSED');
    // C recovers the stale socket and serves.
    const c = await startPongd(t, rundir);
    await probeEcho(await RawClient.unix(t, c.path));
    // SIGHUP to idle C: clean exit 0, socket removed.
    c.daemon.kill('SIGHUP');
    t.deepEqual(await c.daemon.waitExit(WAIT), { code: 0, signal: null });
    t.false(existsSync(c.path), 'socket removed after SIGHUP');
    // SIGTERM to a fresh D: the same.
    const d = await startPongd(t, rundir);
    d.daemon.kill('SIGTERM');
    t.deepEqual(await d.daemon.waitExit(WAIT), { code: 0, signal: null });
    t.false(existsSync(d.path), 'socket removed after SIGTERM');
  },

  async pongd_permissions_vs_umask(t) {
    const base = await tempDir(t);
    // Inherited umasks 000, 022, 077: directory 0770, socket 0660 whatever the umask.
    for (const umask of ['000', '022', '077']) {
      const rundir = path.join(base, `umask-${umask}`);
      const daemon = spawnCli(t, 'pongd', ['--service', 'pong'], { env: { RUNDIR: rundir }, umask });
      const line = await daemon.listening();
      t.is(statSync(rundir).mode & 0o777, 0o770, `rundir mode under umask ${umask}`);
      t.is(statSync(String(line['path'])).mode & 0o777, 0o660, `socket mode under umask ${umask}`);
      daemon.kill('SIGTERM');
      await daemon.waitExit(WAIT);
    }
    // RUNDIR already existing with mode 0755: served, socket 0660.
    const existing = path.join(base, 'existing');
    mkdirSync(existing, { mode: 0o755 });
    const e = await startPongd(t, existing);
    t.is(statSync(e.path).mode & 0o777, 0o660);
    await probeEcho(await RawClient.unix(t, e.path));
    // RUNDIR whose parent does not exist: created, served.
    const nested = path.join(base, 'missing', 'parent', 'run');
    const n = await startPongd(t, nested);
    t.is(n.path, path.join(nested, 'pong'));
    await probeEcho(await RawClient.unix(t, n.path));
    // RUNDIR with a trailing slash: harmless.
    const slashed = path.join(base, 'slash');
    const s = await startPongd(t, `${slashed}/`);
    t.is(s.path, path.join(slashed, 'pong'));
    await probeEcho(await RawClient.unix(t, s.path));
    // The 109-character RUNDIR (socket path longer than sun_path): see test/cli.test.ts.
  },

  // -------------------------------------------------------------------------------------
  // pong (the client)

  async pong_client_to_pongd(t, vector) {
    // Our pongd answers the recorded bytes.
    const env = await pongdEnv(t);
    await replay(vector.steps, { connect: env.connect });
    // Our pong puts the recorded bytes on the wire: one frame, then reads one reply.
    const recorder = await startFrameService(t, await tempRundir(t), 'pong');
    const recorded = await runCli(t, 'pong', [], { env: { RUNDIR: path.dirname(recorder.path) } });
    t.is(recorded.code, 0, recorded.stderr);
    t.deepEqual(recorder.frames.map((p) => frame(p).toString('hex')), [stepHex(vector, 'client->server')]);
    t.is(recorder.bytes, Buffer.from(stepHex(vector, 'client->server'), 'hex').length);
    // And against our pongd it prints the echo and exits 0.
    const run = await runCli(t, 'pong', [], { env: { RUNDIR: env.rundir } });
    t.is(run.code, 0, run.stderr);
    t.is(run.stdout, 'bounce me\n');
  },

  async pong_client_no_server(t) {
    // Socket file absent.
    const rundir = await tempRundir(t);
    mkdirSync(rundir, { recursive: true });
    const absent = await runCli(t, 'pong', [], { env: { RUNDIR: rundir } });
    t.not(absent.code, 0);
    t.true(absent.stderr.includes('pong') && absent.stderr.includes(path.join(rundir, 'pong')), absent.stderr);
    // Socket file stale (its pongd was SIGKILLed).
    const pongd = await startPongd(t, rundir);
    pongd.daemon.kill('SIGKILL');
    await pongd.daemon.waitExit(WAIT);
    t.true(lstatSync(pongd.path).isSocket());
    const stale = await runCli(t, 'pong', [], { env: { RUNDIR: rundir } });
    t.not(stale.code, 0);
    t.true(stale.stderr.includes('pong') && stale.stderr.includes(pongd.path), stale.stderr);
  },
};

// ---------------------------------------------------------------------------------------
// tcpd inbound

/** "identical bytes": the transcript replayed through tcpd; one teardown line logged. */
const tcpdIdentical: Script = async (t, vector) => {
  const env = await tcpdEnv(t);
  const clients = await replay(vector.steps, { connect: env.connect });
  const client = [...clients.values()][0]!;
  const line = await tcpdClosed(t, env, client);
  const frames = vector.steps.filter((s) => s.dir === 'tcpclient->tcpd').length - 1;
  t.is(line['messagesIn'], frames);
  t.is(line['messagesOut'], frames);
  await tcpdKeepsServing(t, env);
};

/** Refused without a byte (replayed), the refusal logged with `code`. */
const tcpdRefusal =
  (code: string): Script =>
  async (t, vector) => {
    const env = await tcpdEnv(t);
    const clients = await replay(vector.steps, { connect: env.connect });
    const client = [...clients.values()][0]!;
    t.is(client.received, 0, 'closed without a byte');
    await tcpdRefused(t, env, client, code);
    await tcpdKeepsServing(t, env);
  };

/**
 * Path traversal: a pongd really listens where the name would lead (`$RUNDIR/../run-other`);
 * ours refuses without a byte before building a path, and that pongd sees no connection.
 */
const tcpdTraversal =
  (name: (otherRundir: string) => string): Script =>
  async (t) => {
    const env = await tcpdEnv(t);
    const other = await startPongd(t, path.join(path.dirname(env.rundir), 'run-other'));
    const client = await env.connect();
    await client.write(Buffer.from(name(path.dirname(other.path))));
    await client.expectEof();
    await tcpdRefused(t, env, client, 'IPC_ERR_INVALID_SERVICE_NAME');
    t.deepEqual(other.daemon.log.filter(byMsg('connection')), [], 'the other pongd was not reached');
    await tcpdKeepsServing(t, env);
  };

/** Large payloads through tcpd to a framed echo service named `echo`. */
const tcpdLarge =
  (size: number): Script =>
  async (t, vector) => {
    const env = await tcpdEnv(t, 'echo');
    const message = frame(pattern(size, 13, 5));
    const recorded = vector.steps.find((s) => s.dir === 'tcpd->tcpclient' && s.hex !== '6f6b')?.hex;
    if (recorded !== undefined) t.is(message.subarray(0, recorded.length / 2).toString('hex'), recorded);
    const client = await env.session('echo');
    await client.write(message);
    await client.expect(message);
    await closeCleanly(client);
    await tcpdClosed(t, env, client);
    await tcpdKeepsServing(t, env, 'echo');
  };

Object.assign(scripts, {
  tcpd_in_basic: tcpdIdentical,
  tcpd_in_800_bytes: tcpdIdentical,
  tcpd_in_large_1000: tcpdLarge(1000),
  tcpd_in_large_30000: tcpdLarge(30_000),
  tcpd_in_large_65000: tcpdLarge(65_000),
  tcpd_in_large_99992: tcpdLarge(99_992),
  tcpd_in_unknown_service: tcpdRefusal('IPC_ERR_SERVICE_UNAVAILABLE'),
  tcpd_in_name_with_newline: tcpdRefusal('IPC_ERR_INVALID_SERVICE_NAME'),
  tcpd_in_empty_first_read: tcpdRefusal('IPC_ERR_HANDSHAKE_ABORTED'),
  tcpd_in_dotdot_service: tcpdTraversal(() => '../run-other/pong'),
  tcpd_in_dotdot_service2: tcpdTraversal((other) => `/../../../..${other}/pong`),

  async tcpd_in_client_disconnects(t: ExecutionContext, vector: Vector) {
    const env = await tcpdEnv(t);
    const clients = await replay(vector.steps, { connect: env.connect, close: 'destroy' });
    const client = [...clients.values()][0]!;
    // The service side closes too, and the teardown is logged once.
    await env.pongd.daemon.log.waitFor(byMsg('disconnection'), WAIT, 'pongd disconnection');
    const line = await tcpdClosed(t, env, client);
    t.is(line['endedBy'], 'client');
    t.is(line['messagesIn'], 1);
    t.is(line['messagesOut'], 1);
    await tcpdKeepsServing(t, env);
    t.is(env.tcpd.daemon.log.filter(byMsg('connection closed', client.peer)).length, 1, 'one teardown line');
  },

  async tcpd_in_idle_client_blocks(t: ExecutionContext) {
    const env = await tcpdEnv(t, 'pong', ['--listen', '127.0.0.1:0', '--allow', '*', '--handshake-timeout', '3000']);
    const silent = await env.connect();
    const other = await env.connect();
    await other.write('706f6e67');
    await other.expect('6f6b');
    t.false(silent.finished, 'the other client got ok while the silent one still waits');
    await other.write('0000000142');
    await other.expect('0000000142');
    // The silent client times out alone: closed without a byte, logged.
    await silent.expectEof(3000 + WAIT);
    await tcpdRefused(t, env, silent, 'IPC_ERR_HANDSHAKE_TIMEOUT');
    await probeEcho(other);
    await tcpdKeepsServing(t, env);
  },

  async tcpd_in_large_99993(t: ExecutionContext) {
    const env = await tcpdEnv(t, 'echo');
    const client = await env.session('echo');
    await client.write(frame(pattern(99_993, 13, 5))).catch(() => undefined);
    await client.expectEof();
    await tcpdClosed(t, env, client, 'IPC_ERR_PAYLOAD_TOO_LARGE');
    await tcpdKeepsServing(t, env, 'echo');
  },

  async tcpd_in_unframed(t: ExecutionContext, vector: Vector) {
    const env = await tcpdEnv(t);
    const other = await env.session();
    const client = await env.session();
    await client.write(stepHex(vector, 'tcpclient->tcpd', 1)).catch(() => undefined);
    await client.expectEof();
    await tcpdClosed(t, env, client, 'IPC_ERR_PAYLOAD_TOO_LARGE');
    await probeEcho(other);
    await tcpdKeepsServing(t, env);
  },

  async tcpd_in_length_gt_data(t: ExecutionContext, vector: Vector) {
    const env = await tcpdEnv(t);
    const first = Buffer.from(stepHex(vector, 'tcpclient->tcpd', 1), 'hex');
    const rest = pattern(first.readUInt32BE(0) - (first.length - 4), 3, 1);
    const client = await env.session();
    await client.write(first);
    // tcpd keeps serving everyone while that frame waits for its rest.
    await tcpdKeepsServing(t, env);
    await client.write(rest);
    await client.expect(Buffer.concat([first, rest]));
    await closeCleanly(client);
    t.is(client.received, 2 + first.length + rest.length, 'ok, then the frame once, whole');
  },

  async tcpd_in_short_write(t: ExecutionContext, vector: Vector) {
    const env = await tcpdEnv(t);
    const client = await env.session();
    await client.write(stepHex(vector, 'tcpclient->tcpd', 1));
    await tcpdKeepsServing(t, env);
    client.endWrite();
    await client.expectEof();
    await tcpdClosed(t, env, client, 'IPC_ERR_TRUNCATED_FRAME');
    await tcpdKeepsServing(t, env);
  },

  async tcpd_in_split_message(t: ExecutionContext, vector: Vector) {
    const env = await tcpdEnv(t);
    const parts = vector.steps.filter((s) => s.dir === 'tcpclient->tcpd').slice(1);
    t.is(parts.length, 2);
    const client = await env.session();
    await client.write(parts[0]!.hex!);
    await pause(50);
    await client.write(parts[1]!.hex!);
    await client.expect(BOUNCE);
    await closeCleanly(client);
    const line = await tcpdClosed(t, env, client);
    t.is(line['messagesIn'], 1);
    await tcpdKeepsServing(t, env);
  },

  async tcpd_in_two_messages_one_write(t: ExecutionContext, vector: Vector) {
    const env = await tcpdEnv(t);
    const client = await env.session();
    await client.write(stepHex(vector, 'tcpclient->tcpd', 1));
    await client.expect(frame('abc'));
    await client.expect(frame('def'));
    await closeCleanly(client);
    const line = await tcpdClosed(t, env, client);
    t.is(line['messagesIn'], 2);
    t.is(line['messagesOut'], 2);
  },

  async tcpd_in_name_and_message_one_write(t: ExecutionContext, vector: Vector) {
    const env = await tcpdEnv(t);
    const client = await env.connect();
    await client.write(stepHex(vector, 'tcpclient->tcpd'));
    await client.expect('6f6b');
    await client.expect(BOUNCE);
    await closeCleanly(client);
    const line = await tcpdClosed(t, env, client);
    t.is(line['messagesIn'], 1);
  },

  async tcpd_in_zero_length(t: ExecutionContext, vector: Vector) {
    const env = await tcpdEnv(t);
    const client = await env.session();
    await client.write(stepHex(vector, 'tcpclient->tcpd', 1));
    await client.expect('00000000');
    await closeCleanly(client);
    const line = await tcpdClosed(t, env, client);
    t.is(line['messagesIn'], 1);
    t.is(line['messagesOut'], 1);
  },

  async tcpd_in_service_sends_two_frames_at_once(t: ExecutionContext, vector: Vector) {
    const rundir = await tempRundir(t);
    // The recording's service answered each frame with two frames in one write.
    const service = await startFrameService(t, rundir, 'echo', (payload) =>
      Buffer.concat([frame(payload), frame('second')]),
    );
    const tcpd = await startTcpd(t, rundir);
    const client = await tcpSession(t, tcpd.port, 'echo');
    await client.write(stepHex(vector, 'tcpclient->tcpd', 1));
    await client.expect(frame('abc'));
    await client.expect(frame('second'));
    await closeCleanly(client);
    t.is(service.frames.length, 1);
  },

  async tcpd_in_pongd_killed(t: ExecutionContext) {
    const env = await tcpdEnv(t);
    const client = await env.session();
    await client.write(BOUNCE);
    await client.expect(BOUNCE);
    env.pongd.daemon.kill('SIGKILL');
    await env.pongd.daemon.waitExit(WAIT);
    // The TCP client gets EOF; the teardown is logged; tcpd keeps serving.
    t.is(await client.expectEof(), 'eof');
    const line = await tcpdClosed(t, env, client);
    t.is(line['endedBy'], 'service');
    const restarted = await startPongd(t, env.rundir);
    t.is(restarted.path, env.pongd.path);
    await tcpdKeepsServing(t, env);
  },
});

// ---------------------------------------------------------------------------------------

const index = loadIndex();

test('INDEX.json lists every transcript on disk and every script has its scenario', (t) => {
  const files = readdirSync(vectorsDir()).filter((f) => f.endsWith('.json') && f !== 'INDEX.json');
  t.deepEqual(index.map((e) => e.file).sort(), files.sort());
  const scenarios = new Set(index.map((e) => e.scenario));
  t.deepEqual(Object.keys(scripts).filter((s) => !scenarios.has(s)), []);
});

test('every outbound transcript is replayed by test/chain.test.ts', (t) => {
  const chainTests = readFileSync(new URL('./chain.test.ts', import.meta.url), 'utf8');
  const outbound = index.filter((e) => LATER.test(e.scenario)).map((e) => e.scenario);
  t.true(outbound.length > 0);
  t.deepEqual(outbound.filter((scenario) => !chainTests.includes(scenario)), []);
});

for (const entry of index) {
  const title = `${entry.scenario}: ${entry.ours}`;
  if (LATER.test(entry.scenario)) continue;
  const script = scripts[entry.scenario];
  if (script === undefined) {
    test(title, (t) => t.fail(`no script replays ${entry.file}`));
    continue;
  }
  test(title, (t) => slot(() => script(t, loadVector(entry.file))));
}

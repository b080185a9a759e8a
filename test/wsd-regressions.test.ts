/**
 * wsd regressions from the code review, spawned from dist/ like test/wsd.test.ts (whose
 * helpers they share): aborted static downloads release their file, a page request is
 * not a stalled upgrade, and a wsd without --origin says so at startup.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdirSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { ErrorCode } from '../src/errors.js';
import { WAIT, sleep, slot, startPongd, startWsd, tempDir, type Line } from './helpers/ws-procs.js';
import { RawClient } from './helpers/ws-raw.js';
import { openWs } from './helpers/ws-client.js';
import { httpGet } from './helpers/ws-fixtures.js';

const MiB = 1024 * 1024;

const refusedBy = (peer: string) => (l: Line) => l.msg === 'connection refused' && l['peer'] === peer;

/** How many descriptors of process `pid` are open on `file` (from /proc/PID/fd). */
function descriptorsOn(pid: number, file: string): number {
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) === file) count++;
    } catch {
      // closed while listing
    }
  }
  return count;
}

/** Polls `condition` every 20 ms for at most `timeout` ms; resolves whether it held. */
async function eventually(condition: () => boolean, timeout = WAIT): Promise<boolean> {
  const deadline = performance.now() + timeout;
  while (!condition()) {
    if (performance.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/**
 * Starts downloading `urlPath` and stops reading once the first bytes came (wsd then
 * waits with the file open); resolves the socket and the first bytes.
 */
async function stalledDownload(t: ExecutionContext, port: number, urlPath: string): Promise<{ socket: net.Socket; first: Buffer }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  t.teardown(() => socket.destroy());
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  socket.write(`GET ${urlPath} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`GET ${urlPath}: no byte within ${WAIT} ms`)), WAIT);
  });
  try {
    const [first] = (await Promise.race([once(socket, 'data'), late])) as [Buffer];
    socket.pause();
    return { socket, first };
  } finally {
    clearTimeout(timer);
  }
}

// Static files

test('aborted downloads of a large static file leave no descriptor of it open in wsd', async (t) => {
  await slot(t);
  const dir = await tempDir(t);
  const site = path.join(dir, 'site');
  mkdirSync(site);
  const big = path.join(site, 'big.bin');
  writeFileSync(big, Buffer.alloc(20 * MiB, 0x61));
  writeFileSync(path.join(site, 'small.txt'), 'still served\n');
  const { proc, port } = await startWsd(t, path.join(dir, 'run'), ['--allow', 'pong', '--static', site]);

  const downloads = [];
  for (let i = 0; i < 20; i++) {
    const download = await stalledDownload(t, port, '/big.bin');
    t.regex(download.first.toString('latin1'), /^HTTP\/1\.1 200 /, `download ${i}`);
    downloads.push(download);
  }
  // The method sees them: each stalled download holds the file open.
  t.true(await eventually(() => descriptorsOn(proc.pid, big) === 20), `open: ${descriptorsOn(proc.pid, big)}`);
  for (const { socket } of downloads) socket.destroy();
  const released = await eventually(() => descriptorsOn(proc.pid, big) === 0);
  t.true(released, `${descriptorsOn(proc.pid, big)} descriptors of ${big} still open ${WAIT} ms after the aborts`);
  t.true(proc.running);
  const small = await httpGet(port, '/small.txt');
  t.is(small.status, 200);
  t.is(small.body, 'still served\n');
});

// The page, then a WebSocket

test('a page request is not logged as a handshake timeout, and a WebSocket on a new connection afterwards echoes', async (t) => {
  await slot(t);
  const dir = await tempDir(t);
  const rundir = path.join(dir, 'run');
  mkdirSync(rundir, { mode: 0o700 });
  const HANDSHAKE = 300;
  const [, wsd] = await Promise.all([startPongd(t, rundir), startWsd(t, rundir, ['--allow', 'pong', '--handshake-timeout', String(HANDSHAKE)])]);
  const agent = new http.Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  const page = await new Promise<{ socket: net.Socket; peer: string; body: string }>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: wsd.port, path: '/', agent, timeout: WAIT }, (res) => {
        t.is(res.statusCode, 200);
        const socket = res.socket; // kept by the agent, idle, once the response ended
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ socket, peer: `127.0.0.1:${socket.localPort}`, body }));
      })
      .on('error', reject);
  });
  t.regex(page.body, /app\.js/);
  // The page's connection stays idle past the upgrade deadline, as a browser's does.
  await sleep(3 * HANDSHAKE);
  const client = await openWs(t, `ws://127.0.0.1:${wsd.port}/pong`);
  t.is((await client.echo('after the page')).data.toString(), 'after the page');
  client.ws.close();
  page.socket.destroy();
  // A refusal logged after anything about the page's connection (lines come in order).
  const marker = await RawClient.connect(wsd.port);
  t.teardown(() => marker.destroy());
  t.is((await marker.upgrade('/..')).status, 400);
  await wsd.proc.waitFor(refusedBy(marker.peer), 'the marker refusal');
  t.deepEqual(wsd.proc.filter(refusedBy(page.peer)), []);
  t.deepEqual(
    wsd.proc.filter((l) => l['code'] === ErrorCode.HANDSHAKE_TIMEOUT),
    [],
  );
});

// Origins

const originWarning = (l: Line) => l['level'] === 40 && /--origin/.test(String(l.msg));

test('wsd warns at startup when no --origin is given', async (t) => {
  await slot(t);
  const dir = await tempDir(t);
  const { proc } = await startWsd(t, path.join(dir, 'run'), ['--allow', 'pong']);
  // Logged before 'listening' (lines come in order).
  const warnings = proc.filter(originWarning);
  t.is(warnings.length, 1, proc.dump());
  t.regex(String(warnings[0]!.msg), /any web page/);
});

test('wsd does not warn about origins when --origin is given', async (t) => {
  await slot(t);
  const dir = await tempDir(t);
  const { proc } = await startWsd(t, path.join(dir, 'run'), ['--allow', 'pong', '--origin', 'https://app.example']);
  t.deepEqual(proc.filter(originWarning), []);
});

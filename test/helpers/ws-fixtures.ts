/**
 * Fixtures of the wsd tests: a raw Unix service (to misbehave or measure), development
 * certificates, plain HTTP GETs, numbered messages and a wsd memory sampler for the
 * backpressure tests, and Debian's python3-websockets client (test/fixtures/ws_client.py).
 */
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { createCa, createServerCertificate } from '../../src/certs.js';
import { ROOT, WAIT, rssBytes, sleep } from './ws-procs.js';
import { RawClient } from './ws-raw.js';

/** Debian's python3, where python3-websockets installs. */
export const PYTHON = '/usr/bin/python3';
const PY_CLIENT = path.join(ROOT, 'test', 'fixtures', 'ws_client.py');

/** Serves `name` in `rundir` with a raw Unix server; `onConnection` gets each client. */
export async function rawService(
  t: ExecutionContext,
  rundir: string,
  name: string,
  onConnection: (socket: net.Socket) => void,
): Promise<net.Server> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    onConnection(socket);
  });
  server.listen(path.join(rundir, name));
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return server;
}

/** A development CA and a server certificate (SAN localhost, 127.0.0.1, ::1) written under `dir`. */
export function devCertificates(dir: string): {
  ca: { cert: string; key: string };
  files: { ca: string; cert: string; key: string };
} {
  const ca = createCa();
  const server = createServerCertificate(ca);
  const files = { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server-key.pem') };
  writeFileSync(files.ca, ca.cert);
  writeFileSync(files.cert, server.cert);
  writeFileSync(files.key, server.key, { mode: 0o600 });
  return { ca, files };
}

/** A plain HTTP GET; resolves status, headers and body. */
export function httpGet(
  port: number,
  urlPath: string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: WAIT }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath}: no response within ${WAIT} ms`)));
    req.on('error', reject);
  });
}

/** A raw GET (path sent as given) and the response's status and body. */
export async function rawGet(port: number, urlPath: string): Promise<{ status: number; body: string }> {
  const raw = await RawClient.connect(port);
  try {
    raw.write(`GET ${urlPath} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    const head = await raw.readHead();
    const length = Number(head.headers['content-length'] ?? 0);
    return { status: head.status, body: (await raw.readBytes(length)).toString('utf8') };
  } finally {
    raw.destroy();
  }
}

/** A message of `size` bytes starting with its sequence number. */
export function numbered(seq: number, size: number): Buffer {
  const payload = Buffer.alloc(size, seq & 0xff);
  payload.writeUInt32BE(seq, 0);
  return payload;
}

/** Samples wsd's RSS every 100 ms while `run` runs; resolves the peak. */
export async function peakRss(pid: number, run: () => Promise<void>): Promise<number> {
  let peak = rssBytes(pid);
  let running = true;
  const sampling = (async () => {
    while (running) {
      peak = Math.max(peak, rssBytes(pid));
      await sleep(100);
    }
  })();
  try {
    await run();
  } finally {
    running = false;
    await sampling;
  }
  return Math.max(peak, rssBytes(pid));
}

let pythonWebsockets: Promise<boolean> | null = null;

/** True when Debian's python3 can import websockets (asked once). */
function hasPythonWebsockets(): Promise<boolean> {
  pythonWebsockets ??= existsSync(PYTHON)
    ? new Promise((resolve) => {
        const probe = spawn(PYTHON, ['-c', 'import websockets'], { stdio: 'ignore' });
        probe.on('error', () => resolve(false));
        probe.on('close', (code) => resolve(code === 0));
      })
    : Promise.resolve(false);
  return pythonWebsockets;
}

/** Runs test/fixtures/ws_client.py; resolves its exit code and its JSON line. */
export async function pythonClient(
  t: ExecutionContext,
  args: readonly string[],
): Promise<{ code: number | null; record: Record<string, unknown> }> {
  if (!(await hasPythonWebsockets())) {
    throw new Error(
      `${PYTHON} cannot import websockets: run scripts/install-system-deps.sh (apt-get install python3-websockets)`,
    );
  }
  const child = spawn(PYTHON, [PY_CLIENT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), 3 * WAIT);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  const line = stdout.trim().split('\n').pop() ?? '';
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`ws_client.py printed no JSON (exit ${code}): stdout ${JSON.stringify(stdout)} stderr ${stderr}`);
  }
  return { code, record };
}

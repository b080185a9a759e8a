import test from 'ava';
import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { serveStatic } from '../gateways/static-files.js';
import { openFds } from './helpers/hostile.js';
import { until, within } from './helpers/wait.js';

const INDEX = '<!doctype html><title>page</title>\n';
const OUTSIDE_SECRET = 'outside-secret: must never be served\n';
const BIG_SIZE = 16 * 1024 * 1024;

/**
 * A temp tree:
 *   outside.txt, outdir/secret.txt          (outside the static root)
 *   www/index.html, www/big.bin, www/.secret, www/.git/config,
 *   www/sub/index.html, www/sub/.hidden, www/empty/, www/fifo
 *   www/leak -> ../outside.txt, www/passwd -> /etc/passwd, www/outlink -> ../outdir
 *   www/alias.html -> index.html, www/pages -> sub  (inside, pointing inside)
 *   www/exposed -> .secret                   (inside, pointing at a dotfile)
 *   rootlink -> www                          (the root reached through a symlink)
 */
function tree(t: ExecutionContext): { base: string; root: string } {
  const base = mkdtempSync(path.join(os.tmpdir(), 'static-files-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const root = path.join(base, 'www');
  mkdirSync(path.join(root, 'sub'), { recursive: true });
  mkdirSync(path.join(root, '.git'));
  mkdirSync(path.join(root, 'empty'));
  mkdirSync(path.join(base, 'outdir'));
  writeFileSync(path.join(base, 'outside.txt'), OUTSIDE_SECRET);
  writeFileSync(path.join(base, 'outdir', 'secret.txt'), OUTSIDE_SECRET);
  writeFileSync(path.join(root, 'index.html'), INDEX);
  writeFileSync(path.join(root, '.secret'), 'dotfile secret\n');
  writeFileSync(path.join(root, '.git', 'config'), '[core]\n');
  writeFileSync(path.join(root, 'sub', 'index.html'), 'sub index\n');
  writeFileSync(path.join(root, 'sub', '.hidden'), 'hidden\n');
  writeFileSync(path.join(root, 'style.css'), 'body{}\n');
  symlinkSync('../outside.txt', path.join(root, 'leak'));
  symlinkSync('/etc/passwd', path.join(root, 'passwd'));
  symlinkSync('../outdir', path.join(root, 'outlink'));
  symlinkSync('index.html', path.join(root, 'alias.html'));
  symlinkSync('sub', path.join(root, 'pages'));
  symlinkSync('.secret', path.join(root, 'exposed'));
  symlinkSync('www', path.join(base, 'rootlink'));
  return { base, root };
}

/** A real HTTP server on 127.0.0.1:0 answering every request with serveStatic(dir). */
async function serve(t: ExecutionContext, dir: string): Promise<number> {
  const server = http.createServer((req, res) => serveStatic(dir, req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as AddressInfo).port;
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request on a fresh connection; `target` is sent as written (no normalisation). */
function request(port: number, target: string, method = 'GET'): Promise<Reply> {
  return within(
    new Promise<Reply>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: target, method, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    }),
    `${method} ${target}`,
  );
}

/** Descriptors of this process open on `file` (Linux /proc). */
function fdsOn(file: string): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === file) n++;
    } catch {
      // Closed between readdir and readlink (the readdir's own descriptor among others).
    }
  }
  return n;
}

// Serial: it compares this process's descriptor count, which concurrent tests would move.
test.serial('an aborted download of a large file leaves no descriptor open', async (t) => {
  const { root } = tree(t);
  const big = path.join(root, 'big.bin');
  writeFileSync(big, Buffer.alloc(BIG_SIZE, 0x61));
  const port = await serve(t, root);
  const baseline = openFds(process.pid);
  // Node closes a FileHandle dropped without close() when it is collected, and warns: that
  // would bring the count back too, so a close by the garbage collector counts as a leak.
  const collectedHandles: string[] = [];
  const onWarning = (w: Error) => {
    if (/garbage collection/i.test(w.message)) collectedHandles.push(w.message);
  };
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));

  let received = 0;
  const client = http.request({ host: '127.0.0.1', port, path: '/big.bin', agent: false });
  const firstChunk = within(
    new Promise<http.IncomingMessage>((resolve, reject) => {
      client.on('response', (res) => {
        res.once('data', (c: Buffer) => {
          received += c.length;
          res.pause();
          resolve(res);
        });
      });
      client.on('error', reject);
    }),
    'the first chunk of big.bin',
  );
  client.end();
  const res = await firstChunk;
  t.is(res.statusCode, 200);
  t.is(res.headers['content-length'], String(BIG_SIZE));
  // The server is blocked on backpressure mid-file: its descriptor on big.bin is open now,
  // which shows the count below can see it.
  t.is(fdsOn(big), 1, 'the file is open while the download is in progress');
  t.true(received < BIG_SIZE);

  client.destroy();
  await until(() => fdsOn(big) === 0, 'the descriptor on big.bin to close').catch(() => undefined);
  t.is(fdsOn(big), 0, 'no descriptor left on big.bin');
  await until(() => openFds(process.pid) === baseline, 'descriptors back to the baseline').catch(() => undefined);
  t.is(openFds(process.pid), baseline, '/proc/self/fd back to its count before the download');
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(collectedHandles, [], 'the descriptor was closed by the responder, not by the garbage collector');
});

test('serves index.html for / and by name, with its type and nosniff', async (t) => {
  const { root } = tree(t);
  const port = await serve(t, root);
  for (const target of ['/', '/index.html', '/index.html?x=1']) {
    const r = await request(port, target);
    t.is(r.status, 200, target);
    t.is(r.body, INDEX, target);
    t.is(r.headers['content-type'], 'text/html; charset=utf-8', target);
    t.is(r.headers['content-length'], String(Buffer.byteLength(INDEX)), target);
    t.is(r.headers['x-content-type-options'], 'nosniff', target);
  }
  const css = await request(port, '/style.css');
  t.is(css.status, 200);
  t.is(css.headers['content-type'], 'text/css; charset=utf-8');
});

test('refuses symlinks whose target is outside the root', async (t) => {
  const { root } = tree(t);
  const port = await serve(t, root);
  for (const target of ['/leak', '/passwd', '/outlink/secret.txt', '/outlink/', '/%6ceak']) {
    const r = await request(port, target);
    t.is(r.status, 404, target);
    t.false(r.body.includes('outside-secret'), target);
    t.false(r.body.includes('root:'), target);
  }
});

test('serves symlinks inside the root that point inside it', async (t) => {
  const { root } = tree(t);
  const port = await serve(t, root);
  const alias = await request(port, '/alias.html');
  t.is(alias.status, 200);
  t.is(alias.body, INDEX);
  const dirLink = await request(port, '/pages/index.html');
  t.is(dirLink.status, 200);
  t.is(dirLink.body, 'sub index\n');
});

test('refuses a symlink inside the root that points at a dotfile', async (t) => {
  const { root } = tree(t);
  const port = await serve(t, root);
  const r = await request(port, '/exposed');
  t.is(r.status, 404);
  t.false(r.body.includes('secret'));
});

test('serves a file of several megabytes whole', async (t) => {
  const { root } = tree(t);
  // Bytes that depend on their offset, so a chunk sent twice or skipped shows.
  const content = Buffer.alloc(3 * 1024 * 1024 + 7);
  for (let i = 0; i < content.length; i++) content[i] = (i * 31) & 0xff;
  writeFileSync(path.join(root, 'data.bin'), content);
  const port = await serve(t, root);
  const body = await within(
    new Promise<Buffer>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path: '/data.bin', agent: false }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve(Buffer.concat(chunks)));
          res.on('error', reject);
        })
        .on('error', reject);
    }),
    'data.bin',
  );
  t.true(body.equals(content));
});

test('serves a root given through a symlink', async (t) => {
  const { base } = tree(t);
  const port = await serve(t, path.join(base, 'rootlink'));
  const r = await request(port, '/');
  t.is(r.status, 200);
  t.is(r.body, INDEX);
  t.is((await request(port, '/leak')).status, 404);
});

test('refuses any path with a segment starting with a dot, encoded or not', async (t) => {
  const { root } = tree(t);
  const port = await serve(t, root);
  const targets = [
    '/.secret',
    '/.git/config',
    '/%2esecret',
    '/%2Esecret',
    '/%2egit/config',
    '/.git%2fconfig',
    '/sub/.hidden',
    '/sub/%2ehidden',
    '/pages/.hidden',
    '/..',
    '/../outside.txt',
    '/%2e%2e/outside.txt',
    '/%2E%2E%2Foutside.txt',
    '/sub/../index.html',
    '/sub/%2e%2e/.secret',
    '/./index.html',
    '/%2e/index.html',
  ];
  for (const target of targets) {
    const r = await request(port, target);
    t.is(r.status, 404, target);
    t.false(r.body.includes('secret'), target);
  }
});

test('refuses directories without an index, bad encodings and NUL', async (t) => {
  const { root } = tree(t);
  const port = await serve(t, root);
  t.is((await request(port, '/sub')).status, 404, 'a directory named without its slash');
  t.is((await request(port, '/empty/')).status, 404, 'a directory without index.html');
  t.is((await request(port, '/sub/')).body, 'sub index\n', 'a directory with index.html');
  t.is((await request(port, '/missing.html')).status, 404);
  t.is((await request(port, '/%zz')).status, 400);
  t.is((await request(port, '/index.html%00.txt')).status, 404);
});

test('refuses a FIFO without hanging on it', async (t) => {
  const { root } = tree(t);
  // A FIFO with no writer: open(2) without O_NONBLOCK would wait for one forever.
  execFileSync('mkfifo', [path.join(root, 'fifo')]);
  const port = await serve(t, root);
  t.is((await request(port, '/fifo')).status, 404);
});

test('answers HEAD with the headers of GET and no body', async (t) => {
  const { root } = tree(t);
  const port = await serve(t, root);
  const r = await request(port, '/index.html', 'HEAD');
  t.is(r.status, 200);
  t.is(r.body, '');
  t.is(r.headers['content-length'], String(Buffer.byteLength(INDEX)));
  t.is(r.headers['content-type'], 'text/html; charset=utf-8');
  t.is(r.headers['x-content-type-options'], 'nosniff');
  t.is((await request(port, '/.secret', 'HEAD')).status, 404);
});

test('answers other methods with 405 and the allowed ones', async (t) => {
  const { root } = tree(t);
  const port = await serve(t, root);
  for (const method of ['POST', 'PUT', 'DELETE']) {
    const r = await request(port, '/index.html', method);
    t.is(r.status, 405, method);
    t.is(r.headers['allow'], 'GET, HEAD', method);
  }
});

test('answers 404 for every file when the root does not exist', async (t) => {
  const { base } = tree(t);
  const port = await serve(t, path.join(base, 'nowhere'));
  t.is((await request(port, '/index.html')).status, 404);
  t.is((await request(port, '/')).status, 404);
});

/**
 * A minimal static file responder for wsd's page: GET/HEAD only, regular files under one
 * directory, a few content types, no directory listings.
 *
 * What it refuses (404): any request path with a segment starting with `.` (dotfiles,
 * `.git/`, `..`, also when percent-encoded), and any file whose real path (symlinks
 * resolved) is not inside the real path of the directory, so a symlink out of it is not
 * followed; symlinks inside that point inside stay served. Every filesystem call is
 * asynchronous, and the file is opened once, checked with fstat on that descriptor and
 * streamed from it: no window between checking a file and reading it.
 */
import { constants } from 'node:fs';
import { open, realpath } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream';
import type http from 'node:http';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
};

// O_NOFOLLOW: the real path was checked, so its last component must not have become a
// symlink since. O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever
// (it is refused after fstat; regular files ignore the flag).
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** Real path of each served directory, resolved once (wsd serves one directory). */
const realRoots = new Map<string, Promise<string>>();

function realRoot(dir: string): Promise<string> {
  let root = realRoots.get(dir);
  if (root === undefined) {
    root = realpath(dir);
    realRoots.set(dir, root);
    // A directory missing now is looked up again on the next request, not cached as missing.
    root.catch(() => {
      if (realRoots.get(dir) === root) realRoots.delete(dir);
    });
  }
  return root;
}

function send(res: http.ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) }).end(text);
}

function notFound(res: http.ServerResponse): void {
  send(res, 404, 'not found\n');
}

/** True when some segment of `relative` is hidden (`.x`, `.`, `..`). */
function hasDotSegment(relative: string, separator: string): boolean {
  return relative.split(separator).some((segment) => segment.startsWith('.'));
}

/**
 * Answers `req` from the files under `dir`: 200 with the file, 404 for anything refused
 * or missing, 400 for a malformed percent-encoding, 405 for methods other than GET/HEAD.
 * Returns at once; the answer is sent asynchronously.
 */
export function serveStatic(dir: string, req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    send(res, 405, 'method not allowed\n');
    return;
  }
  let pathname: string;
  try {
    pathname = decodeURIComponent((req.url ?? '/').split('?')[0]!);
  } catch {
    send(res, 400, 'bad path\n');
    return;
  }
  // Checked after decoding, so `%2e%2e` and `%2F` count as what they spell.
  if (!pathname.startsWith('/') || pathname.includes('\0') || hasDotSegment(pathname, '/')) {
    notFound(res);
    return;
  }
  if (pathname.endsWith('/')) pathname += 'index.html';
  respond(dir, pathname.slice(1), req, res).catch((err: Error) => {
    if (!res.headersSent) send(res, 500, 'internal error\n');
    else res.destroy(err);
  });
}

async function respond(dir: string, relative: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  let root: string;
  let real: string;
  try {
    root = await realRoot(dir);
    real = await realpath(path.join(root, relative));
  } catch {
    notFound(res);
    return;
  }
  const inside = path.relative(root, real);
  // Outside the real root (a symlink leading out), the root itself, or a hidden entry
  // reached through a symlink inside: all refused.
  if (inside === '' || path.isAbsolute(inside) || hasDotSegment(inside, path.sep)) {
    notFound(res);
    return;
  }
  let handle: FileHandle;
  try {
    handle = await open(real, OPEN_FLAGS);
  } catch {
    notFound(res);
    return;
  }
  let handedOver = false;
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) {
      notFound(res);
      return;
    }
    if (res.destroyed) return;
    res.writeHead(200, {
      'content-type': TYPES[path.extname(relative)] ?? 'application/octet-stream',
      'content-length': stat.size,
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
    });
    if (req.method === 'HEAD' || stat.size === 0) {
      res.end();
      return;
    }
    // The size fstat gave is what content-length announced: never send more.
    const body = handle.createReadStream({ start: 0, end: stat.size - 1 });
    handedOver = true;
    // pipeline: an aborted download destroys the file stream, which closes the descriptor.
    pipeline(body, res, () => {});
  } finally {
    if (!handedOver) await handle.close();
  }
}

/**
 * A minimal static file responder for wsd's page: GET/HEAD only, files under one
 * directory (no traversal out of it), a few content types, no directory listings.
 */
import { createReadStream, statSync } from 'node:fs';
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

function send(res: http.ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) }).end(text);
}

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
  if (pathname.endsWith('/')) pathname += 'index.html';
  const root = path.resolve(dir);
  const file = path.resolve(root, `.${pathname}`);
  if (!file.startsWith(root + path.sep) || pathname.includes('\0')) {
    send(res, 404, 'not found\n');
    return;
  }
  let size: number;
  try {
    const stat = statSync(file);
    if (!stat.isFile()) throw new Error('not a file');
    size = stat.size;
  } catch {
    send(res, 404, 'not found\n');
    return;
  }
  res.writeHead(200, {
    'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'content-length': size,
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
  });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  // pipeline: an aborted download destroys the file stream too (no descriptor leak).
  pipeline(createReadStream(file), res, () => {});
}

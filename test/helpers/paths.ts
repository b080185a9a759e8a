/**
 * Where things are: the repository root (found from this file, whether run from test/
 * through tsx or compiled under dist/test/), the compiled CLIs, the shared vectors.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function findRepoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'gateways'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error('cannot find the repository root from test/helpers');
}

/** The repository root (holds package.json, gateways/, dist/). */
export const REPO_ROOT = findRepoRoot();

/** The daemons and clients this project ships, compiled by `npm run build`. */
export type CliName = 'pongd' | 'pong' | 'tcpd' | 'tlsd' | 'wsd' | 'ipcd' | 'gatewayd';

/** `dist/gateways/cli/<name>.js`. */
export function cliPath(name: CliName): string {
  return path.join(REPO_ROOT, 'dist', 'gateways', 'cli', `${name}.js`);
}

/**
 * The directory of the recorded transcripts: `$IPC_SHARED` (the shared directory, or its
 * vectors/ directory itself), else `../shared/vectors` relative to the repository root.
 */
export function vectorsDir(): string {
  const shared = process.env['IPC_SHARED'] || path.join(REPO_ROOT, '..', 'shared');
  return existsSync(path.join(shared, 'INDEX.json')) ? shared : path.join(shared, 'vectors');
}

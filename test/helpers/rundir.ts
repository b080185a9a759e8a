/**
 * A private temporary directory per test, removed when the test ends. Paths stay short:
 * a Unix socket path must fit in 108 bytes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ExecutionContext } from 'ava';

/** Creates an empty directory under the system temp directory; removed at teardown. */
export async function tempDir(t: ExecutionContext, prefix = 'ipct-'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A run directory for one test: `<temp>/run`, not created yet (the daemon under test
 * creates it, so its mode can be checked).
 */
export async function tempRundir(t: ExecutionContext): Promise<string> {
  return path.join(await tempDir(t), 'run');
}

/** Like {@link tempDir}, synchronously, with a prefix naming the suite. */
export function tempDirSync(t: { teardown(fn: () => void): void }, prefix = 'ipct-'): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

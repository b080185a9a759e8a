/**
 * gatewayd --watch-config: a change to the configuration file triggers the same reload
 * as SIGHUP. Editors and config managers rarely write a file in place: most write a new
 * file and rename it over the old one (vim, sed -i, ansible, a Kubernetes ConfigMap's
 * symlink swap), which ends a watch on the old inode. So the directory is watched (it
 * sees the rename) and the file itself (it sees writes in place, through a symlink too),
 * the file's watch is re-armed after every change, and bursts (an editor's several
 * writes) are debounced into one reload. A file whose text did not change (touch, a
 * rename of the same content) does not reload.
 */
import { watch, readFileSync, type FSWatcher } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Logger } from '../src/log.js';

/** Quiet time after the last event before reloading (an editor's save is several events). */
export const WATCH_DEBOUNCE_MS = 200;

export interface ConfigWatcher {
  close(): void;
}

/**
 * Calls `reload` (debounced) when `file` changes. `reload` itself refuses a broken file,
 * as a SIGHUP does; this only decides when to call it.
 */
export function watchConfig(file: string, reload: () => void, logger: Logger, debounceMs = WATCH_DEBOUNCE_MS): ConfigWatcher {
  const dir = path.dirname(path.resolve(file));
  const base = path.basename(file);
  let lastText = textOf(file);
  let timer: NodeJS.Timeout | undefined;
  let fileWatcher: FSWatcher | undefined;
  let closed = false;

  const fire = () => {
    timer = undefined;
    if (closed) return;
    armFileWatch(); // the file may be a new inode now
    const text = textOf(file);
    if (text !== null && text === lastText) {
      logger.debug({ file }, 'configuration file touched, text unchanged: no reload');
      return;
    }
    lastText = text;
    logger.info({ file }, 'configuration file changed: reloading');
    reload();
  };
  const onEvent = () => {
    if (closed) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(fire, debounceMs);
  };
  const armFileWatch = () => {
    fileWatcher?.close();
    fileWatcher = undefined;
    try {
      fileWatcher = watch(file, { persistent: false }, onEvent);
      fileWatcher.on('error', () => undefined); // the file went away: the directory watch sees its return
    } catch {
      // Missing right now (between an unlink and a rename): the directory watch covers it.
    }
  };

  const dirWatcher = watch(dir, { persistent: false }, (_event, name) => {
    if (name === null || name === base) onEvent();
  });
  dirWatcher.on('error', (err) => logger.warn({ err, dir }, 'watch-config: the directory watch failed; SIGHUP still reloads'));
  armFileWatch();
  logger.info({ file, debounceMs }, 'watching the configuration file');

  return {
    close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      dirWatcher.close();
      fileWatcher?.close();
    },
  };
}

/** A digest of the file's text, null when it cannot be read (that reload will say why). */
function textOf(file: string): string | null {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    return null;
  }
}

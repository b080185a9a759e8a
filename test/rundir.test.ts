import test, { type ExecutionContext } from 'ava';
import { chmodSync, chownSync, existsSync, lchownSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  DEFAULT_RUNDIR,
  MAX_SERVICE_NAME_LENGTH,
  assertServiceName,
  checkRundir,
  ensureRundir,
  resolveRundir,
  serviceNameProblem,
  servicePath,
} from '../src/rundir.js';
import { ErrorCode, IpcError } from '../src/errors.js';
import { Context } from '../src/context.js';
import { tempDirSync } from './helpers/rundir.js';
import { runCli, START_TIMEOUT } from './helpers/daemon.js';

/** Runs `fn` with the process umask set to `mask`, restoring it afterwards. */
function withUmask<T>(mask: number, fn: () => T): T {
  const previous = process.umask(mask);
  try {
    return fn();
  } finally {
    process.umask(previous);
  }
}

function modeOf(file: string): number {
  return statSync(file).mode & 0o7777;
}

const unusable = { instanceOf: IpcError, code: ErrorCode.RUNDIR_UNUSABLE } as const;
const invalidName = { instanceOf: IpcError, code: ErrorCode.INVALID_SERVICE_NAME } as const;

// Service names

const goodNames = ['pong', 'tcp', 'ipc', 'ws', 'wss', 'my-service_2', 'a.b', 'v1.2.3', 'A', 'x'.repeat(MAX_SERVICE_NAME_LENGTH)];

for (const name of goodNames) {
  test(`serviceNameProblem accepts ${JSON.stringify(name.length > 20 ? `${name.slice(0, 8)}... (${name.length} bytes)` : name)}`, (t) => {
    t.is(serviceNameProblem(name), null);
    t.notThrows(() => assertServiceName(name));
  });
}

const badNames: Array<[string, string, string]> = [
  ['the empty name', '', 'empty'],
  ["'..'", '..', '..'],
  ["'.'", '.', "leading '.'"],
  ['a hidden name', '.pong', "leading '.'"],
  ["'..' inside a name", 'a..b', '..'],
  ["'../x'", '../x', 'path separator'],
  ["'../other/pong'", '../other/pong', 'path separator'],
  ["'/abs'", '/abs', 'path separator'],
  ["'a/b'", 'a/b', 'path separator'],
  ['a backslash', 'a\\b', 'path separator'],
  ['a name ending in a newline', 'pong\n', 'control character 0x0a'],
  ['a carriage return', 'pong\r', 'control character 0x0d'],
  ['a tab', 'po\tng', 'control character 0x09'],
  ['DEL', 'pong\x7f', 'control character 0x7f'],
  ['a NUL character', 'po\0ng', 'NUL'],
  ['a trailing NUL', 'pong\0', 'NUL'],
  ['a space', 'po ng', 'space'],
  ['a leading space', ' pong', 'space'],
  ["';'", 'pong;tcp', "';'"],
  ['a non-ASCII letter', 'pöng', 'non-ASCII'],
  ['an emoji', 'pong\u{1f3d3}', 'non-ASCII'],
  ['a name one byte too long', 'x'.repeat(MAX_SERVICE_NAME_LENGTH + 1), `longer than ${MAX_SERVICE_NAME_LENGTH} bytes`],
  ['a name too long in bytes though short in characters', 'é'.repeat(33), `longer than ${MAX_SERVICE_NAME_LENGTH} bytes`],
];

for (const [what, name, reason] of badNames) {
  test(`serviceNameProblem rejects ${what}`, (t) => {
    const problem = serviceNameProblem(name);
    t.is(typeof problem, 'string');
    t.true(problem!.includes(reason), `${JSON.stringify(name)}: ${problem}`);
    const err = t.throws(() => assertServiceName(name), invalidName);
    t.true(err?.message.includes(JSON.stringify(name)));
  });
}

test('serviceNameProblem honours a custom maximum length', (t) => {
  t.is(serviceNameProblem('abcd', 4), null);
  t.is(serviceNameProblem('abcde', 4), 'longer than 4 bytes');
});

// RUNDIR and paths

test('resolveRundir reads RUNDIR and falls back to the original default when unset or empty', (t) => {
  t.is(DEFAULT_RUNDIR, '/tmp/.libipc-run/');
  t.is(resolveRundir({ RUNDIR: '/run/x' }), '/run/x');
  t.is(resolveRundir({}), DEFAULT_RUNDIR);
  t.is(resolveRundir({ RUNDIR: '' }), DEFAULT_RUNDIR);
});

test('servicePath joins the run directory and the name, with or without a trailing slash', (t) => {
  t.is(servicePath('pong', '/tmp/r'), '/tmp/r/pong');
  t.is(servicePath('pong', '/tmp/r/'), '/tmp/r/pong');
});

test('servicePath refuses a name that would escape the run directory', (t) => {
  for (const name of ['../x', '..', '/etc/passwd', 'a/../../b']) {
    const err = t.throws(() => servicePath(name, '/tmp/r'), invalidName);
    t.true(err?.message.includes(JSON.stringify(name)));
  }
});

test('servicePath accepts a socket path of 107 bytes and refuses 108 with IPC_ERR_RUNDIR_UNUSABLE', (t) => {
  // sun_path holds 108 bytes with its NUL; bind() would silently truncate a longer path.
  const rundir = '/tmp/' + 'r'.repeat(60);
  const fits = 'n'.repeat(107 - rundir.length - 1);
  t.is(servicePath(fits, rundir).length, 107);
  const err = t.throws(() => servicePath(fits + 'n', rundir), unusable);
  t.true(err?.message.includes(path.join(rundir, fits + 'n')));
  // Bytes count, not characters.
  t.throws(() => servicePath(fits, rundir.slice(0, -1) + 'é'), unusable);
});

// ensureRundir

for (const mask of [0, 0o022, 0o077]) {
  test.serial(`ensureRundir creates the run directory with mode 0770 under umask ${mask.toString(8).padStart(3, '0')}`, (t) => {
    const rundir = path.join(tempDirSync(t, 'libipc-rundir-'), 'run');
    withUmask(mask, () => ensureRundir(rundir));
    t.true(statSync(rundir).isDirectory());
    t.is(modeOf(rundir), 0o770);
  });
}

test.serial('ensureRundir creates missing parents and accepts a trailing slash', (t) => {
  const rundir = path.join(tempDirSync(t, 'libipc-rundir-'), 'a', 'b', 'run') + '/';
  withUmask(0o077, () => ensureRundir(rundir));
  t.is(modeOf(rundir), 0o770);
});

test('ensureRundir leaves an existing directory as it is', (t) => {
  const rundir = path.join(tempDirSync(t, 'libipc-rundir-'), 'run');
  mkdirSync(rundir);
  chmodSync(rundir, 0o755);
  writeFileSync(path.join(rundir, 'keep'), 'data');
  t.notThrows(() => ensureRundir(rundir));
  t.is(modeOf(rundir), 0o755);
  t.is(readFileSync(path.join(rundir, 'keep'), 'utf8'), 'data');
});

test('ensureRundir twice in a row is harmless', (t) => {
  const rundir = path.join(tempDirSync(t, 'libipc-rundir-'), 'run');
  ensureRundir(rundir);
  t.notThrows(() => ensureRundir(rundir));
  t.is(modeOf(rundir), 0o770);
});

test('ensureRundir under a regular file fails with IPC_ERR_RUNDIR_UNUSABLE naming the path', (t) => {
  // Tests run as root, so modes do not stop them: a parent that is a file does.
  const file = path.join(tempDirSync(t, 'libipc-rundir-'), 'file');
  writeFileSync(file, 'not a directory');
  const rundir = path.join(file, 'run');
  const err = t.throws(() => ensureRundir(rundir), unusable);
  t.true(err?.message.includes(rundir));
  t.true(err?.message.includes('ENOTDIR'));
  t.is((err?.cause as NodeJS.ErrnoException | undefined)?.code, 'ENOTDIR');
  // The file is left as it was.
  t.is(readFileSync(file, 'utf8'), 'not a directory');
});

test('ensureRundir on a regular file fails with IPC_ERR_RUNDIR_UNUSABLE naming the path', (t) => {
  const file = path.join(tempDirSync(t, 'libipc-rundir-'), 'run');
  writeFileSync(file, 'not a directory');
  chmodSync(file, 0o644);
  const err = t.throws(() => ensureRundir(file), unusable);
  t.true(err?.message.includes(file));
  t.is(readFileSync(file, 'utf8'), 'not a directory');
});

// access(W_OK|X_OK) alone would pass here for root: any file with an execute bit.
test('ensureRundir on an executable regular file fails with IPC_ERR_RUNDIR_UNUSABLE', (t) => {
  const file = path.join(tempDirSync(t, 'libipc-rundir-'), 'run');
  writeFileSync(file, '#!/bin/sh\n');
  chmodSync(file, 0o755);
  const err = t.throws(() => ensureRundir(file), unusable);
  t.true(err?.message.includes(file));
  t.is(readFileSync(file, 'utf8'), '#!/bin/sh\n');
});

// Defect 8: Node's recursive mkdirSync alternates EEXIST and ENOENT forever under /proc
// (mkdir /proc/x is ENOENT though /proc exists), spinning at 100% CPU and deaf to signals.
// Run through the real pongd so that a regression is a bounded wait, not a hung worker.
const unusableRundirCli = test.macro({
  async exec(t, makeRundir: (base: string) => string, reason: RegExp) {
    const rundir = makeRundir(tempDirSync(t, 'libipc-rundir-'));
    const run = await runCli(t, 'pongd', [], { env: { RUNDIR: rundir } }, START_TIMEOUT);
    t.is(run.code, 1, run.stderr);
    t.true(run.stderr.includes(rundir), run.stderr);
    t.regex(run.stderr, /not usable/);
    t.regex(run.stderr, reason);
  },
  title: (what = '') => `pongd exits 1 promptly naming an unusable RUNDIR and why: ${what}`,
});

test('/proc/x/', unusableRundirCli, () => '/proc/x/', /cannot create \/proc\/x \(ENOENT/);
test('a missing directory under /proc', unusableRundirCli, () => '/proc/x/y/run', /cannot create \/proc\/x \(ENOENT/);
test('a path under a regular file', unusableRundirCli, (base) => {
  writeFileSync(path.join(base, 'file'), 'not a directory');
  return path.join(base, 'file', 'run');
}, /ENOTDIR/);

// Defect 6a: a run directory others can write, or that another user owns, lets them
// replace a service's socket (or plant one) and read what clients send.

/** A fresh directory `<temp>/run` with `mode` (set after creation, so the umask does not filter it). */
function dirWithMode(t: ExecutionContext, mode: number): string {
  const rundir = path.join(tempDirSync(t, 'libipc-rundir-'), 'run');
  mkdirSync(rundir);
  chmodSync(rundir, mode);
  return rundir;
}

/** A uid no account uses: the tests run as root, so "another user" is made with chown. */
const OTHER_UID = 12345;

for (const mode of [0o700, 0o750, 0o755, 0o770, 0o2770]) {
  test(`checkRundir and ensureRundir accept an existing directory of this user with mode ${mode.toString(8).padStart(4, '0')}`, (t) => {
    const rundir = dirWithMode(t, mode);
    t.notThrows(() => checkRundir(rundir));
    t.notThrows(() => ensureRundir(rundir));
    t.notThrows(() => checkRundir(rundir + '/'));
    t.is(modeOf(rundir), mode, 'left as it was');
  });
}

for (const mode of [0o777, 0o1777, 0o773, 0o702]) {
  test(`checkRundir and ensureRundir refuse a directory anyone may write (mode ${mode.toString(8).padStart(4, '0')}), naming path, mode and remedy`, (t) => {
    const rundir = dirWithMode(t, mode);
    for (const check of [checkRundir, ensureRundir]) {
      const err = t.throws(() => check(rundir), unusable);
      t.true(err?.message.includes(rundir), err?.message);
      t.true(err?.message.includes(`mode ${mode.toString(8).padStart(4, '0')}`), err?.message);
      t.regex(err?.message ?? '', /any user may write/);
      t.regex(err?.message ?? '', /chmod o-w/);
    }
    t.is(modeOf(rundir), mode, 'the mode is not changed behind the owner\'s back');
  });
}

test('checkRundir and ensureRundir refuse a directory that belongs to another user, naming path, owner and remedy', (t) => {
  const rundir = dirWithMode(t, 0o770);
  chownSync(rundir, OTHER_UID, OTHER_UID);
  for (const check of [checkRundir, ensureRundir]) {
    const err = t.throws(() => check(rundir), unusable);
    t.true(err?.message.includes(rundir), err?.message);
    t.true(err?.message.includes(`uid ${OTHER_UID}`), err?.message);
    t.regex(err?.message ?? '', /RUNDIR/);
  }
  t.is(statSync(rundir).uid, OTHER_UID);
});

test('a group-shared directory of this user (0770, another group) is accepted', (t) => {
  const rundir = dirWithMode(t, 0o770);
  chownSync(rundir, process.getuid!(), OTHER_UID);
  t.notThrows(() => checkRundir(rundir));
  t.notThrows(() => ensureRundir(rundir));
});

test('a run directory reached through a symbolic link of this user is checked at its target', (t) => {
  const base = tempDirSync(t, 'libipc-rundir-');
  const good = path.join(base, 'good');
  mkdirSync(good, { mode: 0o770 });
  symlinkSync(good, path.join(base, 'link-good'));
  t.notThrows(() => checkRundir(path.join(base, 'link-good')));
  t.notThrows(() => checkRundir(path.join(base, 'link-good') + '/'));
  const open = path.join(base, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  symlinkSync(open, path.join(base, 'link-open'));
  const err = t.throws(() => checkRundir(path.join(base, 'link-open') + '/'), unusable);
  t.true(err?.message.includes('mode 0777'), err?.message);
});

// Whoever owns a symbolic link may point it elsewhere at any time, after the check.
test('a run directory that is a symbolic link owned by another user is refused', (t) => {
  const base = tempDirSync(t, 'libipc-rundir-');
  const good = path.join(base, 'good');
  mkdirSync(good, { mode: 0o770 });
  const link = path.join(base, 'link');
  symlinkSync(good, link);
  lchownSync(link, OTHER_UID, OTHER_UID);
  for (const rundir of [link, link + '/']) {
    const err = t.throws(() => checkRundir(rundir), unusable);
    t.true(err?.message.includes(rundir), err?.message);
    t.regex(err?.message ?? '', /symbolic link/);
    t.true(err?.message.includes(`uid ${OTHER_UID}`), err?.message);
  }
});

test('checkRundir does not create a missing run directory and says it does not exist', (t) => {
  const rundir = path.join(tempDirSync(t, 'libipc-rundir-'), 'run');
  const err = t.throws(() => checkRundir(rundir), unusable);
  t.true(err?.message.includes(rundir), err?.message);
  t.regex(err?.message ?? '', /does not exist/);
  t.is((err?.cause as NodeJS.ErrnoException | undefined)?.code, 'ENOENT');
  t.false(existsSync(rundir));
});

test('checkRundir on a regular file fails with IPC_ERR_RUNDIR_UNUSABLE (ENOTDIR)', (t) => {
  const file = path.join(tempDirSync(t, 'libipc-rundir-'), 'run');
  writeFileSync(file, 'x');
  chmodSync(file, 0o700);
  const err = t.throws(() => checkRundir(file), unusable);
  t.true(err?.message.includes(file));
  t.regex(err?.message ?? '', /ENOTDIR/);
});

test('ensureRundir through a missing parent whose name is a dangling symbolic link fails clearly', (t) => {
  const base = tempDirSync(t, 'libipc-rundir-');
  symlinkSync(path.join(base, 'nowhere'), path.join(base, 'dangling'));
  const rundir = path.join(base, 'dangling', 'run');
  const err = t.throws(() => ensureRundir(rundir), unusable);
  t.true(err?.message.includes(rundir), err?.message);
  t.false(existsSync(path.join(base, 'nowhere')));
});

// Wired where the library makes or uses a run directory.

test('Context.serve and Context.connect refuse a run directory anyone may write', async (t) => {
  const rundir = dirWithMode(t, 0o777);
  const ctx = new Context({ rundir });
  t.teardown(() => ctx.closeAll());
  const serving = await t.throwsAsync(ctx.serve('pong'), unusable);
  t.true(serving?.message.includes(rundir));
  t.false(existsSync(path.join(rundir, 'pong')));
  const connecting = await t.throwsAsync(ctx.connect('pong'), unusable);
  t.true(connecting?.message.includes(rundir));
});

test('Context.connect refuses a run directory of another user before connecting', async (t) => {
  const rundir = dirWithMode(t, 0o770);
  chownSync(rundir, OTHER_UID, OTHER_UID);
  const ctx = new Context({ rundir });
  t.teardown(() => ctx.closeAll());
  const err = await t.throwsAsync(ctx.connect('pong'), unusable);
  t.true(err?.message.includes(`uid ${OTHER_UID}`), err?.message);
});

test('Context.connect with a run directory that does not exist yet reports the service unavailable, and checks it once it exists', async (t) => {
  const rundir = path.join(tempDirSync(t, 'libipc-rundir-'), 'run');
  const ctx = new Context({ rundir });
  t.teardown(() => ctx.closeAll());
  await t.throwsAsync(ctx.connect('pong'), { instanceOf: IpcError, code: ErrorCode.SERVICE_UNAVAILABLE });
  t.false(existsSync(rundir), 'connecting creates nothing');
  mkdirSync(rundir);
  chmodSync(rundir, 0o777);
  await t.throwsAsync(ctx.connect('pong'), unusable);
});

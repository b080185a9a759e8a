import test, { type ExecutionContext } from 'ava';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  DEFAULT_RUNDIR,
  MAX_SERVICE_NAME_LENGTH,
  assertServiceName,
  ensureRundir,
  resolveRundir,
  serviceNameProblem,
  servicePath,
} from '../src/rundir.js';
import { ErrorCode, IpcError } from '../src/errors.js';
import { tempDirSync } from './helpers/rundir.js';

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

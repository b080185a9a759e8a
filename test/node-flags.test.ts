/**
 * The daemons run with V8's young generation capped (`--max-semi-space-size=2` on their
 * `#!` line: gateways/cli/node-flags.ts says why): the compiled scripts carry the flag, an
 * installed bin started by its path runs node with it, and what starts daemons with
 * `node SCRIPT` reads the same flags from the line.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { shebangNodeFlags } from '../gateways/cli/node-flags.js';
import { cliPath, type CliName } from './helpers/paths.js';
import { LogSink } from './helpers/log-sink.js';

const DAEMONS: readonly CliName[] = ['tcpd', 'tlsd', 'wsd', 'gatewayd', 'ipcd', 'pongd'];

for (const name of DAEMONS) {
  test(`${name}: its compiled script is executable and its #! line caps the young generation`, (t) => {
    const script = cliPath(name);
    t.is(fs.statSync(script).mode & 0o111, 0o111, 'executable by everyone');
    t.is(fs.readFileSync(script, 'utf8').split('\n', 1)[0], '#!/usr/bin/env -S node --max-semi-space-size=2');
    t.deepEqual(shebangNodeFlags(script), ['--max-semi-space-size=2']);
  });
}

test('pong (a client, not a daemon) keeps a plain #! line: no flags', (t) => {
  t.deepEqual(shebangNodeFlags(cliPath('pong')), []);
});

test('shebangNodeFlags reads several flags and ignores a line that is not env -S node', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flags-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  };
  t.deepEqual(shebangNodeFlags(write('a.js', '#!/usr/bin/env -S node --max-semi-space-size=2 --expose-gc\nx')), ['--max-semi-space-size=2', '--expose-gc']);
  t.deepEqual(shebangNodeFlags(write('b.js', '#!/usr/bin/env node\n')), []);
  t.deepEqual(shebangNodeFlags(write('c.js', '#!/bin/sh -e\n')), []);
  t.deepEqual(shebangNodeFlags(write('d.js', '')), []);
});

test('tcpd started by its path (as npm and systemd start a bin) runs node with the flag', async (t) => {
  const rundir = fs.mkdtempSync(path.join(os.tmpdir(), 'flags-run-'));
  t.teardown(() => fs.rmSync(rundir, { recursive: true, force: true }));
  const child = spawn(cliPath('tcpd'), ['--listen', '127.0.0.1:0', '--allow', 'pong', '--no-outbound'], {
    env: { ...process.env, RUNDIR: rundir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  const log = new LogSink();
  child.stdout!.setEncoding('utf8').on('data', (text: string) => log.write(text));
  child.on('exit', (code) => log.finish(`tcpd exited (${code})`));
  await log.waitFor((line) => line.msg === 'listening', 15_000, 'tcpd listening');
  const argv = fs.readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0');
  t.true(argv.includes('--max-semi-space-size=2'), argv.join(' '));
  t.regex(path.basename(argv[0]!), /^node/);
});

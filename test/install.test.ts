/**
 * The addon's install step (scripts/build-addon.mjs) on a machine without a C++ compiler:
 * the install goes on with a warning that says what needs the addon and how to get it.
 * Run in a copy (node-gyp rebuild replaces build/), with PATH holding node, node-gyp,
 * python3 and make but no compiler; then with the machine's PATH, where it builds.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './helpers/paths.js';
import { tempDir } from './helpers/rundir.js';

/** npm's own node-gyp, the one npm puts on PATH for install scripts. */
function npmNodeGyp(): string | null {
  const which = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim();
  if (which === '') return null;
  const candidate = path.join(path.dirname(realpathSync(which)), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  return existsSync(candidate) ? candidate : null;
}

/** The addon's sources and its install step in a temp directory, with an empty `bin/` for PATH. */
async function addonCopy(t: Parameters<typeof tempDir>[0]): Promise<{ dir: string; bin: string }> {
  const dir = await tempDir(t, 'addon-');
  cpSync(path.join(REPO_ROOT, 'binding.gyp'), path.join(dir, 'binding.gyp'));
  cpSync(path.join(REPO_ROOT, 'native'), path.join(dir, 'native'), { recursive: true });
  cpSync(path.join(REPO_ROOT, 'scripts', 'build-addon.mjs'), path.join(dir, 'build-addon.mjs'));
  symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  const bin = path.join(dir, 'bin');
  mkdirSync(bin);
  return { dir, bin };
}

/** `bin/node-gyp` running npm's node-gyp, as npm puts it on PATH for install scripts. */
function writeNodeGyp(bin: string, gyp: string): void {
  writeFileSync(path.join(bin, 'node-gyp'), `#!${process.execPath}\nimport(${JSON.stringify(gyp)});\n`);
  chmodSync(path.join(bin, 'node-gyp'), 0o755);
}

function toolEnv(bin: string): NodeJS.ProcessEnv {
  return {
    HOME: process.env['HOME'] ?? '/root',
    PATH: bin,
    // The machine's Node headers, never downloaded (as .ci/run sets it).
    ...(existsSync('/usr/include/node/node.h') ? { npm_config_nodedir: '/usr' } : {}),
  };
}

test('without a C++ compiler the addon build warns, names what needs it and how to get it, and exits 0', async (t) => {
  const gyp = npmNodeGyp();
  if (gyp === null) return t.fail('npm bundles no node-gyp here');
  const { dir, bin } = await addonCopy(t);
  // Everything of /usr/bin and /bin but the C and C++ compilers: a machine without build-essential.
  const compiler = /(^|-)(g\+\+|c\+\+|cc|gcc|clang\+*|cpp)(-[\d.]+)?$/;
  for (const dirOfTools of ['/usr/bin', '/bin']) {
    for (const tool of readdirSync(dirOfTools)) {
      if (compiler.test(tool) || tool === 'node-gyp' || existsSync(path.join(bin, tool))) continue;
      symlinkSync(path.join(dirOfTools, tool), path.join(bin, tool));
    }
  }
  if (!existsSync(path.join(bin, 'node'))) symlinkSync(process.execPath, path.join(bin, 'node'));
  writeNodeGyp(bin, gyp);
  for (const name of ['g++', 'c++', 'cc', 'gcc']) t.false(existsSync(path.join(bin, name)), name);

  const run = spawnSync(process.execPath, ['build-addon.mjs'], { cwd: dir, env: toolEnv(bin), encoding: 'utf8', timeout: 120_000 });
  t.is(run.status, 0, run.stderr);
  t.regex(run.stderr, /WARNING: the fdpass addon was not built/);
  t.regex(run.stderr, /g\+\+: (No such file|not found)|g\+\+.*not found/, "it failed for want of the compiler");
  t.regex(run.stderr, /ipcd and connectIpc/);
  t.regex(run.stderr, /apt-get install g\+\+ make python3/);
  t.false(existsSync(path.join(dir, 'build', 'Release', 'fdpass.node')));
});

test('with the toolchain the same step builds the addon', async (t) => {
  const gyp = npmNodeGyp();
  if (gyp === null) return t.fail('npm bundles no node-gyp here');
  const { dir, bin } = await addonCopy(t);
  writeNodeGyp(bin, gyp);
  const run = spawnSync(process.execPath, ['build-addon.mjs'], {
    cwd: dir,
    env: toolEnv(`${bin}:${process.env['PATH'] ?? ''}`),
    encoding: 'utf8',
    timeout: 180_000,
  });
  t.is(run.status, 0, run.stderr);
  t.notRegex(run.stderr, /WARNING/);
  t.true(existsSync(path.join(dir, 'build', 'Release', 'fdpass.node')));
});

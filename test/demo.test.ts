/**
 * The main job (`npm start`, scripts/demo.ts): pongd with tcpd, tlsd and wsd in front,
 * as README's first line promises: a TCP client gets its echo, the page is served, tcpd's
 * admin listener says ready, and SIGINT stops everything with exit code 0.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { REPO_ROOT } from './helpers/paths.js';
import { freePort } from './helpers/ports.js';
import { tempDir } from './helpers/rundir.js';
import { probeEcho, tcpSession } from './helpers/raw-client.js';
import { until } from './helpers/wait.js';

test('npm start serves pongd through tcpd, tlsd and wsd, with tcpd\'s status page, and stops on SIGINT', async (t) => {
  const dir = await tempDir(t, 'demo-');
  const ports = { TCP_PORT: await freePort(), TLS_PORT: await freePort(), WS_PORT: await freePort(), ADMIN_PORT: await freePort() };
  const env = { ...process.env, RUNDIR: path.join(dir, 'run'), ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])) };
  // Its own process group: a failed test kills the demo and every daemon it started.
  const demo = spawn(process.execPath, [path.join(REPO_ROOT, 'dist/scripts/demo.js')], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  t.teardown(() => {
    try {
      process.kill(-demo.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  let out = '';
  demo.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  demo.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
  await until(() => out.includes('Ctrl-C stops everything'), 'the demo ready', 30_000);
  t.true(out.includes(`http://127.0.0.1:${ports.ADMIN_PORT}/`), 'the status page address is printed');

  await probeEcho(await tcpSession(t, ports.TCP_PORT));
  t.is((await fetch(`http://127.0.0.1:${ports.WS_PORT}/`)).status, 200);
  let ready = 0;
  for (let i = 0; i < 50 && ready !== 200; i++) {
    ready = await fetch(`http://127.0.0.1:${ports.ADMIN_PORT}/readyz`).then((r) => r.status, () => 0);
    if (ready !== 200) await new Promise((r) => setTimeout(r, 100));
  }
  t.is(ready, 200);

  demo.kill('SIGINT');
  const [code] = (await once(demo, 'exit')) as [number | null];
  t.is(code, 0, out);
});

/**
 * The admin listener's status page in a real browser (headless Chromium): it loads from
 * the admin port alone, shows one row per listener and per service, and the numbers the
 * test produced (connections, messages, refusals, health) appear in the DOM after its
 * refresh. A screenshot goes to test/artifacts/ for people to look at.
 */
import test from 'ava';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { CHROMIUM, openPage } from './helpers/browser.js';
import { spawnCli, startPongd } from './helpers/daemon.js';
import { tempDir } from './helpers/rundir.js';
import { probeEcho, RawClient, tcpSession } from './helpers/raw-client.js';
import { adminPort } from './helpers/admin.js';
import { REPO_ROOT } from './helpers/paths.js';

// In CI a missing browser is a failure (the test would prove nothing), not a skip.
const browserTest = existsSync(CHROMIUM) || process.env['CI'] ? test : test.skip;

browserTest('the status page shows each listener and service with the counts the test produced, and the health of each service', async (t) => {
  const dir = await tempDir(t, 'adm-');
  const rundir = path.join(dir, 'run');
  await startPongd(t, rundir);
  const daemon = spawnCli(t, 'tcpd', ['--listen', '127.0.0.1:0', '--allow', 'pong,nosuch', '--admin', '127.0.0.1:0'], { env: { RUNDIR: rundir } });
  const port = (await daemon.listening((l) => l['transport'] === 'tcp'))['port'] as number;
  const admin = await adminPort(daemon);

  const client = await tcpSession(t, port);
  for (let i = 0; i < 7; i++) await probeEcho(client);
  const refused = await RawClient.tcp(t, port);
  await refused.write(Buffer.from('forbidden'));
  await refused.expectEof();

  const { page, failedLoads } = await openPage(t);
  await page.goto(`http://127.0.0.1:${admin}/`);
  const row = page.locator(`#listeners tr[data-key="tcp 127.0.0.1:${port}"]`);
  await row.locator('td.messages-in', { hasText: /^7$/ }).waitFor();
  t.is(await row.locator('td.state').textContent(), 'up');
  t.is(await row.locator('td.open').textContent(), '1');
  t.is(await row.locator('td.connections').textContent(), '2');
  t.is(await row.locator('td.messages-out').textContent(), '7');
  t.is(await row.locator('td.refusals').textContent(), 'SERVICE_NOT_ALLOWED 1');
  const pong = page.locator('#services tr[data-key="pong"]');
  t.is(await pong.locator('td.state').textContent(), 'up');
  t.is(await pong.locator('td.messages-in').textContent(), '7');
  t.regex((await page.locator('#services tr[data-key="nosuch"] td.state').textContent()) ?? '', /^down: no socket/);
  t.regex((await page.textContent('#summary')) ?? '', /^not ready/);

  // The next refresh sees the client's further echoes (the page keeps polling).
  for (let i = 0; i < 3; i++) await probeEcho(client);
  await row.locator('td.messages-in', { hasText: /^10$/ }).waitFor();

  const artifacts = path.join(REPO_ROOT, 'test', 'artifacts');
  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, 'admin-status-page.png'), fullPage: true });
  t.deepEqual(failedLoads, []);
});

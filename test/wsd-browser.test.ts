/**
 * wsd's page in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
 * playwright-core loads the page wsd serves, connects to a service, sends what was typed
 * and shows the echo; a refused service shows a disconnected state. Skipped, saying why,
 * only when /usr/bin/chromium is missing (scripts/install-system-deps.sh installs it).
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { CHROMIUM, STATE_DISCONNECTED, connect, openPage, sendAndRead } from './helpers/browser.js';
import { WAIT, slot, startPongd, startWsd, tempDir, type Line } from './helpers/ws-procs.js';
import { devCertificates } from './helpers/ws-fixtures.js';

/** A run directory with pongd `pong` and wsd (allowing pong, and `nosuch` which never runs). */
async function setup(t: ExecutionContext, extraArgs: readonly string[] = []) {
  await slot(t);
  const dir = await tempDir(t);
  const rundir = path.join(dir, 'run');
  mkdirSync(rundir, { mode: 0o700 });
  const [pongd, wsd] = await Promise.all([
    startPongd(t, rundir),
    startWsd(t, rundir, ['--allow', 'pong,nosuch', ...extraArgs]),
  ]);
  return { dir, pongd, wsd };
}

/**
 * A refused upgrade (it has an HTTP status). Not the handshake timeout wsd logs for the
 * keep-alive connections that fetched the page (see wsd.test.ts).
 */
const upgradeRefused = (l: Line) => l.msg === 'connection refused' && l['status'] !== undefined;

// In CI a missing browser is a failure (the tests would prove nothing), not a skip.
const browserTest = existsSync(CHROMIUM) || process.env['CI'] ? test.serial : test.skip;
if (!existsSync(CHROMIUM)) {
  console.warn(
    `wsd-browser.test.ts: ${CHROMIUM} is missing, browser tests skipped ` +
      '(install: apt-get install chromium, or scripts/install-system-deps.sh)',
  );
}

browserTest('the page wsd serves connects to pong, sends what was typed and shows the echo', async (t) => {
  const { wsd, pongd } = await setup(t);
  const { page, failedLoads } = await openPage(t);
  await page.goto(`http://127.0.0.1:${wsd.port}/`);
  t.is(await page.textContent('#state'), 'disconnected');
  t.is(await connect(page, 'pong'), 'connected to pong');
  t.is(await sendAndRead(page, 'hello from chromium ✓', 0), 'hello from chromium ✓');
  t.is(await sendAndRead(page, 'second message', 1), 'second message');
  t.is(await page.locator('#replies li').count(), 2);
  t.is(pongd.filter((l) => l.msg === 'connection').length, 1);
  t.is(wsd.proc.filter((l: Line) => l.msg === 'connection closed').length, 0);
  // Disconnecting from the page closes the connection cleanly.
  await page.click('#disconnect');
  await page.waitForFunction(STATE_DISCONNECTED);
  const closed = await wsd.proc.waitFor((l) => l.msg === 'connection closed', 'the teardown');
  t.is(closed['origin'], `http://127.0.0.1:${wsd.port}`);
  t.is(closed['messagesIn'], 2);
  t.deepEqual(failedLoads, []);
});

browserTest('the page shows a disconnected state for a service that is not running (404)', async (t) => {
  const { wsd } = await setup(t);
  const { page } = await openPage(t);
  await page.goto(`http://127.0.0.1:${wsd.port}/`);
  t.is(await connect(page, 'nosuch'), 'disconnected (connection failed or refused)');
  t.true(await page.isEnabled('#connect'));
  t.true(await page.isDisabled('#send'));
  const refused = await wsd.proc.waitFor(upgradeRefused, 'the refusal');
  t.is(refused['status'], 404);
  // The page can still connect to a running service afterwards.
  t.is(await connect(page, 'pong'), 'connected to pong');
  t.is(await sendAndRead(page, 'after a refusal', 0), 'after a refusal');
});

browserTest('the page shows a disconnected state for a service not in the allow-list (403)', async (t) => {
  const { wsd } = await setup(t);
  const { page } = await openPage(t);
  await page.goto(`http://127.0.0.1:${wsd.port}/`);
  t.is(await connect(page, 'other'), 'disconnected (connection failed or refused)');
  const refused = await wsd.proc.waitFor(upgradeRefused, 'the refusal');
  t.is(refused['status'], 403);
});

browserTest('with --origin, a page from an origin not listed shows a disconnected state (403)', async (t) => {
  const { wsd } = await setup(t, ['--origin', 'http://localhost:1']);
  const { page } = await openPage(t);
  await page.goto(`http://127.0.0.1:${wsd.port}/`);
  t.is(await connect(page, 'pong'), 'disconnected (connection failed or refused)');
  const refused = await wsd.proc.waitFor(upgradeRefused, 'the refusal');
  t.is(refused['status'], 403);
  t.regex(String(refused['reason']), new RegExp(`origin http://127\\.0\\.0\\.1:${wsd.port} not allowed`));
});

browserTest('the page served over https connects with wss', async (t) => {
  await slot(t);
  const dir = await tempDir(t);
  const rundir = path.join(dir, 'run');
  mkdirSync(rundir, { mode: 0o700 });
  const { files } = devCertificates(dir);
  const [, wsd] = await Promise.all([
    startPongd(t, rundir),
    startWsd(t, rundir, ['--allow', 'pong', '--cert', files.cert, '--key', files.key]),
  ]);
  // The development CA is not in Chromium's store: certificate errors are ignored here;
  // wsd.test.ts checks verification with the CA.
  const { page } = await openPage(t, { ignoreHTTPSErrors: true });
  await page.goto(`https://127.0.0.1:${wsd.port}/`);
  t.is(await connect(page, 'pong'), 'connected to pong');
  t.is(await sendAndRead(page, 'over wss', 0), 'over wss');
});

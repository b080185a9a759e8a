/**
 * A real browser for page tests: Debian's headless Chromium driven by playwright-core,
 * with a fresh profile per test, closed at teardown.
 */
import type { ExecutionContext } from 'ava';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { tempDir } from './rundir.js';

const WAIT = 10_000;

export const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];
/** Chromium's first start on a loaded machine can be slow. */
const LAUNCH_TIMEOUT = 60_000;

/**
 * Chromium with a fresh user-data-dir; closed at teardown. Page errors fail the test;
 * `failedLoads` lists HTTP errors the page met (favicon aside).
 */
export async function openPage(
  t: ExecutionContext,
  options: { ignoreHTTPSErrors?: boolean } = {},
): Promise<{ context: BrowserContext; page: Page; failedLoads: string[] }> {
  const userDataDir = path.join(await tempDir(t), 'chromium-profile');
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: LAUNCH_TIMEOUT,
    ...options,
  });
  t.teardown(async () => {
    await Promise.race([context.close(), new Promise((resolve) => setTimeout(resolve, WAIT))]);
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(WAIT);
  const failedLoads: string[] = [];
  page.on('pageerror', (err) => t.fail(`page error: ${err.message}`));
  page.on('response', (response) => {
    // The page has no favicon; Chromium asks for one anyway.
    if (response.status() >= 400 && !response.url().endsWith('/favicon.ico')) {
      failedLoads.push(`${response.status()} ${response.url()}`);
    }
  });
  return { context, page, failedLoads };
}

// The bundled WebSocket page (web/): its controls, as a user drives them.
// Evaluated in the page (strings: this file is compiled without the DOM library).
export const STATE_SETTLED = `(() => {
  const s = document.getElementById('state').textContent;
  return s.startsWith('connected') || s.startsWith('disconnected (');
})()`;
export const STATE_DISCONNECTED = `document.getElementById('state').textContent.startsWith('disconnected (')`;

/** Connects the page to `service` and waits for the state to settle (connected or not). */
export async function connect(page: Page, service: string): Promise<string> {
  await page.fill('#service', service);
  await page.click('#connect');
  await page.waitForFunction(STATE_SETTLED);
  return (await page.textContent('#state')) ?? '';
}

/** Types `message`, clicks Send, and resolves the text of reply number `index` (0-based). */
export async function sendAndRead(page: Page, message: string, index: number): Promise<string> {
  await page.fill('#message', message);
  await page.click('#send');
  const item = page.locator('#replies li').nth(index);
  await item.waitFor();
  return (await item.textContent()) ?? '';
}


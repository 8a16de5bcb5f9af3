// The harness the browser tests (browser.mjs, marketplace.mjs,
// notifications.mjs, jobs.mjs) share: the gateway's base URL (argv[2], else
// $SAFRA_GATEWAY_URL, else http://127.0.0.1:8080), Debian's chromium
// ($CHROMIUM_PATH, default /usr/bin/chromium) launched headless by
// playwright-core in a throw-away profile, one "ok   - <step>" line per step,
// waiting for a page or the page's own error, the run's watchdog, and the
// closing "<name>: N passed, N failed" with exit 1 on a failure:
//
//   await runChecks("browser", RUN_TIMEOUT_MS, async () => { const context = await launch(); ... });
//
// One run per process: runChecks() ends it.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const baseUrl = (process.argv[2] ?? process.env.SAFRA_GATEWAY_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
export const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const origin = new URL(baseUrl).origin;
export const STEP_TIMEOUT_MS = 10_000;

let runName;
let context;
let userDataDir;
let passed = 0;

async function cleanup() {
  await context?.close().catch(() => {});
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
}

export class Failure extends Error {}

export function fail(message) {
  throw new Failure(message);
}

export const byTestId = (id) => `[data-testid="${id}"]`;

/** Waiters that fail early with the page's error when the console shows one
 * (anything matching `errors`) instead of what they wait for. */
export function waiters(errors = byTestId("error")) {
  /** Waits for `selector` to show, or for the page's error. */
  async function waitForShown(page, selector, what) {
    const target = page.locator(`${selector}, ${errors}`).first();
    try {
      await target.waitFor({ state: "visible" });
    } catch {
      fail(`${what}: ${selector} did not appear within ${STEP_TIMEOUT_MS} ms (at ${page.url()})`);
    }
    const error = page.locator(errors);
    if (await error.count()) fail(`${what}: the page shows an error: ${(await error.first().innerText()).trim()}`);
  }
  /** Waits for the element with data-testid `testid`, or for the page's error. */
  const waitForPage = (page, testid, what) => waitForShown(page, byTestId(testid), what);
  return { waitForShown, waitForPage };
}

export async function step(name, fn) {
  await fn();
  passed++;
  console.log(`ok   - ${name}`);
}

/** Starts chromium with a fresh profile (in a temporary directory named
 * after the run, removed when the run ends); call it from runChecks()'s `main`. */
export async function launch() {
  userDataDir = await mkdtemp(join(tmpdir(), `safra-console-${runName}-`));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    chromiumSandbox: false,
    timeout: STEP_TIMEOUT_MS,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  return context;
}

/** Runs `main` within `runTimeoutMs`, prints the closing line, closes the
 * browser, removes its profile and exits: 0 when every step passed, else 1. */
export async function runChecks(name, runTimeoutMs, main) {
  runName = name;
  let finished = false;
  const watchdog = setTimeout(async () => {
    if (finished) return;
    console.error(`${name}: FAIL - the run took longer than ${runTimeoutMs} ms`);
    await cleanup();
    process.exit(1);
  }, runTimeoutMs);

  let code = 0;
  try {
    await main();
    console.log(`${name}: ${passed} passed, 0 failed`);
  } catch (err) {
    code = 1;
    console.error(`${name}: FAIL - ${err instanceof Failure ? err.message : (err?.stack ?? err)}`);
    console.log(`${name}: ${passed} passed, 1 failed`);
  } finally {
    finished = true;
    clearTimeout(watchdog);
    await cleanup();
  }
  process.exit(code);
}

// End-to-end check of the console in a real browser (Debian's chromium,
// driven by playwright-core) against a running gateway that serves it:
//
//   node test/browser.mjs [baseUrl]      (default $SAFRA_GATEWAY_URL or http://127.0.0.1:8080)
//
// Registers a fresh investor, signs in, checks the profile page (e-mail and
// the trace id of GetMe), checks that a refused access token is refreshed
// and the call retried, signs out. Env: CHROMIUM_PATH (default
// /usr/bin/chromium). Prints one line per step; exits 1 on a failure, with
// the page's own error when it showed one. The whole run is bounded.
import { randomBytes } from "node:crypto";
import { baseUrl, byTestId, executablePath, fail, launch, origin, runChecks, step, waiters } from "./harness.mjs";

const RUN_TIMEOUT_MS = 55_000;

const email = `browser-${randomBytes(6).toString("hex")}@example.com`;
const password = `pw-${randomBytes(15).toString("base64url")}`; // 23 characters
const GET_ME = "safra.accounts.v1.AccountsService/GetMe";

const { waitForPage } = waiters();

async function main() {
  console.log(`browser: checking ${baseUrl} with ${executablePath} as ${email}`);
  const context = await launch();

  const outside = [];
  const pageErrors = [];
  context.on("request", (req) => {
    const url = req.url();
    if (!url.startsWith("data:") && new URL(url).origin !== origin) outside.push(url);
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (err) => pageErrors.push(err.message));

  await step("the register page loads", async () => {
    await page.goto(`${baseUrl}/#/register`);
    await waitForPage(page, "register-page", "register page");
  });

  await step(`registering ${email} as an investor leads to the login page`, async () => {
    await page.fill(byTestId("register-email"), email);
    await page.fill(byTestId("register-password"), password);
    await page.fill(byTestId("register-display-name"), "Browser Test");
    await page.selectOption(byTestId("register-role"), "investor");
    await page.click(byTestId("register-submit"));
    await waitForPage(page, "login-page", "after Register");
  });

  await step("signing in leads to the profile page", async () => {
    await page.fill(byTestId("login-email"), email);
    await page.fill(byTestId("login-password"), password);
    await page.click(byTestId("login-submit"));
    await waitForPage(page, "profile-email", "after Login");
  });

  await step("the profile shows the registered e-mail", async () => {
    const shown = (await page.innerText(byTestId("profile-email"))).trim();
    if (shown !== email) fail(`profile e-mail is ${JSON.stringify(shown)}, want ${JSON.stringify(email)}`);
    const nav = await page.innerText(byTestId("nav-user"));
    if (!nav.includes(email)) fail(`nav bar shows ${JSON.stringify(nav)}, want the e-mail in it`);
  });

  await step("the last call (GetMe) shows a 32-hex-digit trace id", async () => {
    try {
      await page.waitForFunction(
        ([methodSel, traceSel, method]) =>
          document.querySelector(methodSel)?.textContent === method &&
          /^[0-9a-f]{32}$/.test(document.querySelector(traceSel)?.textContent ?? ""),
        [byTestId("last-call-method"), byTestId("last-trace-id"), GET_ME],
      );
    } catch {
      const bar = await page.locator(byTestId("last-call")).innerText().catch(() => "(missing)");
      fail(`the last-call bar shows ${JSON.stringify(bar.trim())}, want ${GET_ME} with a 32-hex-digit trace id`);
    }
  });

  await step("a rejected access token is refreshed once and the call retried", async () => {
    // Spoil the stored access token: GetMe is refused UNAUTHENTICATED, the
    // interceptor trades the refresh token for a new pair and retries.
    const before = await page.evaluate(() => {
      const raw = sessionStorage.getItem("safra.console.session");
      const session = JSON.parse(raw);
      const previous = { access: session.accessToken, refresh: session.refreshToken };
      session.accessToken = "spoiled.access.token";
      sessionStorage.setItem("safra.console.session", JSON.stringify(session));
      return previous;
    });
    // Hash navigation only: a reload could abort the Refresh after the
    // server rotated the pair but before the page stored it, and the old
    // refresh token would then (rightly) count as reused.
    await page.goto(`${baseUrl}/#/login`);
    await waitForPage(page, "login-page", "on the way back to the profile");
    await page.goto(`${baseUrl}/#/profile`);
    await waitForPage(page, "profile-email", "after the refresh");
    const shown = (await page.innerText(byTestId("profile-email"))).trim();
    if (shown !== email) fail(`profile e-mail is ${JSON.stringify(shown)} after the refresh`);
    const after = await page.evaluate(() => JSON.parse(sessionStorage.getItem("safra.console.session")));
    if (after.accessToken === "spoiled.access.token" || after.refreshToken === before.refresh) {
      fail("the session's tokens were not replaced by a Refresh");
    }
  });

  await step("signing out leads to the login page and forgets the session", async () => {
    await page.click(byTestId("sign-out"));
    await waitForPage(page, "login-page", "after sign-out");
    if (await page.locator(byTestId("nav-user")).count()) fail("the nav bar still shows a signed-in user");
    const stored = await page.evaluate(() => sessionStorage.length);
    if (stored !== 0) fail(`sessionStorage still holds ${stored} item(s)`);
  });

  await step("nothing was loaded from another origin and the page threw nothing", async () => {
    if (outside.length) fail(`requests outside ${origin}: ${outside.join(", ")}`);
    if (pageErrors.length) fail(`uncaught errors on the page: ${pageErrors.join(" | ")}`);
  });
}

await runChecks("browser", RUN_TIMEOUT_MS, main);

// End-to-end check of the console's jobs monitor in a real browser (Debian's
// chromium, driven by playwright-core) against a running gateway that
// serves it and the whole mesh behind it:
//
//   SAFRA_ADMIN_EMAIL=... SAFRA_ADMIN_PASSWORD=... node test/jobs.mjs [baseUrl]
//   (default $SAFRA_GATEWAY_URL or http://127.0.0.1:8080)
//
// The admin named by SAFRA_ADMIN_EMAIL and SAFRA_ADMIN_PASSWORD (required:
// only an admin may register another) signs in and opens Jobs from the nav
// bar: the marketplace, distribution and notifications subscribers are
// listed, and the outboxes of all five services; "updated" changes by
// itself within 5 s. When SAFRA_PARKED_EVENT_ID names a parked event (the
// Rust test that runs this seeds one), its row is listed and
// SAFRA_PARKED_ACTION ("retry" or "discard", the default) removes it, for
// good. Leaving the page stops its refresh. A fresh investor, registered in
// a tab of their own, has no Jobs in the nav bar and is refused
// PERMISSION_DENIED at #/jobs. Env: CHROMIUM_PATH (default
// /usr/bin/chromium). Prints one line per step; exits 1 on a failure, with
// the page's own error when it showed one. The whole run is bounded.
import { randomBytes } from "node:crypto";
import { baseUrl, byTestId, executablePath, fail, launch, origin, runChecks, step, STEP_TIMEOUT_MS, waiters } from "./harness.mjs";

const RUN_TIMEOUT_MS = 90_000;
/** The monitor reads again every 2 s. */
const REFRESH_WITHIN_MS = 5_000;
/** The seeded event may be parked a little after the page opens. */
const PARKED_TIMEOUT_MS = 20_000;

const SUBSCRIBERS = ["marketplace", "distribution", "notifications"];
const SERVICES = ["accounts", "marketplace", "wallet", "distribution", "notifications"];
const LIST_SUBSCRIPTIONS = "safra.jobs.v1.JobsService/ListSubscriptions";

const admin = { email: process.env.SAFRA_ADMIN_EMAIL ?? "", password: process.env.SAFRA_ADMIN_PASSWORD ?? "" };
const parkedEventId = process.env.SAFRA_PARKED_EVENT_ID ?? "";
const parkedAction = (process.env.SAFRA_PARKED_ACTION ?? "discard").toLowerCase();
const run = randomBytes(6).toString("hex");
const investor = { email: `jobs-investor-${run}@example.com`, password: `pw-${randomBytes(15).toString("base64url")}` };

const ERRORS = `${byTestId("error")}, ${byTestId("input-error")}`;
const { waitForShown, waitForPage } = waiters(ERRORS);

/** Polls `probe` (which returns a truthy value when done) until `timeoutMs`. */
async function eventually(timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function signIn(page, user, role) {
  await page.goto(`${baseUrl}/#/login`);
  await waitForPage(page, "login-page", `${role}: login page`);
  await page.fill(byTestId("login-email"), user.email);
  await page.fill(byTestId("login-password"), user.password);
  await page.click(byTestId("login-submit"));
  await waitForPage(page, "profile-email", `${role}: after Login`);
  const shownRole = (await page.innerText(`${byTestId("nav-user")} .role`)).trim();
  if (shownRole !== role) fail(`${user.email} is signed in as ${JSON.stringify(shownRole)}, want ${role}`);
}

async function main() {
  if (!admin.email || !admin.password) {
    fail("SAFRA_ADMIN_EMAIL and SAFRA_ADMIN_PASSWORD must name an admin to sign in as (the jobs monitor is theirs only)");
  }
  if (parkedAction !== "retry" && parkedAction !== "discard") {
    fail(`SAFRA_PARKED_ACTION is ${JSON.stringify(parkedAction)}, want "retry" or "discard"`);
  }
  console.log(`jobs: checking ${baseUrl} with ${executablePath} as ${admin.email} and ${investor.email}`);
  const context = await launch();

  const outside = [];
  const pageErrors = [];
  let listSubscriptionsCalls = 0;
  context.on("request", (req) => {
    const url = req.url();
    if (url.startsWith("data:")) return;
    if (new URL(url).origin !== origin) outside.push(url);
    if (new URL(url).pathname.slice(1) === LIST_SUBSCRIPTIONS) listSubscriptionsCalls++;
  });
  // One tab per user: the console keeps its session in sessionStorage.
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (err) => pageErrors.push(err.message));

  await step("the admin signs in; the nav bar offers Jobs", async () => {
    await signIn(page, admin, "admin");
    if (!(await page.locator(byTestId("nav-jobs")).count())) fail("the admin's nav bar has no Jobs");
    await page.click(byTestId("nav-jobs"));
    await waitForPage(page, "jobs-page", "jobs page");
  });

  await step(`the monitor lists the ${SUBSCRIBERS.join(", ")} subscribers`, async () => {
    for (const name of SUBSCRIBERS) {
      await waitForShown(page, `${byTestId("jobs-subscription")}[data-name="${name}"]`, `subscriber ${name}`);
    }
    const shown = await page.locator(byTestId("jobs-subscription")).evaluateAll((rows) => rows.map((r) => r.dataset.name));
    console.log(`       (subscribers: ${shown.join(", ")})`);
  });

  await step(`the monitor lists the outboxes of ${SERVICES.join(", ")}`, async () => {
    for (const service of SERVICES) {
      await waitForShown(page, `${byTestId("jobs-outbox")}[data-service="${service}"]`, `outbox of ${service}`);
    }
  });

  await step(`the monitor refreshes by itself: "updated" changes within ${REFRESH_WITHIN_MS / 1000} s`, async () => {
    await waitForShown(page, `${byTestId("jobs-updated")}[data-updated]`, "updated time");
    const before = await page.getAttribute(byTestId("jobs-updated"), "data-updated");
    try {
      await page.waitForFunction(
        ([selector, previous]) => document.querySelector(selector)?.getAttribute("data-updated") !== previous,
        [byTestId("jobs-updated"), before],
        { timeout: REFRESH_WITHIN_MS },
      );
    } catch {
      const shown = await page.innerText(byTestId("jobs-updated")).catch(() => "(missing)");
      fail(`"updated" still reads ${JSON.stringify(shown.trim())} after ${REFRESH_WITHIN_MS} ms`);
    }
    const error = page.locator(ERRORS);
    if (await error.count()) fail(`the page shows an error: ${(await error.first().innerText()).trim()}`);
  });

  if (parkedEventId) {
    await step(`the parked event ${parkedEventId} is listed, and ${parkedAction === "retry" ? "Retry" : "Discard"} removes it`, async () => {
      const row = `${byTestId("jobs-parked-event")}[data-id="${parkedEventId}"]`;
      const refresh = async () => {
        await page.click(byTestId("jobs-parked-refresh"));
        await page.locator(`${byTestId("jobs-parked-refresh")}:not([disabled])`).waitFor();
      };
      const listed = await eventually(PARKED_TIMEOUT_MS, async () => {
        if (await page.locator(row).count()) return true;
        await refresh();
        return false;
      });
      if (!listed) {
        const shown = await page.locator(byTestId("jobs-parked")).innerText().catch(() => "(missing)");
        fail(`no row for parked event ${parkedEventId} after ${PARKED_TIMEOUT_MS} ms; the list shows: ${shown.trim()}`);
      }
      const subscription = await page.getAttribute(row, "data-subscription");
      await page.click(`${row} ${byTestId(`jobs-parked-${parkedAction}`)}`);
      try {
        await page.locator(row).waitFor({ state: "detached" });
      } catch {
        const shown = await page.locator(byTestId("jobs-parked-action-status")).innerText().catch(() => "");
        fail(`the row is still listed after ${parkedAction}${shown.trim() ? `; the page shows: ${shown.trim()}` : ""}`);
      }
      const status = page.locator(`${byTestId("jobs-parked-action-status")} ${ERRORS}`);
      if (await status.count()) fail(`${parkedAction} failed: ${(await status.first().innerText()).trim()}`);
      // Gone at the server too, not only from the page.
      await refresh();
      await sleep(500);
      if (await page.locator(row).count()) fail(`parked event ${parkedEventId} is listed again after a refresh`);
      console.log(`       (${parkedAction} of ${subscription}'s parked event)`);
    });
  } else {
    console.log("skip - SAFRA_PARKED_EVENT_ID is unset: no parked event to retry or discard");
  }

  await step("leaving the page stops its refresh", async () => {
    await page.click(byTestId("nav-profile"));
    await waitForPage(page, "profile-email", "profile page");
    // A refresh already on its way may still land; none may start after it.
    await sleep(500);
    const before = listSubscriptionsCalls;
    await sleep(REFRESH_WITHIN_MS);
    if (listSubscriptionsCalls !== before) {
      fail(`${listSubscriptionsCalls - before} ListSubscriptions call(s) in ${REFRESH_WITHIN_MS} ms after leaving the page`);
    }
  });

  await step("an investor (a tab of their own) has no Jobs in the nav bar and is refused PERMISSION_DENIED at #/jobs", async () => {
    const other = await context.newPage();
    other.on("pageerror", (err) => pageErrors.push(err.message));
    await other.goto(`${baseUrl}/#/register`);
    await waitForPage(other, "register-page", "investor: register page");
    await other.fill(byTestId("register-email"), investor.email);
    await other.fill(byTestId("register-password"), investor.password);
    await other.fill(byTestId("register-display-name"), "Jobs investor");
    await other.selectOption(byTestId("register-role"), "investor");
    await other.click(byTestId("register-submit"));
    await waitForPage(other, "login-page", "investor: after Register");
    await signIn(other, investor, "investor");
    if (await other.locator(byTestId("nav-jobs")).count()) fail("the investor's nav bar offers Jobs");
    await other.goto(`${baseUrl}/#/jobs`);
    await other.locator(byTestId("error-code")).first().waitFor({ state: "visible" }).catch(() => {});
    const code = (await other.locator(byTestId("error-code")).first().innerText().catch(() => "(no error shown)")).trim();
    if (code !== "PERMISSION_DENIED") fail(`the investor's #/jobs shows ${code}, want PERMISSION_DENIED`);
    if (await other.locator(byTestId("jobs-subscription")).count()) fail("the investor sees subscribers");
  });

  await step("nothing was loaded from another origin and the pages threw nothing", async () => {
    if (outside.length) fail(`requests outside ${origin}: ${outside.join(", ")}`);
    if (pageErrors.length) fail(`uncaught errors on the page: ${pageErrors.join(" | ")}`);
  });
}

await runChecks("jobs", RUN_TIMEOUT_MS, main);

// End-to-end check of the console's notifications page in a real browser
// (Debian's chromium, driven by playwright-core) against a running gateway
// that serves it and the whole mesh behind it:
//
//   node test/notifications.mjs [baseUrl]  (default $SAFRA_GATEWAY_URL or http://127.0.0.1:8080)
//
// An investor registers and signs in in the console (the nav bar offers
// Notifications and no Jobs), opens Notifications and sees the welcome
// arrive (UserRegistered reaches the notifications service over the bus)
// with the stream live. A producer then registers and issues an offering,
// and the investor deposits and invests part of it, all from Node over
// grpc-web (the generated clients in test/gen; each user logs in there on
// their own, so the tab's session is left alone). The investor's open tab
// shows "Investment confirmed" arrive on top without a reload, the unread
// count (on the page and in the nav bar) goes to 2, and marking it read
// brings it to 1. Leaving the page closes its stream. Env: CHROMIUM_PATH
// (default /usr/bin/chromium). Prints one line per step; exits 1 on a
// failure, with the page's own error when it showed one. The whole run is
// bounded.
import { randomBytes, randomUUID } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { baseUrl, byTestId, executablePath, fail, launch, origin, runChecks, step, STEP_TIMEOUT_MS, waiters } from "./harness.mjs";

let generated;
try {
  generated = {
    ...(await import("./gen/safra/accounts/v1/accounts_pb.js")),
    ...(await import("./gen/safra/marketplace/v1/marketplace_pb.js")),
    ...(await import("./gen/safra/wallet/v1/wallet_pb.js")),
  };
} catch (err) {
  console.error(`notifications: cannot load the generated clients (run \`npm run generate\` first): ${err.message}`);
  process.exit(2);
}
const { AccountsService, MarketplaceService, Role, WalletService } = generated;

/** Notifications are made from events, asynchronously, after the change. */
const ARRIVAL_TIMEOUT_MS = 30_000;
const RUN_TIMEOUT_MS = 120_000;

const run = randomBytes(6).toString("hex");
const newPassword = () => `pw-${randomBytes(15).toString("base64url")}`; // 23 characters
const investor = { email: `notified-investor-${run}@example.com`, password: newPassword() };
const producer = { email: `notified-producer-${run}@example.com`, password: newPassword() };
const STREAM = "safra.notifications.v1.NotificationsService/StreamNotifications";

// The offering: R$ 1000.00 face value, two installments of R$ 550.00,
// maturing in about a year. The investor puts in R$ 100.00 only, so the
// offering stays open and no "offering funded" notification joins the two
// the test counts.
const FACE_VALUE_MINOR = 100_000n;
const INSTALLMENT_MINOR = 55_000n;
const DEPOSIT_MINOR = 20_000n;
const INVEST_MINOR = 10_000n;
const DAY_MS = 86_400_000;
const brl = (amountMinor) => ({ currencyCode: "BRL", amountMinor });

const ERRORS = `${byTestId("error")}, ${byTestId("input-error")}`;
const { waitForPage } = waiters(ERRORS);

/** A google.type.Date for `d` in the local time zone. */
function civilDate(d) {
  return { year: d.getFullYear(), month: d.getMonth() + 1, day: d.getDate() };
}

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

/** Waits up to `timeoutMs` for `selector`, or for the page's error. */
async function waitForArrival(page, selector, timeoutMs, what) {
  try {
    await page.locator(`${selector}, ${ERRORS}`).first().waitFor({ state: "visible", timeout: timeoutMs });
  } catch {
    fail(`${what}: ${selector} did not appear within ${timeoutMs} ms (at ${page.url()})`);
  }
  const error = page.locator(ERRORS);
  if (await error.count()) fail(`${what}: the page shows an error: ${(await error.first().innerText()).trim()}`);
}

/** The unread count the page and the nav badge show (`data-count`). */
function unreadCounts(page) {
  return page.evaluate(
    (selectors) => selectors.map((s) => document.querySelector(s)?.getAttribute("data-count") ?? null),
    [byTestId("notifications-unread-count"), byTestId("nav-notifications-unread")],
  );
}

/** Waits until both show `want`. */
async function expectUnread(page, want) {
  const shown = await eventually(STEP_TIMEOUT_MS, async () => {
    const [onPage, inNav] = await unreadCounts(page);
    return onPage === String(want) && inNav === String(want);
  });
  if (!shown) {
    const [onPage, inNav] = await unreadCounts(page);
    fail(`the unread count shows ${onPage} on the page and ${inNav} in the nav bar, want ${want}`);
  }
}

// ---- Node clients (grpc-web, as the console speaks it) ---------------------

const accounts = createClient(AccountsService, createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }));

/** Clients that call as the holder of `accessToken`. */
function clientsFor(accessToken) {
  const transport = createGrpcWebTransport({
    baseUrl,
    httpVersion: "1.1",
    interceptors: [
      (next) => (req) => {
        req.header.set("authorization", `Bearer ${accessToken}`);
        return next(req);
      },
    ],
  });
  return { marketplace: createClient(MarketplaceService, transport), wallet: createClient(WalletService, transport) };
}

/** Runs a Node call; a failed one fails the step with its code and message. */
async function call(what, fn) {
  try {
    return await fn({ timeoutMs: STEP_TIMEOUT_MS });
  } catch (err) {
    if (err instanceof ConnectError) fail(`${what}: ${Code[err.code]}: ${err.rawMessage}`);
    throw err;
  }
}

async function logIn(user) {
  const res = await call(`Login as ${user.email}`, (opts) => accounts.login({ email: user.email, password: user.password }, opts));
  return clientsFor(res.accessToken);
}

// ---- the run ---------------------------------------------------------------

async function main() {
  console.log(`notifications: checking ${baseUrl} with ${executablePath} as ${investor.email} and ${producer.email}`);
  const context = await launch();

  const outside = [];
  const pageErrors = [];
  const openStreams = new Set();
  context.on("request", (req) => {
    const url = req.url();
    if (url.startsWith("data:")) return;
    if (new URL(url).origin !== origin) outside.push(url);
    if (new URL(url).pathname.slice(1) === STREAM) openStreams.add(req);
  });
  context.on("requestfinished", (req) => openStreams.delete(req));
  context.on("requestfailed", (req) => openStreams.delete(req));
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (err) => pageErrors.push(err.message));

  await step("an investor registers and signs in; the nav bar offers Notifications and no Jobs", async () => {
    await page.goto(`${baseUrl}/#/register`);
    await waitForPage(page, "register-page", "register page");
    await page.fill(byTestId("register-email"), investor.email);
    await page.fill(byTestId("register-password"), investor.password);
    await page.fill(byTestId("register-display-name"), "Notified investor");
    await page.selectOption(byTestId("register-role"), "investor");
    await page.click(byTestId("register-submit"));
    await waitForPage(page, "login-page", "after Register");
    await page.fill(byTestId("login-email"), investor.email);
    await page.fill(byTestId("login-password"), investor.password);
    await page.click(byTestId("login-submit"));
    await waitForPage(page, "profile-email", "after Login");
    if (!(await page.locator(byTestId("nav-notifications")).count())) fail("the investor's nav bar has no Notifications");
    if (await page.locator(byTestId("nav-jobs")).count()) fail("the investor's nav bar offers Jobs, an admin's page");
  });

  await step(`the Notifications page shows the welcome (within ${ARRIVAL_TIMEOUT_MS / 1000} s), unread, and its stream is live`, async () => {
    await page.click(byTestId("nav-notifications"));
    await waitForPage(page, "notifications-page", "notifications page");
    const welcome = `${byTestId("notification")}[data-kind="user_registered"]`;
    await waitForArrival(page, welcome, ARRIVAL_TIMEOUT_MS, "the welcome");
    const title = (await page.innerText(`${welcome} ${byTestId("notification-title")}`)).trim();
    if (title !== "Welcome to Safra") fail(`the welcome's title is ${JSON.stringify(title)}, want "Welcome to Safra"`);
    if ((await page.getAttribute(welcome, "data-read")) !== "false") fail("the welcome is not shown unread");
    if (!(await page.locator(`${welcome} ${byTestId("notification-mark-read")}`).count())) fail("the unread welcome has no Mark read");
    try {
      // Live once the stream's headers arrive; a proxy that holds them
      // back until the first message makes that the first heartbeat.
      await page.waitForFunction((selector) => document.querySelector(selector)?.textContent === "live", byTestId("notifications-live"), {
        timeout: ARRIVAL_TIMEOUT_MS,
      });
    } catch {
      const state = await page.innerText(byTestId("notifications-live")).catch(() => "(missing)");
      fail(`the stream state reads ${JSON.stringify(state)}, want "live"`);
    }
    if (openStreams.size === 0) fail(`no ${STREAM} request is open`);
    await expectUnread(page, 1);
    // Gone if the page is reloaded: the later steps check it is still there.
    await page.evaluate((marker) => {
      window.safraNotificationsMarker = marker;
    }, run);
  });

  let offeringId = "";
  await step("a producer registers and issues an offering (from Node, over grpc-web)", async () => {
    await call("Register the producer", (opts) =>
      accounts.register({ email: producer.email, password: producer.password, displayName: "Notified producer", role: Role.PRODUCER }, opts),
    );
    const { marketplace } = await logIn(producer);
    const now = Date.now();
    const res = await call("CreateOffering", (opts) =>
      marketplace.createOffering(
        {
          offering: {
            commodity: "soybean",
            quantity: 300n,
            unit: "bag_60kg",
            faceValue: brl(FACE_VALUE_MINOR),
            annualRateBps: 1250,
            maturityDate: civilDate(new Date(now + 365 * DAY_MS)),
            fundingDeadline: timestampFromDate(new Date(now + DAY_MS)),
            installments: [
              { number: 1, dueDate: civilDate(new Date(now + 180 * DAY_MS)), amount: brl(INSTALLMENT_MINOR) },
              { number: 2, dueDate: civilDate(new Date(now + 360 * DAY_MS)), amount: brl(INSTALLMENT_MINOR) },
            ],
          },
        },
        opts,
      ),
    );
    offeringId = res.offering?.id ?? "";
    if (!offeringId) fail("CreateOffering answered no offering id");
    console.log(`       (offering ${offeringId})`);
  });

  await step("the investor deposits R$ 200.00 and invests R$ 100.00 (from Node, with their own login)", async () => {
    const { marketplace, wallet } = await logIn(investor);
    await call("Deposit", (opts) => wallet.deposit({ amount: brl(DEPOSIT_MINOR), idempotencyKey: randomUUID() }, opts));
    const res = await call("Invest", (opts) =>
      marketplace.invest({ offeringId, amount: brl(INVEST_MINOR), idempotencyKey: randomUUID() }, opts),
    );
    if (!res.investment?.id) fail("Invest answered no investment");
  });

  const confirmed = `${byTestId("notification")}[data-kind="investment_created"]`;
  await step(`the open page shows "Investment confirmed" on top (within ${ARRIVAL_TIMEOUT_MS / 1000} s) without a reload`, async () => {
    await waitForArrival(page, confirmed, ARRIVAL_TIMEOUT_MS, "the investment's notification");
    const marker = await page.evaluate(() => window.safraNotificationsMarker);
    if (marker !== run) fail("the page was reloaded (its marker is gone): the notification did not arrive live");
    if (!page.url().endsWith("#/notifications")) fail(`the tab is at ${page.url()}, want #/notifications`);
    const title = (await page.innerText(`${confirmed} ${byTestId("notification-title")}`)).trim();
    if (title !== "Investment confirmed") fail(`the notification's title is ${JSON.stringify(title)}, want "Investment confirmed"`);
    const top = await page.locator(byTestId("notification")).first().getAttribute("data-kind");
    if (top !== "investment_created") fail(`the newest notification shown is ${top}, want investment_created on top`);
    if ((await page.locator(confirmed).count()) !== 1) fail(`the investment is shown ${await page.locator(confirmed).count()} times, want once`);
    const link = await page.getAttribute(`${confirmed} ${byTestId("notification-offering")}`, "href");
    if (link !== `#/offerings/${offeringId}`) fail(`the notification links to ${link}, want #/offerings/${offeringId}`);
  });

  await step("the unread count goes to 2; marking the investment's notification read brings it to 1", async () => {
    await expectUnread(page, 2);
    await page.click(`${confirmed} ${byTestId("notification-mark-read")}`);
    const read = await eventually(STEP_TIMEOUT_MS, async () => (await page.getAttribute(confirmed, "data-read")) === "true");
    if (!read) {
      const shown = await page.locator(byTestId("notifications-action-status")).innerText().catch(() => "");
      fail(`the notification is not shown read${shown.trim() ? `; the page shows: ${shown.trim()}` : ""}`);
    }
    if (await page.locator(`${confirmed} ${byTestId("notification-mark-read")}`).count()) fail("the read notification still has Mark read");
    await expectUnread(page, 1);
    const welcome = `${byTestId("notification")}[data-kind="user_registered"]`;
    if ((await page.getAttribute(welcome, "data-read")) !== "false") fail("the welcome is no longer unread");
  });

  await step("leaving the page closes its stream; the nav badge stays", async () => {
    if (openStreams.size === 0) fail(`no ${STREAM} request was open before leaving`);
    await page.click(byTestId("nav-profile"));
    await waitForPage(page, "profile-email", "profile page");
    const closed = await eventually(STEP_TIMEOUT_MS, async () => openStreams.size === 0);
    if (!closed) fail(`${openStreams.size} ${STREAM} request(s) still open after leaving the page`);
    await eventually(STEP_TIMEOUT_MS, async () => (await unreadCounts(page))[1] === "1");
    const [, inNav] = await unreadCounts(page);
    if (inNav !== "1") fail(`the nav badge shows ${inNav} on the profile page, want 1`);
  });

  await step("nothing was loaded from another origin and the page threw nothing", async () => {
    if (outside.length) fail(`requests outside ${origin}: ${outside.join(", ")}`);
    if (pageErrors.length) fail(`uncaught errors on the page: ${pageErrors.join(" | ")}`);
  });
}

await runChecks("notifications", RUN_TIMEOUT_MS, main);

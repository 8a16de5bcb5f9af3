// End-to-end check of the console's marketplace pages in a real browser
// (Debian's chromium, driven by playwright-core) against a running gateway
// that serves it and the whole mesh behind it:
//
//   node test/marketplace.mjs [baseUrl]  (default $SAFRA_GATEWAY_URL or http://127.0.0.1:8080)
//
// A producer registers (or signs in, when SAFRA_PRODUCER_EMAIL and
// SAFRA_PRODUCER_PASSWORD are set), submits an offering with an empty
// commodity and sees the violation next to that field, then issues it with
// a 2-installment schedule and sees it OPEN. An investor registers,
// deposits R$ 2000.00 (double click: one deposit), invests the whole face
// value (double click: one investment, one debit) and sees it FUNDED. The
// producer waits for the funding payout in the wallet, pays installment 1
// and sees it paid and debited. Each user has a tab of their own (the
// session lives in sessionStorage, per tab). Env: CHROMIUM_PATH (default
// /usr/bin/chromium). Prints one line per step; exits 1 on a failure, with
// the page's own error when it showed one. The whole run is bounded.
import { randomBytes } from "node:crypto";
import { baseUrl, byTestId, executablePath, fail, launch, origin, runChecks, step, STEP_TIMEOUT_MS, waiters } from "./harness.mjs";

/** The producer is paid asynchronously (an event) once the offering is funded. */
const PAYOUT_TIMEOUT_MS = 20_000;
const RUN_TIMEOUT_MS = 120_000;

const run = randomBytes(6).toString("hex");
const newPassword = () => `pw-${randomBytes(15).toString("base64url")}`; // 23 characters
const producer = process.env.SAFRA_PRODUCER_EMAIL && process.env.SAFRA_PRODUCER_PASSWORD
  ? { email: process.env.SAFRA_PRODUCER_EMAIL, password: process.env.SAFRA_PRODUCER_PASSWORD, existing: true }
  : { email: `producer-${run}@example.com`, password: newPassword(), existing: false };
const investor = { email: `investor-${run}@example.com`, password: newPassword(), existing: false };
const INVEST = "safra.marketplace.v1.MarketplaceService/Invest";
const DEPOSIT = "safra.wallet.v1.WalletService/Deposit";
const CREATE_OFFERING = "safra.marketplace.v1.MarketplaceService/CreateOffering";

// The offering: R$ 1000.00 face value, two installments of R$ 550.00 (they
// must add up to at least the face value), maturing in about a year,
// funding closing in a day, the due dates in between.
const FACE_VALUE = { text: "1000.00", minor: 100_000 };
const INSTALLMENT = { text: "550.00", minor: 55_000 };
const DEPOSIT_AMOUNT = { text: "2000.00", minor: 200_000 };
const DAY_MS = 86_400_000;
const now = Date.now();
const maturity = localDate(new Date(now + 365 * DAY_MS));
const fundingDeadline = localDateTime(new Date(now + DAY_MS));
const dueDates = [localDate(new Date(now + 180 * DAY_MS)), localDate(new Date(now + 360 * DAY_MS))];

/** The console's errors: a failed call's, and an input refused before anything was sent. */
const ERRORS = `${byTestId("error")}, ${byTestId("input-error")}`;
const { waitForShown, waitForPage } = waiters(ERRORS);

/** `YYYY-MM-DD` in the local time zone (an `<input type=date>` value). */
function localDate(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** `YYYY-MM-DDTHH:MM` in the local time zone (`<input type=datetime-local>`);
 * Node and the browser it starts share the time zone. */
function localDateTime(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${localDate(d)}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
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

/** The balance the wallet page shows once it is `want` (it loads beside
 * the statement and may render later), else the one shown at the end. */
async function balanceOf(page, want) {
  const seen = await eventually(STEP_TIMEOUT_MS, async () => {
    const minor = await amountMinor(page, byTestId("wallet-balance"));
    return minor === want ? { minor } : null;
  });
  return seen ? seen.minor : amountMinor(page, byTestId("wallet-balance"));
}

async function amountMinor(page, selector) {
  const raw = await page.getAttribute(selector, "data-amount-minor");
  return raw === null ? null : Number(raw);
}

async function lastCall(page) {
  return {
    method: (await page.innerText(byTestId("last-call-method")).catch(() => "")).trim(),
    status: (await page.innerText(byTestId("last-call-status")).catch(() => "")).trim(),
    traceId: (await page.innerText(byTestId("last-trace-id")).catch(() => "")).trim(),
  };
}

/** Hash navigation only (no reload, as in browser.mjs: a reload could
 * abort a Refresh after the server rotated the pair). */
async function open(page, hash, testid, what) {
  await page.goto(`${baseUrl}/#${hash}`);
  await waitForPage(page, testid, what);
}

async function signUp(page, user, role) {
  if (!user.existing) {
    await open(page, "/register", "register-page", `${role}: register page`);
    await page.fill(byTestId("register-email"), user.email);
    await page.fill(byTestId("register-password"), user.password);
    await page.fill(byTestId("register-display-name"), `Marketplace ${role}`);
    await page.selectOption(byTestId("register-role"), role);
    await page.click(byTestId("register-submit"));
    await waitForPage(page, "login-page", `${role}: after Register`);
  } else {
    await open(page, "/login", "login-page", `${role}: login page`);
  }
  await page.fill(byTestId("login-email"), user.email);
  await page.fill(byTestId("login-password"), user.password);
  await page.click(byTestId("login-submit"));
  await waitForPage(page, "profile-email", `${role}: after Login`);
  const shownRole = (await page.innerText(`${byTestId("nav-user")} .role`)).trim();
  if (shownRole !== role) fail(`${user.email} is signed in as ${JSON.stringify(shownRole)}, want ${role}`);
}

/** Reads the offering page's status once it has loaded. */
async function offeringStatus(page) {
  await waitForPage(page, "offering-status", "offering page");
  return page.getAttribute(byTestId("offering-status"), "data-status");
}

async function main() {
  console.log(`marketplace: checking ${baseUrl} with ${executablePath} as ${producer.email} and ${investor.email}`);
  const context = await launch();

  const outside = [];
  const pageErrors = [];
  const calls = new Map();
  context.on("request", (req) => {
    const url = req.url();
    if (url.startsWith("data:")) return;
    if (new URL(url).origin !== origin) outside.push(url);
    const method = new URL(url).pathname.slice(1);
    calls.set(method, (calls.get(method) ?? 0) + 1);
  });
  // One tab per user: the console keeps its session in sessionStorage.
  const seller = context.pages()[0] ?? (await context.newPage());
  const buyer = await context.newPage();
  for (const page of [seller, buyer]) page.on("pageerror", (err) => pageErrors.push(err.message));

  let offeringId = "";
  const offeringPath = () => `/offerings/${offeringId}`;

  await step(`the producer ${producer.existing ? "signs in" : "registers and signs in"}; the nav offers New offering`, async () => {
    await signUp(seller, producer, "producer");
    for (const id of ["nav-offerings", "nav-offerings-new", "nav-wallet"]) {
      if (!(await seller.locator(byTestId(id)).count())) fail(`the producer's nav bar has no ${byTestId(id)}`);
    }
    await seller.click(byTestId("nav-offerings-new"));
    await waitForPage(seller, "new-offering-form", "new offering page");
  });

  await step("an offering without a commodity is refused, the violation shown next to the commodity field", async () => {
    await seller.fill(byTestId("new-offering-commodity"), "");
    await seller.fill(byTestId("new-offering-quantity"), "300");
    await seller.fill(byTestId("new-offering-unit"), "bag_60kg");
    await seller.fill(byTestId("new-offering-face-value"), FACE_VALUE.text);
    await seller.fill(byTestId("new-offering-rate"), "12.5");
    await seller.fill(byTestId("new-offering-maturity"), maturity);
    await seller.fill(byTestId("new-offering-deadline"), fundingDeadline);
    await seller.click(byTestId("installment-add"));
    for (const [i, due] of dueDates.entries()) {
      await seller.fill(byTestId(`installment-due-${i + 1}`), due);
      await seller.fill(byTestId(`installment-amount-${i + 1}`), INSTALLMENT.text);
    }
    await seller.click(byTestId("new-offering-submit"));
    const beside = `[data-path="offering.commodity"] ${byTestId("field-error")}`;
    try {
      await seller.locator(beside).first().waitFor({ state: "visible" });
    } catch {
      const shown = await seller.locator(ERRORS).first().innerText().catch(() => "(no error shown)");
      fail(`no violation next to the commodity field; the page shows: ${shown.trim()}`);
    }
    const text = (await seller.innerText(beside)).trim();
    const path = await seller.getAttribute(beside, "data-field");
    if (!text || path !== "offering.commodity") fail(`the violation beside commodity reads ${JSON.stringify(text)} for ${path}`);
    const call = await lastCall(seller);
    if (call.method !== CREATE_OFFERING || call.status !== "INVALID_ARGUMENT") {
      fail(`the last call shows ${call.method} ${call.status}, want ${CREATE_OFFERING} INVALID_ARGUMENT`);
    }
    console.log(`       (${path}: ${text})`);
  });

  await step("with a commodity the offering is issued and its page shows it OPEN with 2 unpaid installments", async () => {
    await seller.fill(byTestId("new-offering-commodity"), "soybean");
    await seller.click(byTestId("new-offering-submit"));
    await waitForPage(seller, "offering-status", "after CreateOffering");
    offeringId = (await seller.innerText(byTestId("offering-id"))).trim();
    if (!seller.url().endsWith(`#${offeringPath()}`)) fail(`the offering page is at ${seller.url()}, want #${offeringPath()}`);
    const status = await offeringStatus(seller);
    if (status !== "open") fail(`the new offering is ${status}, want open`);
    const face = await amountMinor(seller, byTestId("offering-face-value"));
    if (face !== FACE_VALUE.minor) fail(`the face value is ${face} centavos, want ${FACE_VALUE.minor}`);
    const rows = seller.locator(byTestId("installment-row"));
    if ((await rows.count()) !== 2) fail(`the schedule has ${await rows.count()} rows, want 2`);
    for (let n = 1; n <= 2; n++) {
      const row = `${byTestId("installment-row")}[data-number="${n}"]`;
      if ((await seller.getAttribute(row, "data-paid")) !== "false") fail(`installment ${n} is not shown unpaid`);
      const amount = await amountMinor(seller, `${row} ${byTestId("installment-amount")}`);
      if (amount !== INSTALLMENT.minor) fail(`installment ${n} is ${amount} centavos, want ${INSTALLMENT.minor}`);
      const due = (await seller.innerText(`${row} ${byTestId("installment-due")}`)).trim();
      if (due !== dueDates[n - 1]) fail(`installment ${n} falls due ${due}, want ${dueDates[n - 1]}`);
    }
    console.log(`       (offering ${offeringId})`);
  });

  await step("the offerings list, filtered by its producer and OPEN, links to it", async () => {
    const producerId = await seller.getAttribute(byTestId("offering-producer"), "data-producer-id");
    await open(seller, `/offerings?status=open&producer_id=${producerId}`, "offerings-page", "offerings list");
    const row = `${byTestId("offerings-row")}[data-offering-id="${offeringId}"]`;
    await waitForShown(seller, row, "offerings list");
    await seller.click(`${row} ${byTestId("offering-link")}`);
    await waitForPage(seller, "offering-status", "from the list to the offering");
    if (!seller.url().endsWith(`#${offeringPath()}`)) fail(`the list's link leads to ${seller.url()}`);
  });

  await step("an investor registers and signs in in a tab of their own", async () => {
    await signUp(buyer, investor, "investor");
    if (await buyer.locator(byTestId("nav-offerings-new")).count()) fail("the investor's nav bar offers New offering");
  });

  await step(`a double-clicked deposit of R$ ${DEPOSIT_AMOUNT.text} is made once`, async () => {
    await open(buyer, "/wallet", "deposit-form", "wallet page");
    await waitForPage(buyer, "wallet-balance", "wallet page");
    await buyer.fill(byTestId("deposit-amount"), DEPOSIT_AMOUNT.text);
    await buyer.dblclick(byTestId("deposit-submit"));
    await waitForPage(buyer, "deposit-result", "after Deposit");
    const balance = await eventually(STEP_TIMEOUT_MS, async () => {
      const minor = await amountMinor(buyer, byTestId("wallet-balance"));
      return minor === DEPOSIT_AMOUNT.minor ? minor : null;
    });
    const shown = await amountMinor(buyer, byTestId("wallet-balance"));
    if (balance === null) fail(`the balance is ${shown} centavos, want ${DEPOSIT_AMOUNT.minor}`);
    // The statement reloads beside the balance and may render after it.
    const depositRows = buyer.locator(`${byTestId("transaction-row")}[data-kind="deposit"]`);
    const listed = await eventually(STEP_TIMEOUT_MS, async () => ((await depositRows.count()) === 1 ? 1 : null));
    if (listed === null) fail(`the wallet lists ${await depositRows.count()} deposits, want 1`);
    console.log(`       (${calls.get(DEPOSIT) ?? 0} Deposit request(s) sent; balance ${(await buyer.innerText(byTestId("wallet-balance"))).trim()})`);
  });

  await step("the investor invests the whole face value with a double click; the offering is FUNDED", async () => {
    await open(buyer, offeringPath(), "invest-form", "offering page (investor)");
    await buyer.fill(byTestId("invest-amount"), FACE_VALUE.text);
    await buyer.dblclick(byTestId("invest-submit"));
    await waitForPage(buyer, "invest-result", "after Invest");
    const status = await eventually(STEP_TIMEOUT_MS, async () => {
      const s = await buyer.getAttribute(byTestId("offering-status"), "data-status").catch(() => null);
      return s === "funded" ? s : null;
    });
    if (!status) fail(`the offering is ${await buyer.getAttribute(byTestId("offering-status"), "data-status")}, want funded`);
    const raised = await amountMinor(buyer, byTestId("offering-raised"));
    if (raised !== FACE_VALUE.minor) fail(`raised is ${raised} centavos, want ${FACE_VALUE.minor}`);
    if (await buyer.locator(byTestId("invest-form")).count()) fail("the funded offering still shows the invest form");
    console.log(`       (${calls.get(INVEST) ?? 0} Invest request(s) sent)`);
  });

  await step("the investor's wallet shows exactly one investment, and the balance dropped once", async () => {
    await open(buyer, "/wallet", "wallet-balance", "wallet page after investing");
    await waitForShown(buyer, byTestId("transaction-row"), "wallet transactions");
    const investments = buyer.locator(`${byTestId("transaction-row")}[data-kind="investment"]`);
    const count = await investments.count();
    if (count !== 1) fail(`the wallet lists ${count} investment transactions, want exactly 1`);
    const debit = Number(await investments.first().getAttribute("data-amount-minor"));
    if (debit !== -FACE_VALUE.minor) fail(`the investment moved ${debit} centavos, want ${-FACE_VALUE.minor}`);
    const linked = await investments.first().getAttribute("data-offering-id");
    if (linked !== offeringId) fail(`the investment names offering ${linked}, want ${offeringId}`);
    const want = DEPOSIT_AMOUNT.minor - FACE_VALUE.minor;
    const balance = await balanceOf(buyer, want);
    if (balance !== want) fail(`the balance is ${balance} centavos, want ${want}`);
  });

  let balanceAfterPayout = 0;
  await step(`the producer's wallet receives the funding payout (within ${PAYOUT_TIMEOUT_MS / 1000} s)`, async () => {
    await open(seller, "/wallet", "wallet-balance", "producer's wallet");
    const payout = `${byTestId("transaction-row")}[data-kind="funding_payout"][data-offering-id="${offeringId}"]`;
    const refresh = async () => {
      await seller.click(byTestId("wallet-refresh"));
      await seller.locator(`${byTestId("wallet-refresh")}:not([disabled])`).waitFor();
    };
    const found = await eventually(PAYOUT_TIMEOUT_MS, async () => {
      if (await seller.locator(payout).count()) return true;
      await refresh();
      return false;
    });
    if (!found) fail(`no funding payout for ${offeringId} in the producer's wallet after ${PAYOUT_TIMEOUT_MS} ms`);
    // The balance and the list load side by side: read the balance again
    // now that the payout is in.
    await refresh();
    const amount = Number(await seller.getAttribute(payout, "data-amount-minor"));
    if (amount !== FACE_VALUE.minor) fail(`the payout is ${amount} centavos, want ${FACE_VALUE.minor}`);
    balanceAfterPayout = await amountMinor(seller, byTestId("wallet-balance"));
    if (balanceAfterPayout < INSTALLMENT.minor) fail(`the producer holds ${balanceAfterPayout} centavos, too little to pay ${INSTALLMENT.minor}`);
  });

  await step("the producer reloads the offering (FUNDED), pays installment 1 and sees it paid", async () => {
    await open(seller, offeringPath(), "offering-status", "offering page (producer)");
    const status = await offeringStatus(seller);
    if (status !== "funded") fail(`the producer sees the offering ${status}, want funded`);
    await seller.click(byTestId("installment-pay-1"));
    await waitForPage(seller, "pay-result", "after PayInstallment");
    const first = `${byTestId("installment-row")}[data-number="1"]`;
    const paid = await eventually(STEP_TIMEOUT_MS, async () => (await seller.getAttribute(first, "data-paid")) === "true");
    if (!paid) fail("installment 1 is not shown paid");
    const second = `${byTestId("installment-row")}[data-number="2"]`;
    if ((await seller.getAttribute(second, "data-paid")) !== "false") fail("installment 2 is shown paid too");
    if (!(await seller.locator(byTestId("installment-pay-2")).count())) fail("installment 2 has no Pay button");
    const call = await lastCall(seller);
    if (!/^[0-9a-f]{32}$/.test(call.traceId)) fail(`the last call shows trace ${JSON.stringify(call.traceId)}, want 32 hex digits`);
  });

  await step("the producer's wallet shows the installment paid from the payout", async () => {
    await open(seller, "/wallet", "wallet-balance", "producer's wallet after paying");
    const payment = `${byTestId("transaction-row")}[data-kind="installment_payment"][data-offering-id="${offeringId}"]`;
    await waitForShown(seller, payment, "producer's transactions");
    const count = await seller.locator(payment).count();
    if (count !== 1) fail(`the wallet lists ${count} installment payments for the offering, want 1`);
    const amount = Number(await seller.getAttribute(payment, "data-amount-minor"));
    if (amount !== -INSTALLMENT.minor) fail(`the payment moved ${amount} centavos, want ${-INSTALLMENT.minor}`);
    if (!(await seller.locator(`${byTestId("transaction-row")}[data-kind="funding_payout"][data-offering-id="${offeringId}"]`).count())) {
      fail("the funding payout is no longer listed");
    }
    const want = balanceAfterPayout - INSTALLMENT.minor;
    const balance = await balanceOf(seller, want);
    if (balance !== want) fail(`the producer's balance is ${balance} centavos, want ${want}`);
  });

  await step("nothing was loaded from another origin and the pages threw nothing", async () => {
    if (outside.length) fail(`requests outside ${origin}: ${outside.join(", ")}`);
    if (pageErrors.length) fail(`uncaught errors on the page: ${pageErrors.join(" | ")}`);
  });
}

await runChecks("marketplace", RUN_TIMEOUT_MS, main);

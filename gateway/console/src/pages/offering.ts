// Offering page (`#/offerings/<id>`, public): one offering (GetOffering)
// with its installment schedule. While it is OPEN a signed-in investor may
// invest (Invest) and its producer may cancel it (CancelOffering); while it
// is FUNDED its producer pays each installment (WalletService.PayInstallment).
// Every money-moving call carries an idempotency key the page drew when it
// showed the form (see idempotency.ts), so a double click or a retry acts
// once.
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { marketplace, wallet } from "../api";
import { field, h, replace } from "../dom";
import { errorReason, errorView } from "../errors";
import { formAction, labeled, runAction } from "../forms";
import { day, decimal, enumLabel, enumName, money, percent, time } from "../format";
import {
  CancelReason,
  InvestmentStatus,
  OfferingStatus,
  type Installment,
  type Offering,
} from "../gen/safra/marketplace/v1/marketplace_pb";
import { IdempotencyKey } from "../idempotency";
import { Inputs } from "../parse";
import type { PageContext } from "../router";
import { claims, getSession } from "../session";

/** How often, and how many times, the page asks again after paying until
 * the marketplace shows the payment (it learns it from an event). */
const CONFIRM_POLL_MS = 1_000;
const CONFIRM_POLLS = 15;

export function render(ctx: PageContext): Node {
  const id = ctx.params.id ?? "";
  const me = claims(getSession());
  const notice = h("div", { testid: "offering-notice" });
  const details = h("div", { testid: "offering-body" }, h("p", { class: "muted" }, "Loading…"));
  const schedule = h("div", { testid: "offering-schedule" });
  const payStatus = h("div", { class: "status", testid: "pay-status" });
  const actions = h("div", { class: "offering-actions", testid: "offering-actions" });
  const refresh = h("button", { type: "button", class: "secondary", testid: "offering-refresh" }, "Refresh");

  // Kept across re-renders: one pending operation per form or installment.
  const investKey = new IdempotencyKey();
  const payKeys = new Map<number, IdempotencyKey>();
  // Installments this page paid (the wallet confirmed them) that the
  // marketplace may not show yet, with the payment's time when known.
  const paidHere = new Map<number, Timestamp | undefined>();
  let offering: Offering | undefined;
  let polls = 0;

  async function load(): Promise<void> {
    try {
      show(await marketplace.getOffering({ offeringId: id }, { signal: ctx.signal }));
    } catch (err) {
      if (ctx.signal.aborted) return;
      replace(details, errorView(err));
      replace(schedule);
      replace(actions);
      return;
    }
    const unconfirmed = offering?.installments.some((i) => paidHere.has(i.number) && !i.paidTime);
    if (unconfirmed && polls++ < CONFIRM_POLLS) {
      setTimeout(() => ctx.signal.aborted || void load(), CONFIRM_POLL_MS);
    }
  }

  function show(o: Offering): void {
    offering = o;
    replace(details, detailsView(o));
    renderSchedule();
    renderActions();
  }

  function renderSchedule(): void {
    if (!offering) return;
    const o = offering;
    const canPay = o.status === OfferingStatus.FUNDED && o.producerId === me.sub && me.role === "producer";
    replace(schedule, scheduleView(o, paidHere, canPay ? (i) => payButton(o, i) : undefined));
  }

  function payButton(o: Offering, installment: Installment): HTMLButtonElement {
    const n = installment.number;
    const button = h("button", { type: "button", testid: `installment-pay-${n}` }, "Pay");
    button.addEventListener("click", () => {
      const key = payKeys.get(n) ?? new IdempotencyKey();
      payKeys.set(n, key);
      void runAction(button, payStatus, async () => {
        try {
          const res = await wallet.payInstallment(
            { offeringId: o.id, installmentNumber: n, idempotencyKey: key.for(`${o.id}/${n}`) },
            { signal: ctx.signal },
          );
          key.settle();
          paidHere.set(n, res.payment?.createTime);
          replace(
            notice,
            h("p", { class: "notice", testid: "pay-result", "data-number": n }, `Paid installment ${n}: ${money(res.payment?.amount)}.`),
          );
          polls = 0;
          await load();
        } catch (err) {
          key.settle(err);
          // Paid before (another tab, or a page shown before the
          // marketplace learnt of it): show it paid, and say so.
          if (errorReason(err) === "INSTALLMENT_ALREADY_PAID") {
            paidHere.set(n, undefined);
            renderSchedule();
          }
          throw err;
        }
      });
    });
    return button;
  }

  function renderActions(): void {
    if (!offering) return;
    const o = offering;
    const open = o.status === OfferingStatus.OPEN;
    const owner = o.producerId === me.sub;
    replace(
      actions,
      open && me.role === "investor" && investForm(o),
      open && (owner || me.role === "admin") && cancelControl(o),
      open &&
        !me.role &&
        h("p", { class: "muted", testid: "offering-sign-in" }, h("a", { href: "#/login" }, "Sign in"), " as an investor to invest."),
    );
  }

  function investForm(o: Offering): Node {
    const { submit, status, onsubmit } = formAction("invest", "Invest", async (form) => {
      const inputs = new Inputs();
      const amount = inputs.brl(field(form, "amount"), "amount");
      inputs.check();
      const idempotencyKey = investKey.for(`${o.id}/${amount?.amountMinor ?? ""}`);
      try {
        const res = await marketplace.invest({ offeringId: o.id, amount, idempotencyKey }, { signal: ctx.signal });
        investKey.settle();
        const investment = res.investment;
        replace(
          notice,
          h(
            "p",
            {
              class: "notice",
              testid: "invest-result",
              "data-investment-id": investment?.id ?? "",
              "data-status": investment ? enumName(InvestmentStatus, investment.status) : "",
            },
            `Invested ${money(investment?.amount)}`,
            investment && ` (${enumLabel(InvestmentStatus, investment.status)})`,
            ".",
          ),
        );
        await load();
      } catch (err) {
        investKey.settle(err);
        throw err;
      }
    });
    const remaining = o.remaining?.amountMinor ?? 0n;
    return h(
      "form",
      { class: "invest", novalidate: true, testid: "invest-form", onsubmit },
      h("h2", {}, "Invest"),
      labeled(
        `Amount in BRL (at most ${money(o.remaining)})`,
        "amount",
        h("input", {
          name: "amount",
          inputmode: "decimal",
          placeholder: "1500.00",
          value: remaining > 0n ? decimal(remaining) : "",
          testid: "invest-amount",
        }),
      ),
      submit,
      status,
    );
  }

  function cancelControl(o: Offering): Node {
    const status = h("div", { class: "status", testid: "cancel-status" });
    const confirm = h("button", { type: "button", class: "danger", testid: "offering-cancel-confirm", hidden: true }, "Yes, cancel it");
    const start = h("button", { type: "button", class: "danger", testid: "offering-cancel" }, "Cancel offering");
    start.addEventListener("click", () => {
      start.hidden = true;
      confirm.hidden = false;
    });
    confirm.addEventListener("click", () => {
      void runAction(confirm, status, async () => {
        const res = await marketplace.cancelOffering({ offeringId: o.id }, { signal: ctx.signal });
        replace(
          notice,
          h("p", { class: "notice", testid: "cancel-result" }, "Cancelled: it takes no more investments, and confirmed investments are refunded."),
        );
        if (res.offering) show(res.offering);
        else await load();
      });
    });
    return h(
      "div",
      { class: "cancel", testid: "offering-cancel-control" },
      h("h2", {}, "Cancel"),
      h("p", { class: "muted" }, "Cancelling closes the offering and refunds every confirmed investment."),
      start,
      confirm,
      status,
    );
  }

  refresh.addEventListener("click", () => void load());
  void load();

  return h(
    "section",
    { class: "page", testid: "offering-page", "data-offering-id": id },
    h("h1", {}, "Offering ", refresh),
    notice,
    details,
    schedule,
    payStatus,
    actions,
  );
}

function detailsView(o: Offering): Node {
  const status = enumName(OfferingStatus, o.status);
  const row = (label: string, testid: string, value: string, attrs: Record<string, string> = {}) => [
    h("dt", {}, label),
    h("dd", { testid, ...attrs }, value),
  ];
  const amount = (value: Offering["faceValue"]) => ({ "data-amount-minor": String(value?.amountMinor ?? 0n) });
  return h(
    "dl",
    { class: "details" },
    row("Status", "offering-status", enumLabel(OfferingStatus, o.status), { "data-status": status, class: `status-${status}` }),
    o.status === OfferingStatus.CANCELLED &&
      row("Cancelled because", "offering-cancel-reason", cancelReason(o.cancelReason)),
    row("Commodity", "offering-commodity", o.commodity),
    row("Quantity", "offering-quantity", `${o.quantity.toLocaleString("en-US")} ${o.unit}`),
    row("Face value", "offering-face-value", money(o.faceValue), amount(o.faceValue)),
    row("Raised", "offering-raised", money(o.raised), amount(o.raised)),
    row("Remaining", "offering-remaining", money(o.remaining), amount(o.remaining)),
    row("Annual rate", "offering-rate", percent(o.annualRateBps)),
    row("Matures", "offering-maturity", day(o.maturityDate)),
    row("Funding deadline", "offering-deadline", time(o.fundingDeadline)),
    [
      h("dt", {}, "Producer"),
      h(
        "dd",
        { testid: "offering-producer", "data-producer-id": o.producerId },
        h("a", { href: `#/offerings?producer_id=${encodeURIComponent(o.producerId)}`, class: "id" }, o.producerId),
      ),
    ],
    row("Issued", "offering-create-time", time(o.createTime)),
    row("Id", "offering-id", o.id),
  );
}

function cancelReason(reason: CancelReason): string {
  switch (reason) {
    case CancelReason.CANCELLED_BY_PRODUCER:
      return "its producer cancelled it";
    case CancelReason.FUNDING_DEADLINE_PASSED:
      return "its funding deadline passed before it was funded";
    default:
      return "not given";
  }
}

function scheduleView(
  o: Offering,
  paidHere: Map<number, Timestamp | undefined>,
  payButton?: (installment: Installment) => Node,
): Node {
  const total = o.installments.reduce((sum, i) => sum + (i.amount?.amountMinor ?? 0n), 0n);
  return h(
    "div",
    {},
    h("h2", {}, "Installments"),
    h(
      "table",
      { testid: "installments-table" },
      h(
        "thead",
        {},
        h("tr", {}, ["#", "Due", "Amount", "Paid"].map((c) => h("th", {}, c)), payButton && h("th", {})),
      ),
      h(
        "tbody",
        {},
        o.installments.map((i) => {
          const paid = i.paidTime !== undefined || paidHere.has(i.number);
          const paidAt = i.paidTime ?? paidHere.get(i.number);
          return h(
            "tr",
            { testid: "installment-row", "data-number": i.number, "data-paid": String(paid) },
            h("td", {}, String(i.number)),
            h("td", { testid: "installment-due" }, day(i.dueDate)),
            h("td", { testid: "installment-amount", "data-amount-minor": String(i.amount?.amountMinor ?? 0n) }, money(i.amount)),
            h(
              "td",
              { testid: "installment-paid", class: paid ? "ok" : "muted" },
              paid ? `paid${paidAt ? ` ${time(paidAt)}` : ""}` : "unpaid",
            ),
            payButton && h("td", {}, !paid && payButton(i)),
          );
        }),
      ),
    ),
    o.faceValue &&
      h("p", { class: "muted" }, `Schedule total ${money({ currencyCode: o.faceValue.currencyCode, amountMinor: total })}.`),
  );
}

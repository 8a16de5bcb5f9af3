// Wallet page (signed in): the balance (GetWallet), a deposit form
// (Deposit, with an idempotency key the page drew when it showed the form,
// so a double click or a retry deposits once) and the ledger transactions
// (ListTransactions), newest first, optionally of one kind
// (`#/wallet?kind=investment`), the next keyset page appended by "More".
import { Code, ConnectError } from "@connectrpc/connect";
import { wallet } from "../api";
import { field, h, replace } from "../dom";
import { errorView } from "../errors";
import { formAction, labeled } from "../forms";
import { enumLabel, enumName, money, time } from "../format";
import { TransactionKind, type Transaction, type Wallet } from "../gen/safra/wallet/v1/wallet_pb";
import { IdempotencyKey } from "../idempotency";
import { pagedTable } from "../lists";
import { Inputs } from "../parse";
import type { PageContext } from "../router";

const PAGE_SIZE = 20;

const KINDS = [
  TransactionKind.DEPOSIT,
  TransactionKind.INVESTMENT,
  TransactionKind.INSTALLMENT_PAYMENT,
  TransactionKind.DISTRIBUTION,
  TransactionKind.FUNDING_PAYOUT,
  TransactionKind.INVESTMENT_REFUND,
];

export function render(ctx: PageContext): Node {
  const kindName = ctx.query.get("kind") ?? "";
  const kind = KINDS.find((k) => enumName(TransactionKind, k) === kindName) ?? TransactionKind.UNSPECIFIED;
  const balance = h("div", { class: "balance", testid: "wallet-body" }, h("p", { class: "muted" }, "Loading…"));
  const notice = h("div", { testid: "wallet-notice" });
  const refresh = h("button", { type: "button", class: "secondary", testid: "wallet-refresh" }, "Refresh");
  const depositKey = new IdempotencyKey();

  async function loadBalance(): Promise<void> {
    try {
      replace(balance, balanceView(await wallet.getWallet({}, { signal: ctx.signal })));
    } catch (err) {
      if (ctx.signal.aborted) return;
      // No wallet yet (WALLET_NOT_FOUND): shown empty, the first deposit opens it.
      if (ConnectError.from(err).code === Code.NotFound) replace(balance, balanceView(undefined));
      else replace(balance, errorView(err));
    }
  }

  const list = pagedTable({
    name: "transactions",
    columns: ["Kind", "Amount", "Balance after", "Offering", "Time"],
    empty: "No transactions yet.",
    fetch: async (pageToken) => {
      const res = await wallet.listTransactions({ pageSize: PAGE_SIZE, pageToken, kind }, { signal: ctx.signal });
      return { items: res.transactions, nextPageToken: res.nextPageToken };
    },
    row,
  });

  const reload = () => Promise.all([loadBalance(), list.reload()]);

  const deposit = formAction("deposit", "Deposit", async (form) => {
    const inputs = new Inputs();
    const amount = inputs.brl(field(form, "amount"), "amount");
    inputs.check();
    const idempotencyKey = depositKey.for(`${amount?.amountMinor ?? ""}`);
    try {
      const res = await wallet.deposit({ amount, idempotencyKey }, { signal: ctx.signal });
      depositKey.settle();
      replace(
        notice,
        h(
          "p",
          { class: "notice", testid: "deposit-result", "data-transaction-id": res.transaction?.id ?? "" },
          `Deposited ${money(res.transaction?.amount ?? amount)}.`,
        ),
      );
      form.reset();
      await reload();
    } catch (err) {
      depositKey.settle(err);
      throw err;
    }
  });

  refresh.addEventListener("click", () => {
    refresh.disabled = true;
    void reload().finally(() => {
      refresh.disabled = false;
    });
  });
  void reload();

  return h(
    "section",
    { class: "page", testid: "wallet-page" },
    h("h1", {}, "Wallet ", refresh),
    balance,
    notice,
    h(
      "form",
      { class: "inline", novalidate: true, testid: "deposit-form", onsubmit: deposit.onsubmit },
      labeled("Deposit (BRL)", "amount", h("input", { name: "amount", inputmode: "decimal", placeholder: "1500.00", testid: "deposit-amount" })),
      deposit.submit,
    ),
    deposit.status,
    h("h2", {}, "Transactions"),
    kindFilter(ctx, kindName),
    list.view,
  );
}

function kindFilter(ctx: PageContext, current: string): Node {
  const select = h(
    "select",
    {
      name: "kind",
      testid: "transactions-kind",
      onchange: (event: Event) => {
        const value = (event.currentTarget as HTMLSelectElement).value;
        ctx.navigate(value ? `/wallet?kind=${value}` : "/wallet");
      },
    },
    h("option", { value: "" }, "Every kind"),
    KINDS.map((k) => {
      const name = enumName(TransactionKind, k);
      return h("option", { value: name, selected: name === current }, enumLabel(TransactionKind, k));
    }),
  );
  return h("label", { class: "inline" }, "Kind ", select);
}

function balanceView(w: Wallet | undefined): Node {
  const amount = w?.balance ?? { currencyCode: "BRL", amountMinor: 0n };
  return h(
    "p",
    {},
    "Balance ",
    h("strong", { testid: "wallet-balance", "data-amount-minor": String(amount.amountMinor) }, money(amount)),
    !w && h("span", { class: "muted", testid: "wallet-none" }, " (no wallet yet: the first deposit opens it)"),
  );
}

function row(t: Transaction): Node {
  const kind = enumName(TransactionKind, t.kind);
  return h(
    "tr",
    {
      testid: "transaction-row",
      "data-kind": kind,
      "data-amount-minor": String(t.amount?.amountMinor ?? 0n),
      "data-offering-id": t.offeringId,
    },
    h("td", { testid: "transaction-kind" }, enumLabel(TransactionKind, t.kind)),
    h("td", { testid: "transaction-amount", class: (t.amount?.amountMinor ?? 0n) < 0n ? "debit" : "credit" }, money(t.amount, { signed: true })),
    h("td", { testid: "transaction-balance-after", "data-amount-minor": String(t.balanceAfter?.amountMinor ?? 0n) }, money(t.balanceAfter)),
    h("td", {}, t.offeringId && h("a", { href: `#/offerings/${t.offeringId}`, class: "id", testid: "transaction-offering" }, t.offeringId.slice(0, 8))),
    h("td", {}, time(t.createTime)),
  );
}

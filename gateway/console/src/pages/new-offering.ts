// New offering page (`#/offerings/new`, producers): issues an offering
// (CreateOffering) from a form with an installment schedule editor (rows of
// due date and amount, numbered 1..n as they stand). Amounts in BRL and the
// rate in % are read exactly into centavos and basis points; each field
// violation (`offering.installments[1].due_date`) shows next to its input.
// On success the offering's page opens.
import { marketplace } from "../api";
import { field, h, replace } from "../dom";
import { showViolations } from "../errors";
import { formAction, labeled } from "../forms";
import { money } from "../format";
import { Inputs, parseHundredths } from "../parse";
import type { PageContext } from "../router";
import { claims, getSession } from "../session";

export function render(ctx: PageContext): Node {
  if (claims(getSession()).role !== "producer") {
    return h(
      "section",
      { class: "page", testid: "new-offering-page" },
      h("h1", {}, "New offering"),
      h("p", { class: "notice", testid: "new-offering-not-producer" }, "Only producers issue offerings. Sign in with a producer account."),
    );
  }

  const rows = h("div", { class: "installment-rows", testid: "installment-rows" });
  const total = h("p", { class: "muted", testid: "installments-total" });
  const schedule = h(
    "fieldset",
    { class: "schedule", "data-path": "offering.installments", testid: "installments-editor" },
    h("legend", {}, "Installment schedule"),
    rows,
    h("button", { type: "button", class: "secondary", testid: "installment-add", onclick: () => addRow() }, "Add installment"),
    total,
  );

  const { submit, status, onsubmit } = formAction("new-offering", "Issue offering", async (form) => {
    const inputs = new Inputs();
    const offering = {
      commodity: field(form, "commodity").trim(),
      quantity: inputs.integer(field(form, "quantity"), "offering.quantity"),
      unit: field(form, "unit").trim(),
      faceValue: inputs.brl(field(form, "faceValue"), "offering.face_value"),
      annualRateBps: inputs.bps(field(form, "rate"), "offering.annual_rate_bps"),
      maturityDate: inputs.date(field(form, "maturityDate"), "offering.maturity_date"),
      fundingDeadline: inputs.instant(field(form, "fundingDeadline"), "offering.funding_deadline"),
      installments: installmentRows().map((row, i) => ({
        number: i + 1,
        dueDate: inputs.date(value(row, "dueDate"), `offering.installments[${i}].due_date`),
        amount: inputs.brl(value(row, "amount"), `offering.installments[${i}].amount`),
      })),
    };
    inputs.check();
    const res = await marketplace.createOffering({ offering }, { signal: ctx.signal });
    ctx.navigate(`/offerings/${res.offering?.id ?? ""}`);
  });

  const form = h(
    "form",
    { class: "wide", novalidate: true, testid: "new-offering-form", onsubmit, oninput: () => updateTotal() },
    labeled("Commodity", "offering.commodity", h("input", { name: "commodity", placeholder: "soybean", testid: "new-offering-commodity" })),
    h(
      "div",
      { class: "row" },
      labeled("Quantity", "offering.quantity", h("input", { name: "quantity", inputmode: "numeric", placeholder: "30000", testid: "new-offering-quantity" })),
      labeled("Unit", "offering.unit", h("input", { name: "unit", placeholder: "bag_60kg", testid: "new-offering-unit" })),
    ),
    h(
      "div",
      { class: "row" },
      labeled(
        "Face value in BRL",
        "offering.face_value",
        h("input", { name: "faceValue", inputmode: "decimal", placeholder: "1000.00", testid: "new-offering-face-value" }),
      ),
      labeled(
        "Annual rate in %",
        "offering.annual_rate_bps",
        h("input", { name: "rate", inputmode: "decimal", placeholder: "12.5", testid: "new-offering-rate" }),
      ),
    ),
    h(
      "div",
      { class: "row" },
      labeled("Maturity date", "offering.maturity_date", h("input", { name: "maturityDate", type: "date", testid: "new-offering-maturity" })),
      labeled(
        "Funding deadline (your time zone)",
        "offering.funding_deadline",
        h("input", { name: "fundingDeadline", type: "datetime-local", testid: "new-offering-deadline" }),
      ),
    ),
    schedule,
    submit,
  );

  function installmentRows(): HTMLElement[] {
    return Array.from(rows.children) as HTMLElement[];
  }

  function addRow(): void {
    const row = h(
      "div",
      { class: "installment-row", testid: "installment-edit-row" },
      h("span", { class: "number" }),
      labeled("Due date", "", h("input", { name: "dueDate", type: "date" })),
      labeled("Amount in BRL", "", h("input", { name: "amount", inputmode: "decimal", placeholder: "550.00" })),
      h("button", { type: "button", class: "secondary" }, "Remove"),
    );
    row.querySelector("button")?.addEventListener("click", () => {
      row.remove();
      renumber();
    });
    rows.append(row);
    renumber();
  }

  /** Numbers the rows 1..n and points their paths and test ids at their
   * place; violations shown for the old places no longer apply. */
  function renumber(): void {
    showViolations(form, []);
    installmentRows().forEach((row, i) => {
      const n = i + 1;
      row.dataset.number = String(n);
      row.setAttribute("data-path", `offering.installments[${i}]`);
      replace(row.querySelector(".number") as HTMLElement, `#${n}`);
      const [due, amount] = Array.from(row.querySelectorAll("label"));
      due.setAttribute("data-path", `offering.installments[${i}].due_date`);
      amount.setAttribute("data-path", `offering.installments[${i}].amount`);
      (due.querySelector("input") as HTMLElement).dataset.testid = `installment-due-${n}`;
      (amount.querySelector("input") as HTMLElement).dataset.testid = `installment-amount-${n}`;
      (row.querySelector("button") as HTMLElement).dataset.testid = `installment-remove-${n}`;
    });
    updateTotal();
  }

  /** The schedule's sum beside the face value: it must reach it. */
  function updateTotal(): void {
    const sum = installmentRows().reduce((acc, row) => acc + (parseHundredths(value(row, "amount")) ?? 0n), 0n);
    const face = parseHundredths(field(form, "faceValue"));
    replace(
      total,
      `${installmentRows().length} installment(s), total ${money({ currencyCode: "BRL", amountMinor: sum })}`,
      face !== null && ` (face value ${money({ currencyCode: "BRL", amountMinor: face })}${sum < face ? ": not covered yet" : ""})`,
      ".",
    );
  }

  addRow();

  return h(
    "section",
    { class: "page", testid: "new-offering-page" },
    h("h1", {}, "New offering"),
    h(
      "p",
      { class: "muted" },
      "Due dates must increase and none may fall after maturity; the funding deadline comes before the first due date; the installments must add up to at least the face value.",
    ),
    form,
    status,
  );
}

/** The value of a named control inside one schedule row. */
function value(row: HTMLElement, name: string): string {
  return row.querySelector<HTMLInputElement>(`[name="${name}"]`)?.value ?? "";
}

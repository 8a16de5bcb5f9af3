// Offerings page (public, works signed out): ListOfferings, newest first,
// filtered by status, commodity, producer and maturity range. The filters
// live in the hash's query (`#/offerings?status=open&commodity=soybean`),
// so a filtered list can be linked; "More" appends the next keyset page
// (`next_page_token`). Each row links to its offering's page.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { marketplace } from "../api";
import { field, h } from "../dom";
import { labeled } from "../forms";
import { day, enumLabel, enumName, money, percent } from "../format";
import { ListOfferingsRequestSchema, OfferingStatus, type Offering } from "../gen/safra/marketplace/v1/marketplace_pb";
import { pagedTable } from "../lists";
import { Inputs } from "../parse";
import type { PageContext } from "../router";
import { claims, getSession } from "../session";

const PAGE_SIZE = 20;

/** The filters, by their query name (the request's proto field name). */
const FILTERS = ["status", "commodity", "producer_id", "min_maturity_date", "max_maturity_date"];

const STATUSES = [OfferingStatus.OPEN, OfferingStatus.FUNDED, OfferingStatus.SETTLED, OfferingStatus.CANCELLED];

export function render(ctx: PageContext): Node {
  const query = ctx.query;
  const me = claims(getSession());
  const filters = filterForm(ctx);

  // The request, read from the query; a value that cannot be sent shows
  // next to its filter like the server's own violations.
  const inputs = new Inputs();
  const request: MessageInitShape<typeof ListOfferingsRequestSchema> = {
    pageSize: PAGE_SIZE,
    status: statusFromQuery(query.get("status"), inputs),
    commodity: query.get("commodity")?.trim() ?? "",
    producerId: query.get("producer_id")?.trim() ?? "",
    minMaturityDate: inputs.date(query.get("min_maturity_date") ?? "", "min_maturity_date"),
    maxMaturityDate: inputs.date(query.get("max_maturity_date") ?? "", "max_maturity_date"),
  };
  const list = pagedTable({
    name: "offerings",
    columns: ["Commodity", "Quantity", "Face value", "Raised", "Rate", "Matures", "Status"],
    empty: "No offerings match.",
    fetch: async (pageToken) => {
      inputs.check();
      const res = await marketplace.listOfferings({ ...request, pageToken }, { signal: ctx.signal });
      return { items: res.offerings, nextPageToken: res.nextPageToken };
    },
    row,
    fields: filters,
  });
  void list.reload();

  return h(
    "section",
    { class: "page", testid: "offerings-page" },
    h("h1", {}, "Offerings"),
    h(
      "p",
      { class: "actions" },
      me.role === "producer" && [
        h("a", { href: "#/offerings/new", testid: "offerings-new" }, "New offering"),
        " · ",
        h("a", { href: `#/offerings?producer_id=${encodeURIComponent(me.sub ?? "")}`, testid: "offerings-mine" }, "My offerings"),
      ],
    ),
    filters,
    list.view,
  );
}

/** The filters as a form; applying it puts them in the hash's query. */
function filterForm(ctx: PageContext): HTMLFormElement {
  const query = ctx.query;
  const input = (name: string, testid: string, attrs: Record<string, string> = {}) =>
    h("input", { name, value: query.get(name) ?? "", testid, ...attrs });
  const current = query.get("status") ?? "";

  function onsubmit(event: SubmitEvent): void {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = field(form, name).trim();
      if (value) params.set(name, value);
    }
    const search = params.toString();
    ctx.navigate(search ? `/offerings?${search}` : "/offerings");
  }

  return h(
    "form",
    { class: "filters", novalidate: true, testid: "offerings-filters", onsubmit },
    labeled(
      "Status",
      "status",
      h(
        "select",
        { name: "status", testid: "offerings-filter-status" },
        h("option", { value: "" }, "Any"),
        STATUSES.map((s) => {
          const name = enumName(OfferingStatus, s);
          return h("option", { value: name, selected: name === current }, enumLabel(OfferingStatus, s));
        }),
      ),
    ),
    labeled("Commodity", "commodity", input("commodity", "offerings-filter-commodity", { placeholder: "soybean" })),
    labeled("Producer id", "producer_id", input("producer_id", "offerings-filter-producer", { placeholder: "UUID" })),
    labeled("Matures from", "min_maturity_date", input("min_maturity_date", "offerings-filter-min-maturity", { type: "date" })),
    labeled("Matures until", "max_maturity_date", input("max_maturity_date", "offerings-filter-max-maturity", { type: "date" })),
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "submit", testid: "offerings-filter-apply" }, "Apply"),
      h("a", { href: "#/offerings", testid: "offerings-filter-clear" }, "Clear"),
    ),
  );
}

/** `?status=open` as the enum; unset (any status) when absent. */
function statusFromQuery(value: string | null, inputs: Inputs): OfferingStatus {
  if (!value) return OfferingStatus.UNSPECIFIED;
  const status = STATUSES.find((s) => enumName(OfferingStatus, s) === value.toLowerCase());
  if (status === undefined) inputs.reject("status", "is not a status");
  return status ?? OfferingStatus.UNSPECIFIED;
}

function row(o: Offering): Node {
  const status = enumName(OfferingStatus, o.status);
  return h(
    "tr",
    { testid: "offerings-row", "data-offering-id": o.id, "data-status": status },
    h("td", {}, h("a", { href: `#/offerings/${o.id}`, testid: "offering-link" }, o.commodity)),
    h("td", {}, `${o.quantity.toLocaleString("en-US")} ${o.unit}`),
    h("td", {}, money(o.faceValue)),
    h("td", {}, money(o.raised)),
    h("td", {}, percent(o.annualRateBps)),
    h("td", {}, day(o.maturityDate)),
    h("td", { class: `status-${status}` }, enumLabel(OfferingStatus, o.status)),
  );
}

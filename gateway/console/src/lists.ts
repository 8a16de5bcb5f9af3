// A keyset-paged table: the first page, then "More" appends the next one
// (`next_page_token`) until the last. While a page loads "More" is
// disabled; a failure shows in the list's status area, its field
// violations next to the fields they name (see forms.ts runAction).
import { append, h, replace } from "./dom";
import { runAction } from "./forms";

export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

export interface PagedTable {
  /** The status area, the table, the empty notice and "More", in order. */
  view: Node[];
  /** Loads the first page again, replacing the rows. */
  reload(): Promise<boolean>;
}

/** Test ids: `<name>-table`, `<name>-empty`, `<name>-more`, `<name>-status`. */
export function pagedTable<T>(options: {
  name: string;
  columns: string[];
  /** Shown when the first page is empty. */
  empty: string;
  fetch(pageToken: string): Promise<Page<T>>;
  row(item: T): Node;
  /** Where the request's fields are, for their violations. */
  fields?: ParentNode;
}): PagedTable {
  const { name } = options;
  const status = h("div", { class: "status", testid: `${name}-status` });
  const rows = h("tbody", {});
  const table = h(
    "table",
    { testid: `${name}-table`, hidden: true },
    h("thead", {}, h("tr", {}, options.columns.map((c) => h("th", {}, c)))),
    rows,
  );
  const empty = h("p", { class: "muted", testid: `${name}-empty`, hidden: true }, options.empty);
  const more = h("button", { type: "button", testid: `${name}-more`, hidden: true }, "More");
  let nextToken = "";

  const load = (pageToken: string) =>
    runAction(
      more,
      status,
      async () => {
        const page = await options.fetch(pageToken);
        if (pageToken === "") replace(rows);
        append(rows, page.items.map(options.row));
        nextToken = page.nextPageToken;
        table.hidden = rows.childElementCount === 0;
        empty.hidden = !table.hidden;
      },
      options.fields,
    ).finally(() => {
      more.hidden = nextToken === "";
    });

  more.addEventListener("click", () => void load(nextToken));
  return { view: [status, table, empty, h("div", { class: "pager" }, more)], reload: () => load("") };
}

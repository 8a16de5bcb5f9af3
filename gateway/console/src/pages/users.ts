// Users page (admins): ListUsers, newest first, one keyset page at a time
// (`next_page_token`). Anyone else sees the server's PERMISSION_DENIED.
import { accounts } from "../api";
import { h, replace } from "../dom";
import { errorView } from "../errors";
import { roleName, time } from "../format";
import type { ListUsersResponse } from "../gen/safra/accounts/v1/accounts_pb";
import type { PageContext } from "../router";

const PAGE_SIZE = 20;

export function render(ctx: PageContext): Node {
  const body = h("div", { testid: "users-body" }, h("p", { class: "muted" }, "Loading…"));
  const first = h("button", { type: "button", testid: "users-first", disabled: true }, "First page");
  const next = h("button", { type: "button", testid: "users-next", disabled: true }, "Next page");
  const pager = h("div", { class: "pager" }, first, next);
  let nextToken = "";

  async function load(pageToken: string): Promise<void> {
    first.disabled = next.disabled = true;
    try {
      const res = await accounts.listUsers({ pageSize: PAGE_SIZE, pageToken }, { signal: ctx.signal });
      replace(body, table(res));
      nextToken = res.nextPageToken;
      first.disabled = pageToken === "";
      next.disabled = nextToken === "";
    } catch (err) {
      replace(body, errorView(err));
      // No page to move from when even the first one failed.
      pager.hidden = pageToken === "";
      first.disabled = pageToken === "";
    }
  }

  first.addEventListener("click", () => void load(""));
  next.addEventListener("click", () => void load(nextToken));
  void load("");

  return h(
    "section",
    { class: "page", testid: "users-page" },
    h("h1", {}, "Users"),
    body,
    pager,
  );
}

function table(res: ListUsersResponse): Node {
  if (res.users.length === 0) return h("p", { class: "muted", testid: "users-empty" }, "No users.");
  return h(
    "table",
    { testid: "users-table" },
    h("thead", {}, h("tr", {}, ["E-mail", "Display name", "Role", "Registered", "Id"].map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      res.users.map((u) =>
        h(
          "tr",
          { testid: "users-row", "data-user-id": u.id },
          h("td", {}, u.email),
          h("td", {}, u.displayName),
          h("td", {}, roleName(u.role)),
          h("td", {}, time(u.createTime)),
          h("td", { class: "id" }, u.id),
        ),
      ),
    ),
  );
}

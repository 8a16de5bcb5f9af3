// Profile page: the signed-in user (GetMe).
import { accounts } from "../api";
import { h, replace } from "../dom";
import { errorView } from "../errors";
import { roleName, time } from "../format";
import type { User } from "../gen/safra/accounts/v1/accounts_pb";
import type { PageContext } from "../router";

export function render(ctx: PageContext): Node {
  const body = h("div", { testid: "profile-body" }, h("p", { class: "muted" }, "Loading…"));
  accounts.getMe({}, { signal: ctx.signal }).then(
    (user) => replace(body, details(user)),
    (err: unknown) => replace(body, errorView(err)),
  );
  return h("section", { class: "page", testid: "profile-page" }, h("h1", {}, "Profile"), body);
}

function details(user: User): Node {
  const row = (label: string, testid: string, value: string) =>
    [h("dt", {}, label), h("dd", { testid }, value)];
  return h(
    "dl",
    { class: "details" },
    row("Id", "profile-id", user.id),
    row("E-mail", "profile-email", user.email),
    row("Display name", "profile-display-name", user.displayName),
    row("Role", "profile-role", roleName(user.role)),
    row("Registered", "profile-create-time", time(user.createTime)),
  );
}

// Register page: creates an investor or producer account (RegisterRequest),
// then sends the user to sign in with the e-mail filled in.
import { sessionAccounts } from "../api";
import { field, h } from "../dom";
import { formAction } from "../forms";
import { Role } from "../gen/safra/accounts/v1/accounts_pb";
import type { PageContext } from "../router";

export function render(ctx: PageContext): Node {
  const { submit, status, onsubmit } = formAction("register", "Create account", async (form) => {
    const email = field(form, "email").trim();
    await sessionAccounts.register(
      {
        email,
        password: field(form, "password"),
        displayName: field(form, "displayName").trim(),
        role: field(form, "role") === "producer" ? Role.PRODUCER : Role.INVESTOR,
      },
      { signal: ctx.signal },
    );
    ctx.navigate(`/login?registered=1&email=${encodeURIComponent(email)}`);
  });

  // `novalidate`: the contract's field rules are checked by the gateway,
  // and its answer (field violations, each next to its field) is what the
  // user sees.
  return h(
    "section",
    { class: "page", testid: "register-page" },
    h("h1", {}, "Create an account"),
    h(
      "form",
      { novalidate: true, testid: "register-form", onsubmit },
      h("label", { "data-path": "email" }, "E-mail", h("input", { name: "email", type: "email", autocomplete: "email", testid: "register-email" })),
      h(
        "label",
        { "data-path": "password" },
        "Password (at least 12 characters)",
        h("input", { name: "password", type: "password", autocomplete: "new-password", testid: "register-password" }),
      ),
      h("label", { "data-path": "display_name" }, "Display name", h("input", { name: "displayName", autocomplete: "name", testid: "register-display-name" })),
      h(
        "label",
        { "data-path": "role" },
        "Role",
        h(
          "select",
          { name: "role", testid: "register-role" },
          h("option", { value: "investor" }, "Investor"),
          h("option", { value: "producer" }, "Producer"),
        ),
      ),
      submit,
    ),
    status,
    h("p", {}, "Already registered? ", h("a", { href: "#/login", testid: "register-to-login" }, "Sign in")),
  );
}

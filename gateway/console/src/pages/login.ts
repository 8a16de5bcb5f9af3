// Login page: trades e-mail and password for a token pair (Login), keeps it
// in the session and opens the home page (`#/` leads there when signed in).
import { signIn } from "../api";
import { field, h } from "../dom";
import { formAction } from "../forms";
import type { PageContext } from "../router";

export function render(ctx: PageContext): Node {
  const email = ctx.query.get("email") ?? "";
  const { submit, status, onsubmit } = formAction("login", "Sign in", async (form) => {
    await signIn(field(form, "email").trim(), field(form, "password"));
    ctx.navigate("/");
  });

  return h(
    "section",
    { class: "page", testid: "login-page" },
    h("h1", {}, "Sign in"),
    ctx.query.has("registered") &&
      h("p", { class: "notice", testid: "login-notice" }, `Account created for ${email}. Sign in to continue.`),
    h(
      "form",
      { novalidate: true, testid: "login-form", onsubmit },
      h("label", {}, "E-mail", h("input", { name: "email", type: "email", autocomplete: "username", value: email, testid: "login-email" })),
      h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", testid: "login-password" })),
      submit,
    ),
    status,
    h("p", {}, "New here? ", h("a", { href: "#/register", testid: "login-to-register" }, "Create an account")),
  );
}

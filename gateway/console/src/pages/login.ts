// Login page: trades e-mail and password for a token pair (Login), keeps it
// in the session and opens the home page (`#/` leads there when signed in).
import { signIn } from "../api";
import { field, h, replace } from "../dom";
import { errorView } from "../errors";
import type { PageContext } from "../router";

export function render(ctx: PageContext): Node {
  const status = h("div", { class: "status", testid: "login-status" });
  const submit = h("button", { type: "submit", testid: "login-submit" }, "Sign in");
  const email = ctx.query.get("email") ?? "";

  async function onSubmit(event: SubmitEvent): Promise<void> {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    submit.disabled = true;
    replace(status);
    try {
      await signIn(field(form, "email").trim(), field(form, "password"));
      ctx.navigate("/");
    } catch (err) {
      replace(status, errorView(err));
    } finally {
      submit.disabled = false;
    }
  }

  return h(
    "section",
    { class: "page", testid: "login-page" },
    h("h1", {}, "Sign in"),
    ctx.query.has("registered") &&
      h("p", { class: "notice", testid: "login-notice" }, `Account created for ${email}. Sign in to continue.`),
    h(
      "form",
      { novalidate: true, testid: "login-form", onsubmit: onSubmit },
      h("label", {}, "E-mail", h("input", { name: "email", type: "email", autocomplete: "username", value: email, testid: "login-email" })),
      h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", testid: "login-password" })),
      submit,
    ),
    status,
    h("p", {}, "New here? ", h("a", { href: "#/register", testid: "login-to-register" }, "Create an account")),
  );
}

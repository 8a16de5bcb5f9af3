// The console's pages. A new page is a module in pages/ exporting
// `render(ctx)` plus one line here; `nav: true` lists it in the nav bar.
import type { Route } from "./router";
import * as login from "./pages/login";
import * as profile from "./pages/profile";
import * as register from "./pages/register";
import * as users from "./pages/users";

export const routes: Route[] = [
  { path: "/login", title: "Sign in", render: login.render, access: "public" },
  { path: "/register", title: "Register", render: register.render, access: "public" },
  { path: "/profile", title: "Profile", render: profile.render, access: "signed-in", nav: true },
  { path: "/users", title: "Users", render: users.render, access: "signed-in", nav: true },
];

/** Where `#/` leads a signed-in user, and where a signed-out one must go. */
export const home = "/profile";
export const loginPath = "/login";

// The console's pages. A new page is a module in pages/ exporting
// `render(ctx)` plus one line here; `nav: true` lists it in the nav bar
// (`roles` narrows that to some roles). `:name` path segments are
// variables; a literal path beats a variable one.
import type { Route } from "./router";
import * as jobs from "./pages/jobs";
import * as login from "./pages/login";
import * as newOffering from "./pages/new-offering";
import * as notifications from "./pages/notifications";
import * as offering from "./pages/offering";
import * as offerings from "./pages/offerings";
import * as profile from "./pages/profile";
import * as register from "./pages/register";
import * as users from "./pages/users";
import * as wallet from "./pages/wallet";

export const routes: Route[] = [
  { path: "/login", title: "Sign in", render: login.render, access: "public" },
  { path: "/register", title: "Register", render: register.render, access: "public" },
  { path: "/offerings", title: "Offerings", render: offerings.render, access: "public", nav: true },
  { path: "/offerings/new", title: "New offering", render: newOffering.render, access: "signed-in", nav: true, roles: ["producer"] },
  { path: "/offerings/:id", title: "Offering", render: offering.render, access: "public" },
  { path: "/wallet", title: "Wallet", render: wallet.render, access: "signed-in", nav: true },
  { path: "/notifications", title: "Notifications", render: notifications.render, access: "signed-in", nav: true },
  { path: "/profile", title: "Profile", render: profile.render, access: "signed-in", nav: true },
  { path: "/users", title: "Users", render: users.render, access: "signed-in", nav: true },
  { path: "/jobs", title: "Jobs", render: jobs.render, access: "signed-in", nav: true, roles: ["admin"] },
];

/** Where `#/` leads a signed-in user, and where a signed-out one must go. */
export const home = "/profile";
export const loginPath = "/login";

/** The page whose nav link carries the unread count. */
export const notificationsPath = "/notifications";

// The console's entry point: the frame every page shares (nav bar with the
// unread notification count, page outlet, last-call bar with the gateway's
// trace id) and the router.
import { getLastCall, onCall, resetLastCall, signOut, type CallRecord } from "./api";
import { h, replace } from "./dom";
import { createRouter, navigate, type Route } from "./router";
import { home, loginPath, notificationsPath, routes } from "./routes";
import { claims, getSession, onSessionChange } from "./session";
import { getUnreadCount, onUnreadCount, refreshUnreadCount } from "./unread";

const app = document.getElementById("app") ?? document.body;
const nav = h("nav", { class: "nav", testid: "nav" });
const outlet = h("main", { class: "outlet", testid: "outlet" });
const lastCall = h("footer", { class: "last-call", testid: "last-call" });
// One badge, moved into each new rendering of the nav bar and kept current
// by unread.ts.
const unreadBadge = h("span", { class: "badge", testid: "nav-notifications-unread" });
replace(app, nav, outlet, lastCall);

const router = createRouter(routes, outlet, {
  home,
  login: loginPath,
  onRoute: (route) => {
    resetLastCall();
    renderNav(route);
    // Cheap (a page of one), and what keeps the badge right without a
    // stream open on every page.
    if (getSession()) void refreshUnreadCount();
  },
});

function renderNav(current: Route | undefined): void {
  const session = getSession();
  const role = claims(session).role ?? "";
  const link = (route: Route) =>
    h(
      "a",
      {
        href: `#${route.path}`,
        class: route === current ? "active" : undefined,
        testid: `nav-${route.path.slice(1).replace(/\//g, "-")}`,
      },
      route.title,
      route.path === notificationsPath && session && unreadBadge,
    );
  const pages = routes.filter(
    (r) => r.nav && (r.access === "public" || session) && (!r.roles || (session && r.roles.includes(role))),
  );
  const who = session
    ? [
        h("span", { class: "user", testid: "nav-user" }, session.email, h("span", { class: "role" }, role)),
        h("button", { type: "button", testid: "sign-out", onclick: onSignOut }, "Sign out"),
      ]
    : routes.filter((r) => r.path === loginPath || r.path === "/register").map(link);
  replace(nav, h("a", { href: "#/", class: "brand" }, "Safra"), h("div", { class: "links" }, pages.map(link)), h("div", { class: "who" }, who));
}

async function onSignOut(): Promise<void> {
  await signOut();
  navigate(loginPath);
}

function renderLastCall(call: CallRecord | null): void {
  if (!call) return replace(lastCall, h("span", { class: "muted" }, "No call yet on this page."));
  replace(
    lastCall,
    "Last call ",
    h("code", { testid: "last-call-method" }, call.method),
    " ",
    h("span", { class: call.status === "OK" ? "ok" : "failed", testid: "last-call-status" }, call.status),
    " · trace ",
    h("code", { testid: "last-trace-id" }, call.traceId || "none"),
  );
}

function renderUnreadBadge(count: number | null): void {
  unreadBadge.textContent = count ? String(count) : "";
  unreadBadge.dataset.count = String(count ?? 0);
  unreadBadge.hidden = !count;
}

onCall(renderLastCall);
onUnreadCount(renderUnreadBadge);
renderUnreadBadge(getUnreadCount());
// Signing in, a refresh that failed, signing out: the nav follows.
onSessionChange(() => renderNav(router.current()));
renderLastCall(getLastCall());
router.render();

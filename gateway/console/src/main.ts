// The console's entry point: the frame every page shares (nav bar, page
// outlet, last-call bar with the gateway's trace id) and the router.
import { getLastCall, onCall, resetLastCall, signOut, type CallRecord } from "./api";
import { h, replace } from "./dom";
import { createRouter, navigate, type Route } from "./router";
import { home, loginPath, routes } from "./routes";
import { claims, getSession, onSessionChange } from "./session";

const app = document.getElementById("app") ?? document.body;
const nav = h("nav", { class: "nav", testid: "nav" });
const outlet = h("main", { class: "outlet", testid: "outlet" });
const lastCall = h("footer", { class: "last-call", testid: "last-call" });
replace(app, nav, outlet, lastCall);

const router = createRouter(routes, outlet, {
  home,
  login: loginPath,
  onRoute: (route) => {
    resetLastCall();
    renderNav(route);
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

onCall(renderLastCall);
// Signing in, a refresh that failed, signing out: the nav follows.
onSessionChange(() => renderNav(router.current()));
renderLastCall(getLastCall());
router.render();

// A tiny hash router: `#/path?query` picks a route from the registry in
// routes.ts and renders its page into the outlet. Server paths stay
// untouched, so the gateway answers unknown ones with its JSON 404.
//
// A route's path may hold variables (`/offerings/:id`); a literal route
// beats a variable one (`/offerings/new` before `/offerings/:id`), as in
// the gateway's own REST routing.
//
// Each render gets an AbortSignal that fires when the user navigates away:
// pages pass it to their calls, so a page left behind stops its work.
import { h, replace } from "./dom";
import { getSession } from "./session";

export interface PageContext {
  /** The query part of the hash (`#/login?email=a@b.c`). */
  query: URLSearchParams;
  /** The path's variables (`{ id: "..." }` for `/offerings/:id`), decoded. */
  params: Record<string, string>;
  /** Aborted when this page is left. */
  signal: AbortSignal;
  /** Goes to another page, e.g. navigate("/profile"). */
  navigate(path: string): void;
}

/** What a page module exports: builds the page, then may fill it in later. */
export type Render = (ctx: PageContext) => Node | Promise<Node>;

export interface Route {
  /** The hash path, e.g. "/profile"; `:name` segments are variables. */
  path: string;
  /** Shown in the nav bar and the document title. */
  title: string;
  render: Render;
  /** "public" pages work signed out; "signed-in" ones send the user to login. */
  access: "public" | "signed-in";
  /** Listed in the nav bar (for a signed-in user when access is "signed-in"). */
  nav?: boolean;
  /** Listed in the nav bar only for these roles (the token's `role` claim);
   * the server still decides what each role may do. */
  roles?: string[];
}

export interface Router {
  /** Renders the page for the current hash. */
  render(): void;
  navigate(path: string): void;
  current(): Route | undefined;
}

/** Sets the hash; going to the page already shown renders it again. */
export function navigate(path: string): void {
  if (location.hash === `#${path}`) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = `#${path}`;
}

/** Splits `#/users?page_token=x` into "/users" and its query. */
export function parseHash(hash: string): { path: string; query: URLSearchParams } {
  const raw = hash.replace(/^#/, "") || "/";
  const at = raw.indexOf("?");
  return {
    path: at < 0 ? raw : raw.slice(0, at),
    query: new URLSearchParams(at < 0 ? "" : raw.slice(at + 1)),
  };
}

/** The route for `path` and its variables: a literal route first, then the
 * first variable route whose segments match. */
export function matchRoute(routes: Route[], path: string): { route: Route; params: Record<string, string> } | undefined {
  const literal = routes.find((r) => !r.path.includes("/:") && r.path === path);
  if (literal) return { route: literal, params: {} };
  const segments = path.split("/");
  for (const route of routes) {
    const pattern = route.path.split("/");
    if (!route.path.includes("/:") || pattern.length !== segments.length) continue;
    const params: Record<string, string> = {};
    const matches = pattern.every((part, i) => {
      if (!part.startsWith(":")) return part === segments[i];
      if (!segments[i]) return false;
      try {
        params[part.slice(1)] = decodeURIComponent(segments[i]);
        return true;
      } catch {
        return false;
      }
    });
    if (matches) return { route, params };
  }
  return undefined;
}

export function createRouter(
  routes: Route[],
  outlet: HTMLElement,
  options: { home: string; login: string; onRoute?: (route: Route | undefined) => void },
): Router {
  let controller: AbortController | null = null;
  let route: Route | undefined;

  function render(): void {
    const { path, query } = parseHash(location.hash);
    if (path === "/") return navigate(getSession() ? options.home : options.login);
    const match = matchRoute(routes, path);
    route = match?.route;
    if (route?.access === "signed-in" && !getSession()) return navigate(options.login);

    controller?.abort();
    controller = new AbortController();
    options.onRoute?.(route);
    document.title = route ? `${route.title} · Safra` : "Not found · Safra";
    if (!route) {
      replace(outlet, h("section", { testid: "not-found-page" }, h("h1", {}, "Not found"), h("p", {}, `No page at #${path}.`)));
      return;
    }
    const signal = controller.signal;
    const shown = (node: Node) => {
      if (!signal.aborted) replace(outlet, node);
    };
    Promise.resolve(route.render({ query, params: match?.params ?? {}, signal, navigate }))
      .then(shown)
      .catch((err: unknown) => shown(h("p", { class: "error" }, `This page failed: ${String(err)}`)));
  }

  window.addEventListener("hashchange", render);
  return { render, navigate, current: () => route };
}

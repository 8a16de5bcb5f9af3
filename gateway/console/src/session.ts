// The signed-in session: the token pair and the e-mail it was issued for,
// kept in sessionStorage (per tab, gone when the tab closes). Listeners hear
// every change, so the nav bar follows sign-in, refresh and sign-out.

const KEY = "safra.console.session";

export interface Session {
  email: string;
  accessToken: string;
  refreshToken: string;
}

/** What the console reads from the access token (a JWT) for display only;
 * the gateway verifies it. */
export interface Claims {
  sub?: string;
  role?: string;
  exp?: number;
}

type Listener = (session: Session | null) => void;
const listeners = new Set<Listener>();

export function getSession(): Session | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

export function setSession(session: Session): void {
  sessionStorage.setItem(KEY, JSON.stringify(session));
  notify(session);
}

/** Keeps the e-mail, replaces the tokens (after a refresh). */
export function updateTokens(accessToken: string, refreshToken: string): void {
  const current = getSession();
  if (current) setSession({ ...current, accessToken, refreshToken });
}

export function clearSession(): void {
  sessionStorage.removeItem(KEY);
  notify(null);
}

export function onSessionChange(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function notify(session: Session | null): void {
  for (const listener of listeners) listener(session);
}

/** Decodes the JWT payload without verifying it. */
export function claims(session: Session | null): Claims {
  const payload = session?.accessToken.split(".")[1];
  if (!payload) return {};
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)) as Claims;
  } catch {
    return {};
  }
}

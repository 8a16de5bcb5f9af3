// The signed-in user's unread notification count, shown beside
// "Notifications" in the nav bar and on the notifications page. The server
// is the one source of it: every refresh asks ListNotifications for a page
// of one and keeps its `unread_count`, so a count changed elsewhere (another
// tab, a notification just stored) is right again at the next refresh
// instead of drifting with local arithmetic. The nav bar refreshes it on
// every navigation, the notifications page whenever it learns of a change.
import { backgroundNotifications } from "./api";
import { getSession, onSessionChange } from "./session";

/** `null` when unknown: signed out, or not asked yet. */
type Listener = (count: number | null) => void;
const listeners = new Set<Listener>();
let count: number | null = null;

export function getUnreadCount(): number | null {
  return count;
}

export function onUnreadCount(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function set(value: number | null): void {
  if (value === count) return;
  count = value;
  for (const listener of listeners) listener(count);
}

// One refresh at a time: a refresh asked for while one runs makes it ask
// once more when it ends, so a burst of notifications costs two calls and
// the last answer is always one asked after the last change.
let running: Promise<void> | null = null;
let again = false;

/** Asks the server for the count; resolves once it is shown (or could not
 * be had: the badge then keeps its last number, and pages show their own
 * errors). */
export function refreshUnreadCount(): Promise<void> {
  if (running) {
    again = true;
    return running;
  }
  running = (async () => {
    do {
      again = false;
      const email = getSession()?.email;
      if (!email) {
        set(null);
        return;
      }
      try {
        const res = await backgroundNotifications.listNotifications({ pageSize: 1 });
        // Not for whoever signed in meanwhile.
        if (getSession()?.email === email) set(res.unreadCount);
      } catch {
        // Unreachable, or the notifications service is not running.
      }
    } while (again);
  })().finally(() => {
    running = null;
  });
  return running;
}

// Signing out, or in as someone else, forgets it (a refreshed token pair
// keeps it); signing in is followed by a navigation, which asks for the new
// user's.
let countedFor = getSession()?.email;
onSessionChange((session) => {
  if (session?.email !== countedFor) set(null);
  countedFor = session?.email;
});

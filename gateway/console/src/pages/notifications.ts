// Notifications page (signed in): the user's notifications, newest first,
// older keyset pages appended by "More", and new ones put on top as the
// server streams them (StreamNotifications), without a reload. An unread
// one has "Mark read" (MarkRead, idempotent). The unread count is the nav
// bar's (unread.ts), asked again whenever the page learns of a change.
//
// The list comes first, then the stream with `after_id` = the newest listed
// id: the server sends everything stored after that one before anything
// new, in its own commit order, so nothing falls between the list and the
// stream, and a reconnect resumes the same way from the newest one held.
// (Streaming first would hold the list back until the stream's headers, the
// first sign that the server has fixed where the stream starts; listing
// first shows the page at once.) With nothing listed there is no id to
// resume from: the stream then starts at "now", and once its headers arrive
// the first page is read again, which catches whatever was stored in
// between. Rows are kept by id, so an overlap shows once.
//
// A stream ends cleanly when the server shuts down and fails when the
// network does; either way the page reconnects after 1 s, doubling up to
// 10 s while it keeps failing, back to 1 s once connected. Leaving the page
// aborts the stream (ctx.signal).
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { backgroundNotifications, notifications } from "../api";
import { h, replace } from "../dom";
import { errorView } from "../errors";
import { runAction } from "../forms";
import { enumName, time } from "../format";
import { NotificationKind, type Notification } from "../gen/safra/notifications/v1/notifications_pb";
import type { PageContext } from "../router";
import { getSession } from "../session";
import { getUnreadCount, onUnreadCount, refreshUnreadCount } from "../unread";

const PAGE_SIZE = 20;
const RECONNECT_FIRST_MS = 1_000;
const RECONNECT_MAX_MS = 10_000;

type StreamState = "live" | "reconnecting";

export function render(ctx: PageContext): Node {
  const { signal } = ctx;
  const live = h("span", { class: "live-state", testid: "notifications-live" });
  const unread = h("span", { class: "unread-count", testid: "notifications-unread-count" });
  const status = h("div", { class: "status", testid: "notifications-status" }, h("p", { class: "muted" }, "Loading…"));
  const actionStatus = h("div", { class: "status", testid: "notifications-action-status" });
  const list = h("ul", { class: "notifications", testid: "notifications-list" });
  const empty = h("p", { class: "muted", testid: "notifications-empty", hidden: true }, "No notifications yet.");
  const more = h("button", { type: "button", testid: "notifications-more", hidden: true }, "More");

  /** What each shown row is, by notification id. */
  const shown = new Map<string, Notification>();
  /** The newest notification held: where the stream resumes. */
  let newestId = "";
  let nextToken = "";

  function setState(state: StreamState): void {
    live.textContent = state;
    live.dataset.state = state;
  }

  function showCount(count: number | null): void {
    unread.textContent = count === null ? "" : `${count} unread`;
    unread.dataset.count = count === null ? "" : String(count);
  }

  /** Shows `n`, in place if it is shown already, else before the first
   * older one: a streamed one lands on top, a listed page below. */
  function show(n: Notification): void {
    const row = item(n);
    const old = list.querySelector(`:scope > [data-id="${CSS.escape(n.id)}"]`);
    if (old) {
      old.replaceWith(row);
    } else {
      const older = Array.from(list.children).find((el) => {
        const other = shown.get((el as HTMLElement).dataset.id ?? "");
        return other !== undefined && created(other) < created(n);
      });
      list.insertBefore(row, older ?? null);
    }
    shown.set(n.id, n);
    empty.hidden = true;
  }

  function item(n: Notification): HTMLElement {
    const markRead = !n.read
      ? h("button", { type: "button", class: "secondary", testid: "notification-mark-read" }, "Mark read")
      : null;
    markRead?.addEventListener("click", () => {
      void runAction(markRead, actionStatus, async () => {
        const res = await notifications.markRead({ notificationId: n.id }, { signal });
        show(res.notification ?? { ...n, read: true });
        await refreshUnreadCount();
      });
    });
    return h(
      "li",
      {
        class: n.read ? "notification" : "notification unread",
        testid: "notification",
        "data-id": n.id,
        "data-kind": enumName(NotificationKind, n.kind),
        "data-read": String(n.read),
      },
      h(
        "div",
        { class: "head" },
        h("strong", { testid: "notification-title" }, n.title),
        !n.read && h("span", { class: "badge", testid: "notification-unread" }, "unread"),
        h("time", { class: "muted", datetime: time(n.createTime), testid: "notification-time" }, time(n.createTime)),
      ),
      h("p", { testid: "notification-body" }, n.body),
      h(
        "div",
        { class: "foot" },
        n.offeringId && h("a", { href: `#/offerings/${n.offeringId}`, testid: "notification-offering" }, "Offering ", h("span", { class: "id" }, n.offeringId.slice(0, 8))),
        markRead,
      ),
    );
  }

  /** Loads a page (the first for ""); true when it was shown. */
  async function load(pageToken: string): Promise<boolean> {
    more.disabled = true;
    try {
      const res = await notifications.listNotifications({ pageSize: PAGE_SIZE, pageToken }, { signal });
      replace(status);
      for (const n of res.notifications) show(n);
      // Newest first: the first of the first page, unless a newer one
      // came over the stream already.
      newestId ||= res.notifications[0]?.id ?? "";
      nextToken = res.nextPageToken;
      empty.hidden = shown.size > 0;
      return true;
    } catch (err) {
      if (!signal.aborted) replace(status, errorView(err));
      return false;
    } finally {
      more.disabled = false;
      more.hidden = nextToken === "";
    }
  }

  async function follow(): Promise<void> {
    let backoff = RECONNECT_FIRST_MS;
    for (let attempt = 0; !signal.aborted; attempt++) {
      if (attempt > 0) {
        setState("reconnecting");
        if (!(await sleep(backoff, signal))) return;
        backoff = Math.min(backoff * 2, RECONNECT_MAX_MS);
        // Signed out meanwhile (a refresh that failed): nothing to follow.
        if (!getSession()) return;
        // A unary call first: it trades an expired access token for a new
        // pair, which a stream never does (see api.ts), and catches the
        // count up with what came while the stream was down.
        await refreshUnreadCount();
      }
      const afterId = newestId;
      try {
        const stream = backgroundNotifications.streamNotifications(
          { afterId },
          {
            signal,
            onHeader: () => {
              setState("live");
              backoff = RECONNECT_FIRST_MS;
              if (!afterId) void load("");
            },
          },
        );
        for await (const message of stream) {
          // Unset on a heartbeat, which only keeps proxies from closing the stream.
          const n = message.notification;
          if (!n) continue;
          show(n);
          newestId = n.id;
          void refreshUnreadCount();
        }
      } catch (err) {
        if (signal.aborted) return;
        // The id to resume after is unknown to the server: start at "now"
        // and read the first page again once connected.
        if (afterId && ConnectError.from(err).code === Code.NotFound && newestId === afterId) newestId = "";
      }
    }
  }

  more.addEventListener("click", () => {
    if (!more.disabled) void load(nextToken);
  });
  setState("reconnecting");
  showCount(getUnreadCount());
  const stopCounting = onUnreadCount(showCount);
  signal.addEventListener("abort", () => stopCounting(), { once: true });
  void load("").then(follow);

  return h(
    "section",
    { class: "page", testid: "notifications-page" },
    h("h1", {}, "Notifications ", unread, " ", live),
    actionStatus,
    status,
    list,
    empty,
    h("div", { class: "pager" }, more),
  );
}

function created(n: Notification): number {
  return n.createTime ? timestampDate(n.createTime).getTime() : 0;
}

/** Waits `ms`; false, at once, when `signal` aborts first. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

// Jobs page (admins): the jobs monitor over the mesh's background event
// handling. Every subscriber (ListSubscriptions: backlog, lag, throughput,
// retries, parked) and every service's outbox (ListOutboxes) are read
// again every 2 s while the page is shown, with the time of the last
// answer; the parked events (ListParkedEvents, newest first, "More" for
// the next keyset page) each have Retry (back to the subscriber's queue)
// and Discard (dropped for that subscriber). Anyone else sees the server's
// PERMISSION_DENIED.
import { Code, ConnectError } from "@connectrpc/connect";
import { backgroundJobs, jobs } from "../api";
import { h, replace } from "../dom";
import { errorView } from "../errors";
import { runAction } from "../forms";
import { instant, seconds, time } from "../format";
import type { Outbox, ParkedEvent, Subscription } from "../gen/safra/jobs/v1/jobs_pb";
import { pagedTable } from "../lists";
import type { PageContext } from "../router";

const REFRESH_MS = 2_000;
const SUBSCRIPTIONS_PAGE_SIZE = 100;
/** A bound on one refresh's pages, not an expected size: the mesh has a
 * handful of subscribers. */
const SUBSCRIPTIONS_MAX_PAGES = 10;
const PARKED_PAGE_SIZE = 20;

type JobsClient = typeof jobs;

export function render(ctx: PageContext): Node {
  const { signal } = ctx;
  const status = h("div", { class: "status", testid: "jobs-status" });
  const updated = h("span", { class: "muted updated", testid: "jobs-updated" }, "not updated yet");
  const subscriptions = h("div", { class: "scroll", testid: "jobs-subscriptions" }, h("p", { class: "muted" }, "Loading…"));
  const outboxes = h("div", { class: "scroll", testid: "jobs-outboxes" }, h("p", { class: "muted" }, "Loading…"));
  const actionStatus = h("div", { class: "status", testid: "jobs-parked-action-status" });
  const reloadParked = h("button", { type: "button", class: "secondary", testid: "jobs-parked-refresh" }, "Refresh");

  let everUpdated = false;
  let refreshing = false;
  /** Parked events over all subscribers at the last refresh: when it
   * changes, the parked list is read again (it is paged, so it is not
   * itself reloaded on every tick, which would drop the pages "More" added). */
  let parkedTotal: number | null = null;

  /** Reads subscribers and outboxes and shows them. A tick that finds the
   * previous refresh still waiting is skipped rather than piled up. */
  async function refresh(client: JobsClient): Promise<void> {
    if (refreshing) return;
    refreshing = true;
    try {
      const [subs, boxes] = await Promise.all([
        allSubscriptions(client, signal),
        client.listOutboxes({}, { signal }),
      ]);
      const now = new Date();
      replace(subscriptions, subscriptionsTable(subs));
      replace(outboxes, outboxesTable(boxes.outboxes));
      updated.textContent = `updated ${instant(now)}`;
      updated.dataset.updated = String(now.getTime());
      replace(status);
      everUpdated = true;
      const parked = subs.reduce((sum, s) => sum + s.parked, 0);
      if (parkedTotal !== null && parked !== parkedTotal) void parkedList.reload();
      parkedTotal = parked;
    } catch (err) {
      if (signal.aborted) return;
      // The last good answer stays shown, dated by "updated".
      replace(status, errorView(err));
      if (!everUpdated) {
        replace(subscriptions);
        replace(outboxes);
      }
      const code = ConnectError.from(err).code;
      // Not an admin, or signed out: asking again cannot help.
      if (code === Code.PermissionDenied || code === Code.Unauthenticated) clearInterval(ticks);
    } finally {
      refreshing = false;
    }
  }

  const parkedList = pagedTable({
    name: "jobs-parked",
    columns: ["Subscription", "Event type", "Event id", "Attempts", "Last error", "Parked", ""],
    empty: "No parked events.",
    fetch: async (pageToken) => {
      const res = await jobs.listParkedEvents({ pageSize: PARKED_PAGE_SIZE, pageToken }, { signal });
      return { items: res.parkedEvents, nextPageToken: res.nextPageToken };
    },
    row: parkedRow,
  });

  function parkedRow(p: ParkedEvent): Node {
    const retry = h("button", { type: "button", class: "secondary", testid: "jobs-parked-retry" }, "Retry");
    const discard = h("button", { type: "button", class: "danger", testid: "jobs-parked-discard" }, "Discard");
    const row = h(
      "tr",
      { testid: "jobs-parked-event", "data-id": p.id, "data-subscription": p.subscription, "data-event-id": p.event?.id ?? "" },
      h("td", {}, p.subscription),
      h("td", {}, p.event?.type ?? ""),
      h("td", { class: "id" }, p.event?.id ?? ""),
      h("td", { class: "num" }, String(p.attempts)),
      h("td", { class: "last-error", title: p.lastError }, p.lastError),
      h("td", {}, time(p.createTime)),
      h("td", { class: "buttons" }, retry, " ", discard),
    );
    const act = (button: HTMLButtonElement, call: () => Promise<unknown>) => {
      button.addEventListener("click", () => {
        // One decision per event: the other button waits too.
        const other = button === retry ? discard : retry;
        other.disabled = true;
        void runAction(button, actionStatus, async () => {
          await call();
          // Either way it has left the parked list.
          row.remove();
          await Promise.all([parkedList.reload(), refresh(jobs)]);
        }).finally(() => {
          other.disabled = false;
        });
      });
    };
    act(retry, () => jobs.retryParkedEvent({ parkedEventId: p.id }, { signal }));
    act(discard, () => jobs.discardParkedEvent({ parkedEventId: p.id }, { signal }));
    return row;
  }

  // The first read is the page's own call (in the last-call bar); the
  // ticks after it are background calls, so the bar keeps showing what
  // the admin did, such as a Retry and its trace id.
  const ticks = setInterval(() => void refresh(backgroundJobs), REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(ticks), { once: true });
  void refresh(jobs);
  void parkedList.reload();

  reloadParked.addEventListener("click", () => {
    reloadParked.disabled = true;
    void parkedList.reload().finally(() => {
      reloadParked.disabled = false;
    });
  });

  return h(
    "section",
    { class: "page jobs", testid: "jobs-page" },
    h("h1", {}, "Jobs ", updated),
    status,
    h("h2", {}, "Subscriptions"),
    subscriptions,
    h("h2", {}, "Outboxes"),
    outboxes,
    h("h2", {}, "Parked events ", reloadParked),
    actionStatus,
    h("div", { class: "scroll", testid: "jobs-parked" }, parkedList.view),
  );
}

/** Every page of ListSubscriptions, in order (by name). */
async function allSubscriptions(client: JobsClient, signal: AbortSignal): Promise<Subscription[]> {
  const all: Subscription[] = [];
  let pageToken = "";
  for (let page = 0; page < SUBSCRIPTIONS_MAX_PAGES; page++) {
    const res = await client.listSubscriptions({ pageSize: SUBSCRIPTIONS_PAGE_SIZE, pageToken }, { signal });
    all.push(...res.subscriptions);
    pageToken = res.nextPageToken;
    if (!pageToken) break;
  }
  return all;
}

function subscriptionsTable(subs: Subscription[]): Node {
  if (subs.length === 0) return h("p", { class: "muted", testid: "jobs-subscriptions-empty" }, "No subscribers.");
  const columns = [
    "Name", "Service", "Transport", "Backlog", "In flight", "Lag (s)", "Handled/s", "Handled", "Retrying", "Retries", "Parked", "Last handled",
  ];
  return h(
    "table",
    { testid: "jobs-subscriptions-table" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      subs.map((s) =>
        h(
          "tr",
          {
            testid: "jobs-subscription",
            "data-name": s.name,
            "data-service": s.service,
            "data-transport": s.transport,
            "data-backlog": s.backlog,
            "data-parked": s.parked,
            "data-handled-total": String(s.handledTotal),
            "data-retired": String(s.retired),
          },
          h("td", { title: s.eventTypes.join("\n") }, s.name),
          h(
            "td",
            {},
            s.retired
              ? h("span", { class: "attention" }, s.holdsLog ? "retired (holds the log)" : "retired")
              : s.service,
          ),
          h("td", {}, s.transport),
          h("td", { class: "num" }, String(s.backlog)),
          h("td", { class: "num" }, String(s.inFlight)),
          h("td", { class: "num" }, seconds(s.lag)),
          h("td", { class: "num" }, s.handledPerSecond.toFixed(2)),
          h("td", { class: "num" }, s.handledTotal.toLocaleString("en-US")),
          h("td", { class: s.retrying > 0 ? "num attention" : "num" }, String(s.retrying)),
          h("td", { class: "num" }, s.retriesTotal.toLocaleString("en-US")),
          h("td", { class: s.parked > 0 ? "num attention" : "num" }, String(s.parked)),
          h("td", {}, time(s.lastHandledTime) || h("span", { class: "muted" }, "never")),
        ),
      ),
    ),
  );
}

function outboxesTable(boxes: Outbox[]): Node {
  if (boxes.length === 0) return h("p", { class: "muted", testid: "jobs-outboxes-empty" }, "No outboxes.");
  return h(
    "table",
    { testid: "jobs-outboxes-table" },
    h("thead", {}, h("tr", {}, ["Service", "Unpublished", "Oldest unpublished (s)", "Published last minute"].map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      boxes.map((o) =>
        h(
          "tr",
          { testid: "jobs-outbox", "data-service": o.service, "data-unpublished": o.unpublished },
          h("td", {}, o.service),
          h("td", { class: "num" }, String(o.unpublished)),
          h("td", { class: "num" }, seconds(o.oldestUnpublishedAge)),
          h("td", { class: "num" }, o.publishedLastMinute.toLocaleString("en-US")),
        ),
      ),
    ),
  );
}

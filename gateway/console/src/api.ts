// The console's gRPC-web clients, made from the generated service
// descriptors. Every call goes through interceptors that record the
// gateway's `x-trace-id` (shown by the page as "last call"), attach the
// bearer token, and on UNAUTHENTICATED trade the refresh token for a new
// pair once and retry the call once. A new service is one more
// `createClient(XService, authenticated)` line here. Calls the console makes
// by itself rather than for what the user did (the nav bar's unread count,
// the live notification stream, the jobs monitor's refresh ticks) go through
// `background` clients, which leave the last-call bar alone.
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AccountsService } from "./gen/safra/accounts/v1/accounts_pb";
import { JobsService } from "./gen/safra/jobs/v1/jobs_pb";
import { MarketplaceService } from "./gen/safra/marketplace/v1/marketplace_pb";
import { NotificationsService } from "./gen/safra/notifications/v1/notifications_pb";
import { WalletService } from "./gen/safra/wallet/v1/wallet_pb";
import { clearSession, getSession, setSession, updateTokens } from "./session";

/** Replaced at build time: empty for the bundle the gateway serves (same
 * origin), the gateway's address for the dev server. */
declare const SAFRA_API_BASE: string;
const baseUrl = SAFRA_API_BASE || window.location.origin;

// ---- last call: which RPC ran last and its trace id ------------------------

export interface CallRecord {
  /** `package.Service/Method` */
  method: string;
  /** From the `x-trace-id` response header; empty when none came back. */
  traceId: string;
  /** The gRPC code name, "OK" on success. */
  status: string;
}

type CallListener = (call: CallRecord | null) => void;
const callListeners = new Set<CallListener>();
let lastCall: CallRecord | null = null;

export function getLastCall(): CallRecord | null {
  return lastCall;
}

export function onCall(listener: CallListener): () => void {
  callListeners.add(listener);
  return () => callListeners.delete(listener);
}

/** Forgets the last call (on navigation, so a page shows only its own). */
export function resetLastCall(): void {
  record(null);
}

function record(call: CallRecord | null): void {
  lastCall = call;
  for (const listener of callListeners) listener(call);
}

const traceInterceptor: Interceptor = (next) => async (req) => {
  const method = `${req.service.typeName}/${req.method.name}`;
  try {
    const res = await next(req);
    record({ method, traceId: res.header.get("x-trace-id") ?? "", status: "OK" });
    return res;
  } catch (err) {
    // A call cancelled because its page was left belongs to no page.
    if (req.signal.aborted) throw err;
    const error = ConnectError.from(err);
    record({ method, traceId: error.metadata.get("x-trace-id") ?? "", status: codeName(error.code) });
    throw err;
  }
};

// ---- transports ------------------------------------------------------------

/** For the session calls themselves (Register, Login, Refresh, Logout):
 * no bearer token, so an expired one can never get in their way. */
const anonymous: Transport = createGrpcWebTransport({ baseUrl, interceptors: [traceInterceptor] });

/** Every other call: the bearer token, and one refresh-and-retry. */
const authenticated: Transport = createGrpcWebTransport({
  baseUrl,
  // The first interceptor is the outermost: the trace is recorded for the
  // attempt whose answer the page gets.
  interceptors: [refreshInterceptor(), traceInterceptor, bearerInterceptor()],
});

/** Like `authenticated`, without the trace record: the last-call bar shows
 * what the user did, and a call repeated every few seconds, or a stream
 * reconnecting, would keep replacing it. */
const background: Transport = createGrpcWebTransport({
  baseUrl,
  interceptors: [refreshInterceptor(), bearerInterceptor()],
});

// ---- clients ---------------------------------------------------------------

/** Register, Login, Refresh, Logout. */
export const sessionAccounts = createClient(AccountsService, anonymous);

/** Calls on behalf of the signed-in user. */
export const accounts = createClient(AccountsService, authenticated);

/** Offerings and investments; the public reads work signed out too (no
 * token is sent then). */
export const marketplace = createClient(MarketplaceService, authenticated);

/** The signed-in user's wallet, deposits and installment payments. */
export const wallet = createClient(WalletService, authenticated);

/** The signed-in user's notifications: the list and MarkRead. */
export const notifications = createClient(NotificationsService, authenticated);

/** The same, for the unread count in the nav bar and the live stream. A
 * stream is never retried after a refresh (see refreshInterceptor), so its
 * reconnects make a unary call first. */
export const backgroundNotifications = createClient(NotificationsService, background);

/** The jobs monitor (admins): subscribers, outboxes, parked events. */
export const jobs = createClient(JobsService, authenticated);

/** The same, for the monitor's refresh ticks. */
export const backgroundJobs = createClient(JobsService, background);

// ---- sessions --------------------------------------------------------------

export async function signIn(email: string, password: string): Promise<void> {
  const res = await sessionAccounts.login({ email, password });
  setSession({ email, accessToken: res.accessToken, refreshToken: res.refreshToken });
}

/** Revokes the refresh token's family at the server, then forgets the
 * session whatever the answer: a user can always sign out here, and the
 * failed Logout still shows in the last-call bar. */
export async function signOut(): Promise<void> {
  const session = getSession();
  try {
    if (session) await sessionAccounts.logout({ refreshToken: session.refreshToken });
  } catch {
    // Already revoked, or the gateway is unreachable.
  }
  clearSession();
}

function bearerInterceptor(): Interceptor {
  return (next) => async (req) => {
    const session = getSession();
    if (session) req.header.set("authorization", `Bearer ${session.accessToken}`);
    else req.header.delete("authorization");
    return next(req);
  };
}

function refreshInterceptor(): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      const error = ConnectError.from(err);
      // A streamed request body cannot be sent twice; nor can a refresh
      // help without a refresh token.
      if (error.code !== Code.Unauthenticated || req.stream || !getSession()?.refreshToken) throw err;
      if (!(await refreshOnce())) throw err;
      return await next(req);
    }
  };
}

/** One refresh at a time: refresh tokens rotate, and presenting a rotated
 * one revokes the family, so concurrent failures share one Refresh. */
let refreshing: Promise<boolean> | null = null;

function refreshOnce(): Promise<boolean> {
  refreshing ??= (async () => {
    const session = getSession();
    if (!session) return false;
    try {
      const res = await sessionAccounts.refresh({ refreshToken: session.refreshToken });
      updateTokens(res.accessToken, res.refreshToken);
      return true;
    } catch {
      // The refresh token is spent, expired or revoked: sign in again.
      clearSession();
      return false;
    }
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

// ---- codes -----------------------------------------------------------------

const CODE_NAMES: Record<Code, string> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/** The canonical gRPC name of a code, as the contracts and docs spell it. */
export function codeName(code: Code): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

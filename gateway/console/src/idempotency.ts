// Idempotency keys for the calls that move money (Invest, Deposit,
// PayInstallment). A key names one intended operation: it is drawn when the
// form is shown and sent with every attempt, so a double click or a retry
// after a lost answer is the same operation to the server, which returns
// the first outcome instead of doing it twice. Once the outcome is known
// (a success, or a refusal the server decided) the operation is over and
// the next submit gets a fresh key; a changed request gets one too, since
// the server refuses a key reused for something else.
import { Code, ConnectError } from "@connectrpc/connect";

/** Codes after which the outcome is unknown (the call may or may not have
 * happened, or is still running): the retry must carry the same key. */
const UNKNOWN_OUTCOME = new Set<Code>([
  Code.Canceled,
  Code.Unknown,
  Code.DeadlineExceeded,
  Code.Aborted,
  Code.Internal,
  Code.Unavailable,
  Code.Unauthenticated,
  Code.ResourceExhausted,
]);

export class IdempotencyKey {
  private key = newKey();
  private request: string | null = null;

  /** The key to send with `request` (any stable rendering of what is sent,
   * such as the amount): the pending one for the same request, a new one
   * for a different request. */
  for(request: string): string {
    if (this.request !== null && this.request !== request) this.key = newKey();
    this.request = request;
    return this.key;
  }

  /** After a call: success (no error) or a decided refusal ends the
   * operation; an unknown outcome keeps the key for the retry. */
  settle(err?: unknown): void {
    if (err !== undefined && UNKNOWN_OUTCOME.has(ConnectError.from(err).code)) return;
    this.key = newKey();
    this.request = null;
  }

  /** The key the next attempt would use (shown on the form for support). */
  get current(): string {
    return this.key;
  }
}

/** A random (version 4) UUID; crypto.randomUUID exists only in secure
 * contexts, so a console served over plain HTTP by another host name
 * builds one from getRandomValues. */
function newKey(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// Shows a failed call the way the contracts describe errors: the gRPC code
// name and message, the field violations of INVALID_ARGUMENT (BadRequest)
// and the stable reason (ErrorInfo) when the server sent them, with a plain
// sentence for the reasons a user can act on. Field violations can also be
// placed next to their fields: an element with `data-path="<field path>"`
// (the request's proto path, `offering.installments[1].due_date`) receives
// the violations of that path and of the paths inside it.
import { Code, ConnectError } from "@connectrpc/connect";
import { codeName } from "./api";
import { h } from "./dom";
import { money } from "./format";
import { BadRequestSchema, ErrorInfoSchema, type ErrorInfo } from "./gen/google/rpc/error_details_pb";
import type { Violation } from "./parse";

export function errorView(err: unknown): HTMLElement {
  const error = ConnectError.from(err);
  const violations = fieldViolations(error);
  const info = errorInfo(error);
  const hint = info && hintFor(info);
  return h(
    "div",
    { class: "error", role: "alert", testid: "error" },
    h("strong", { testid: "error-code" }, codeName(error.code)),
    " ",
    h("span", { testid: "error-message" }, error.rawMessage),
    info?.reason && h("span", { class: "reason", testid: "error-reason" }, ` (${info.reason})`),
    hint && h("p", { class: "hint", testid: "error-hint" }, hint),
    violations.length > 0 &&
      h(
        "ul",
        { testid: "error-violations" },
        violations.map((v) =>
          h("li", { testid: "field-violation", "data-field": v.field }, h("code", {}, v.field), ": ", v.description),
        ),
      ),
  );
}

/** The BadRequest field violations of an INVALID_ARGUMENT, else none. */
export function fieldViolations(err: unknown): Violation[] {
  const error = ConnectError.from(err);
  if (error.code !== Code.InvalidArgument) return [];
  return error.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
}

/** The ErrorInfo the server attached, if any. */
export function errorInfo(err: unknown): ErrorInfo | undefined {
  return ConnectError.from(err).findDetails(ErrorInfoSchema)[0];
}

/** The ErrorInfo reason ("INSUFFICIENT_FUNDS"), or undefined. */
export function errorReason(err: unknown): string | undefined {
  return errorInfo(err)?.reason || undefined;
}

/** Replaces the violations shown inside `container` with `violations`,
 * each next to the element whose `data-path` is its field or the nearest
 * enclosing one (`offering.face_value.amount_minor` lands on
 * `offering.face_value`). Returns those that found no place; errorView
 * lists every one anyway. */
export function showViolations(container: ParentNode, violations: Violation[]): Violation[] {
  for (const old of container.querySelectorAll(".field-error")) old.remove();
  const places = new Map<string, Element>();
  for (const el of container.querySelectorAll("[data-path]")) {
    el.classList.remove("invalid");
    el.querySelector("input, select, textarea")?.removeAttribute("aria-invalid");
    places.set(el.getAttribute("data-path") ?? "", el);
  }
  const unplaced: Violation[] = [];
  for (const v of violations) {
    const place = enclosingPaths(v.field).map((p) => places.get(p)).find((el) => el !== undefined);
    if (!place) {
      unplaced.push(v);
      continue;
    }
    place.classList.add("invalid");
    place.querySelector("input, select, textarea")?.setAttribute("aria-invalid", "true");
    place.append(h("span", { class: "field-error", testid: "field-error", "data-field": v.field }, v.description));
  }
  return unplaced;
}

/** `a.b[1].c` -> [`a.b[1].c`, `a.b[1]`, `a.b`, `a`]. */
function enclosingPaths(path: string): string[] {
  const paths = [path];
  for (let p = path, next = ""; (next = p.replace(/(\.[^.[\]]*|\[\d*\])$/, "")) !== p && next; p = next) {
    paths.push(next);
  }
  return paths;
}

/** What the user can do about a reason (metadata filled in when sent). */
function hintFor(info: ErrorInfo): string | undefined {
  const meta = info.metadata;
  const brl = (minor: string | undefined) => {
    try {
      return minor ? money({ currencyCode: "BRL", amountMinor: BigInt(minor) }) : "";
    } catch {
      return minor ?? "";
    }
  };
  switch (info.reason) {
    case "AMOUNT_EXCEEDS_REMAINING":
      return `The amount is more than the offering still needs${meta.remaining_minor ? `: at most ${brl(meta.remaining_minor)} may still be invested` : ""}.`;
    case "INSUFFICIENT_FUNDS":
      return `The wallet's balance is below the amount${meta.balance_minor ? ` (it holds ${brl(meta.balance_minor)})` : ""}: deposit first.`;
    case "OFFERING_NOT_OPEN":
      return "This offering takes no more investments: it is no longer open, or its funding deadline has passed.";
    case "OFFERING_NOT_FUNDED":
      return "Installments can be paid only while the offering is funded.";
    case "OFFERING_TRANSITION_NOT_ALLOWED":
      return `The offering cannot change that way in its current state${meta.status ? ` (${meta.status})` : ""}.`;
    case "INSTALLMENT_ALREADY_PAID":
      return "This installment is already paid.";
    case "NOT_OFFERING_PRODUCER":
    case "RESOURCE_NOT_OWNED":
      return "Only the offering's producer may do this.";
    case "ROLE_NOT_ALLOWED":
      return `Your role${meta.role ? ` (${meta.role})` : ""} may not do this.`;
    case "IDEMPOTENCY_KEY_IN_USE":
      return "The same request is still being processed: try again in a moment.";
    case "CURRENCY_MISMATCH":
      return `Amounts must be in ${meta.expected_currency_code || "the wallet's currency"}.`;
    case "UNAVAILABLE":
    case "DEADLINE_EXCEEDED":
      return "The service could not answer in time: try again shortly (deposits, investments and payments resend the same idempotency key, so they never happen twice).";
    case "WALLET_NOT_FOUND":
      return "There is no wallet yet: the first deposit opens it.";
    default:
      return undefined;
  }
}

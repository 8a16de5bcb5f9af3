// Display helpers shared by pages: enum values, money, rates, dates,
// timestamps and durations as people read them. Money is formatted from its
// integer minor units with integer arithmetic only.
import { durationMs, timestampDate, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Date as CivilDate } from "./gen/google/type/date_pb";
import { Role } from "./gen/safra/accounts/v1/accounts_pb";

/** An enum value's name in lower case (protobuf-es drops the enum's prefix):
 * OFFERING_STATUS_FUNDED -> "funded", TRANSACTION_KIND_FUNDING_PAYOUT ->
 * "funding_payout". */
export function enumName(values: Record<number, string>, value: number): string {
  return values[value]?.toLowerCase() ?? String(value);
}

/** ROLE_INVESTOR -> "investor", the spelling of the token's `role` claim. */
export function roleName(role: Role): string {
  return enumName(Role, role);
}

/** An enum value as a label: "funding_payout" -> "funding payout". */
export function enumLabel(values: Record<number, string>, value: number): string {
  return enumName(values, value).replace(/_/g, " ");
}

/** RFC 3339 in UTC to the second, or an empty string when unset. */
export function time(ts: Timestamp | undefined): string {
  return ts ? instant(timestampDate(ts)) : "";
}

/** A Date the way time() shows a Timestamp. */
export function instant(date: Date): string {
  return date.toISOString().replace(/\.\d+Z$/, "Z");
}

/** A Duration in seconds to a tenth ("12.3"); "0.0" when unset (a zero
 * duration may come as an unset field). */
export function seconds(duration: Duration | undefined): string {
  return ((duration ? durationMs(duration) : 0) / 1000).toFixed(1);
}

/** Anything shaped like safra.type.v1.Money. */
export interface Amount {
  currencyCode: string;
  amountMinor: bigint;
}

const SYMBOLS: Record<string, string> = { BRL: "R$" };

/** `R$ 1,234.56`; `-R$ 5.00` for a debit, and with `signed` `+R$ 5.00` for a
 * credit. Empty when unset. */
export function money(amount: Amount | undefined, options: { signed?: boolean } = {}): string {
  if (!amount) return "";
  const negative = amount.amountMinor < 0n;
  const units = negative ? -amount.amountMinor : amount.amountMinor;
  const whole = (units / 100n).toLocaleString("en-US");
  const cents = (units % 100n).toString().padStart(2, "0");
  const sign = negative ? "-" : options.signed && units > 0n ? "+" : "";
  return `${sign}${SYMBOLS[amount.currencyCode] ?? amount.currencyCode} ${whole}.${cents}`;
}

/** Hundredths as a plain decimal, the way an amount is typed: 150000n ->
 * "1500.00". */
export function decimal(hundredths: bigint): string {
  const sign = hundredths < 0n ? "-" : "";
  const abs = hundredths < 0n ? -hundredths : hundredths;
  return `${sign}${abs / 100n}.${(abs % 100n).toString().padStart(2, "0")}`;
}

/** Basis points as a percentage: 1250 -> "12.50%". */
export function percent(bps: number): string {
  const sign = bps < 0 ? "-" : "";
  const abs = Math.abs(bps);
  return `${sign}${Math.trunc(abs / 100)}.${String(abs % 100).padStart(2, "0")}%`;
}

/** A google.type.Date as YYYY-MM-DD (the value of an `<input type=date>`),
 * or an empty string when unset. */
export function day(date: CivilDate | undefined): string {
  if (!date) return "";
  const pad = (n: number, width: number) => String(n).padStart(width, "0");
  return `${pad(date.year, 4)}-${pad(date.month, 2)}-${pad(date.day, 2)}`;
}

// What people type, read into contract values exactly: amounts in BRL and
// percentages as decimal strings into integers (centavos, basis points),
// never through a float; `<input type=date>` into google.type.Date and
// `<input type=datetime-local>` into a Timestamp. A value that cannot be
// read becomes a field violation under the request's own path, shown next
// to its field like the server's (see forms.ts).
import { create } from "@bufbuild/protobuf";
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { DateSchema, type Date as CivilDate } from "./gen/google/type/date_pb";
import { MoneySchema, type Money } from "./gen/safra/type/v1/money_pb";

/** One field that broke a rule: the shape of google.rpc.BadRequest's
 * field violations, whichever side found it. */
export interface Violation {
  /** The request's field path, e.g. `offering.installments[1].due_date`. */
  field: string;
  description: string;
}

/** Thrown when the page could not read its inputs; nothing was sent. */
export class InvalidInput extends Error {
  constructor(readonly violations: Violation[]) {
    super(violations.map((v) => `${v.field}: ${v.description}`).join("; "));
  }
}

const INT64_MAX = (1n << 63n) - 1n;
const INT32_MAX = 2 ** 31 - 1;

/** A non-negative decimal with at most two decimals, in hundredths:
 * "1500" -> 150000n, "1500.5" -> 150050n, "12.50" -> 1250n. Also takes a
 * comma as the decimal mark ("1500,50"), thousands grouped either way
 * ("1,500.00", "1.500,00"), and a leading "R$". Null when it is none. */
export function parseHundredths(text: string): bigint | null {
  const s = text.trim().replace(/^R\$\s*/i, "").replace(/\s+/g, "");
  const m =
    s.match(/^(\d+)(?:[.,](\d{1,2}))?$/) ??
    s.match(/^(\d{1,3}(?:,\d{3})+)(?:\.(\d{1,2}))?$/) ??
    s.match(/^(\d{1,3}(?:\.\d{3})+)(?:,(\d{1,2}))?$/);
  if (!m) return null;
  return BigInt(m[1].replace(/[.,]/g, "")) * 100n + BigInt((m[2] ?? "").padEnd(2, "0"));
}

/** Reads a form's values, collecting every one it cannot read; `check()`
 * then throws them all at once. Empty inputs are left to the contract: an
 * unset message (the server says whether it is required) or zero. */
export class Inputs {
  readonly violations: Violation[] = [];

  /** Records a value that cannot be sent. */
  reject(field: string, description: string): void {
    this.violations.push({ field, description });
  }

  /** "1500.00" in BRL as Money (150000 centavos); unset when empty. */
  brl(text: string, field: string): Money | undefined {
    if (!text.trim()) return undefined;
    const minor = parseHundredths(text);
    if (minor === null) {
      this.reject(field, "is not an amount in reais, like 1500.00");
      return undefined;
    }
    if (minor > INT64_MAX) {
      this.reject(field, "is too large");
      return undefined;
    }
    return create(MoneySchema, { currencyCode: "BRL", amountMinor: minor });
  }

  /** A whole number; 0 when empty. */
  integer(text: string, field: string): bigint {
    const s = text.trim().replace(/[\s_]/g, "");
    if (!s) return 0n;
    if (!/^\d+$/.test(s)) {
      this.reject(field, "is not a whole number");
      return 0n;
    }
    const value = BigInt(s);
    if (value > INT64_MAX) {
      this.reject(field, "is too large");
      return 0n;
    }
    return value;
  }

  /** A percentage with at most two decimals ("12.5") in basis points
   * (1250); 0 when empty. */
  bps(text: string, field: string): number {
    if (!text.trim()) return 0;
    const value = parseHundredths(text.replace(/%\s*$/, ""));
    if (value === null) {
      this.reject(field, "is not a percentage with at most two decimals, like 12.5");
      return 0;
    }
    if (value > BigInt(INT32_MAX)) {
      this.reject(field, "is too large");
      return 0;
    }
    return Number(value);
  }

  /** "YYYY-MM-DD" (an `<input type=date>`) as a google.type.Date; unset when
   * empty. Whether the day exists is the server's rule. */
  date(text: string, field: string): CivilDate | undefined {
    if (!text.trim()) return undefined;
    const m = text.trim().match(/^(\d{4})-(\d{2})-(\d{2})$/);
    if (!m) {
      this.reject(field, "is not a date (YYYY-MM-DD)");
      return undefined;
    }
    return create(DateSchema, { year: Number(m[1]), month: Number(m[2]), day: Number(m[3]) });
  }

  /** "YYYY-MM-DDTHH:MM" (an `<input type=datetime-local>`, the browser's
   * time zone) as a Timestamp; unset when empty. */
  instant(text: string, field: string): Timestamp | undefined {
    if (!text.trim()) return undefined;
    const parsed = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(text.trim()) ? new Date(text.trim()) : null;
    if (!parsed || Number.isNaN(parsed.getTime())) {
      this.reject(field, "is not a date and time");
      return undefined;
    }
    return timestampFromDate(parsed);
  }

  /** Throws InvalidInput when any value could not be read. */
  check(): void {
    if (this.violations.length > 0) throw new InvalidInput(this.violations);
  }
}

// Display helpers shared by pages: roles and timestamps as people read them.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Role } from "./gen/safra/accounts/v1/accounts_pb";

/** ROLE_INVESTOR -> "investor", the spelling of the token's `role` claim. */
export function roleName(role: Role): string {
  return Role[role]?.toLowerCase() ?? String(role);
}

/** RFC 3339 in UTC to the second, or an empty string when unset. */
export function time(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toISOString().replace(/\.\d+Z$/, "Z") : "";
}

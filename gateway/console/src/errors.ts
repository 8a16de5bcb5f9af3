// Shows a failed call the way the contracts describe errors: the gRPC code
// name and message, the field violations of INVALID_ARGUMENT (BadRequest)
// and the stable reason (ErrorInfo) when the server sent them.
import { Code, ConnectError } from "@connectrpc/connect";
import { codeName } from "./api";
import { h } from "./dom";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb";

export function errorView(err: unknown): HTMLElement {
  const error = ConnectError.from(err);
  const violations =
    error.code === Code.InvalidArgument ? error.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations) : [];
  const reason = error.findDetails(ErrorInfoSchema)[0]?.reason;
  return h(
    "div",
    { class: "error", role: "alert", testid: "error" },
    h("strong", { testid: "error-code" }, codeName(error.code)),
    " ",
    h("span", { testid: "error-message" }, error.rawMessage),
    reason && h("span", { class: "reason", testid: "error-reason" }, ` (${reason})`),
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

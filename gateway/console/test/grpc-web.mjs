// grpc-web conformance check of a running gateway, from Node, with the
// generated safra.echo.v1.EchoService client (test contracts, which the
// gateway must be serving):
//
//   node test/grpc-web.mjs [baseUrl]     (default $SAFRA_GATEWAY_URL or http://127.0.0.1:8080)
//
// Prints one line per check and a closing "grpc-web: N passed, N failed";
// exits 1 when any check fails, 2 when it cannot run at all.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";

const baseUrl = process.argv[2] ?? process.env.SAFRA_GATEWAY_URL ?? "http://127.0.0.1:8080";
const CALL_TIMEOUT_MS = 10_000;
const RUN_TIMEOUT_MS = 50_000;

let generated;
try {
  generated = {
    ...(await import("./gen/safra/echo/v1/echo_pb.js")),
    ...(await import("./gen/google/rpc/error_details_pb.js")),
  };
} catch (err) {
  console.error(`grpc-web: cannot load the generated test contracts (run \`npm run generate\` first): ${err.message}`);
  process.exit(2);
}
const { EchoService, BadRequestSchema } = generated;

const transport = createGrpcWebTransport({ baseUrl, httpVersion: "1.1" });
const echo = createClient(EchoService, transport);
const opts = () => ({ timeoutMs: CALL_TIMEOUT_MS });

const watchdog = setTimeout(() => {
  console.error(`grpc-web: FAIL - the run took longer than ${RUN_TIMEOUT_MS} ms against ${baseUrl}`);
  process.exit(1);
}, RUN_TIMEOUT_MS);
watchdog.unref();

let passed = 0;
let failed = 0;

/** Runs one check: `fn` throws (or rejects) to fail it. */
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   - ${name}`);
  } catch (err) {
    failed++;
    const why = err instanceof ConnectError ? `${Code[err.code]}: ${err.rawMessage}` : (err?.message ?? String(err));
    console.log(`FAIL - ${name}: ${why}`);
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/** Calls `fn`, which must fail with a ConnectError; returns that error. */
async function expectError(fn) {
  try {
    await fn();
  } catch (err) {
    if (err instanceof ConnectError) return err;
    throw err;
  }
  throw new Error("the call succeeded but should have failed");
}

console.log(`grpc-web: checking ${baseUrl}`);

await check('Echo({message: "from node"}) answers the message, from caller "gateway", with an x-trace-id', async () => {
  let traceId = null;
  const res = await echo.echo({ message: "from node" }, { ...opts(), onHeader: (h) => (traceId = h.get("x-trace-id")) });
  expect(res.message === "from node", `message is ${JSON.stringify(res.message)}, want "from node"`);
  expect(res.callerService === "gateway", `callerService is ${JSON.stringify(res.callerService)}, want "gateway"`);
  expect(/^[0-9a-f]{32}$/.test(traceId ?? ""), `x-trace-id is ${JSON.stringify(traceId)}, want 32 hex digits`);
});

await check("StreamEcho({count: 3}) streams exactly 3 messages", async () => {
  let n = 0;
  for await (const _ of echo.streamEcho({ count: 3 }, opts())) n++;
  expect(n === 3, `received ${n} messages, want 3`);
});

await check('Echo({message: ""}) fails INVALID_ARGUMENT with a BadRequest violation on "message"', async () => {
  const err = await expectError(() => echo.echo({ message: "" }, opts()));
  expect(err.code === Code.InvalidArgument, `code is ${Code[err.code]} (${err.rawMessage}), want InvalidArgument`);
  const fields = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
  expect(fields.includes("message"), `BadRequest fields are ${JSON.stringify(fields)}, want one named "message"`);
});

await check("AdminEcho without a token fails UNAUTHENTICATED", async () => {
  const err = await expectError(() => echo.adminEcho({ message: "no token" }, opts()));
  expect(err.code === Code.Unauthenticated, `code is ${Code[err.code]} (${err.rawMessage}), want Unauthenticated`);
});

console.log(`grpc-web: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

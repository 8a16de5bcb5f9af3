-- POST /v1/offerings/{id}:invest: R$1.00 (100 centavos) from a random investor
-- into a random offering, a new idempotency key on every request.
dofile(os.getenv("PEER_BENCH_LUA") .. "/common.lua")

request = function()
  sent = sent + 1
  local key = run_word .. "-" .. (thread_no or 0) .. "-" .. sent
  local body = '{"amount":{"currencyCode":"BRL","amountMinor":"100"},"idempotencyKey":"' .. key .. '"}'
  return wrk.format("POST", "/v1/offerings/" .. any_offering() .. ":invest",
    { ["Authorization"] = bearer(), ["Content-Type"] = "application/json" }, body)
end

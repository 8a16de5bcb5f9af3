-- GET /v1/users/me: a random investor's token.
dofile(os.getenv("PEER_BENCH_LUA") .. "/common.lua")

request = function()
  return get("/v1/users/me")
end

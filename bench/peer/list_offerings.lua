-- GET /v1/offerings?pageSize=50: the first page, a random investor's token.
dofile(os.getenv("PEER_BENCH_LUA") .. "/common.lua")

request = function()
  return get("/v1/offerings?pageSize=50")
end

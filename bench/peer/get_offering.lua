-- GET /v1/offerings/{id}: a random offering, a random investor's token.
dofile(os.getenv("PEER_BENCH_LUA") .. "/common.lua")

request = function()
  return get("/v1/offerings/" .. any_offering())
end

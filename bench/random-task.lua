-- wrk script: GET /api/tasks/<random seeded id> (ids t-00000 .. t-09999).
math.randomseed(os.time())
local count = tonumber(os.getenv("BENCH_TASKS") or "10000")
request = function()
  return wrk.format("GET", string.format("/api/tasks/t-%05d", math.random(0, count - 1)))
end

-- wrk script: GET /api/tasks/<random seeded id> (ids t-00000 .. t-09999); BENCH_PATH
-- replaces /api/tasks/ (the key-value yardstick reads /p3-kv/task:<id>).
math.randomseed(os.time())
local count = tonumber(os.getenv("BENCH_TASKS") or "10000")
local path = os.getenv("BENCH_PATH") or "/api/tasks/"
request = function()
  return wrk.format("GET", string.format("%st-%05d", path, math.random(0, count - 1)))
end

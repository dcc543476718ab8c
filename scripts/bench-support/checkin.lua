-- wrk script of scripts/bench: check-ins of random device ids, 1% registered
-- (bench-reg-0…REGISTERED-1), 99% never registered. Prints one RESULT line at the end:
-- requests, requests/s, p50, p99, p99.9 (ms), errors (non-2xx + socket errors).
local registered = tonumber(os.getenv("REGISTERED") or "1000")
local percent = tonumber(os.getenv("REGISTERED_PERCENT") or "1")
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

init = function(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

request = function()
  local id
  if math.random(100) <= percent then
    id = "bench-reg-" .. math.random(0, registered - 1)
  else
    id = "anon-" .. math.random(1, 1000000000)
  end
  return wrk.format("POST", "/v1/checkin", {["Content-Type"] = "application/json"},
    '{"device_id":"' .. id .. '","app_version":"1.4.2","platform":"ios"}')
end

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %d %.1f %.3f %.3f %.3f %d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, errors))
end

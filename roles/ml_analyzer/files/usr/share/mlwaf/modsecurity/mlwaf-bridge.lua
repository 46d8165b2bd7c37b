-- mlwaf ModSecurity bridge (SecRuleScript, Lua 5.1, phase 2; exec, phase 5).
--
-- Phase 2: sends a summary of the request, with the arguments as ModSecurity
-- decoded them, to the analyzer over its Unix socket (protocol version 1: one
-- JSON line each way) and copies the answer into TX variables:
--   tx.mlwaf_verdict   allow | block | log, or ratelimit (a block answered 429)
--   tx.mlwaf_retry_after  seconds, with ratelimit
--   tx.mlwaf_score_<model>, tx.mlwaf_permille_<model> (the score times 1000, an
--                      integer for rules to compare), tx.mlwaf_summary
--   tx.mlwaf_ms        round trip as Apache pays it (connect, send, analyse,
--                      answer), milliseconds; the analyzer's own time is in
--                      its decision log
--   tx.mlwaf_fallback  set only when the analyzer could not answer (why)
--   tx.mlwaf_partial   1 when a limit (arguments, headers, value or body size,
--                      here or in the analyzer) kept part of the request from
--                      the model
-- The rules in /etc/modsecurity/mlwaf.d/ml-analyzer.conf act on them.
-- Phase 5 (tx.mlwaf_report set by the rules for 4xx and 5xx answers): reports
-- the response status to the analyzer's behavioural layer, unless the
-- analyzer itself refused the request.
-- ModSecurity 2.9 runs every script in a fresh Lua state, so nothing is
-- kept between requests: one connection per request, kept short. The native
-- half (mlwaf_bridge.so, tx.mlwaf_native) quotes and exchanges in C, with one
-- deadline for the whole exchange; without it, Lua quotes and lua-socket
-- exchanges, its timeout applying to each step.

-- Arguments by where ModSecurity found them; ARGS also holds those of the JSON body
-- processor (sent as "json"). Lua cannot read the XML processor's tree, so rule 1014
-- joins its attribute values and text nodes into tx.mlwaf_xml (sent as "xml").
local SOURCES = { { "ARGS_GET", "query" }, { "ARGS_POST", "body" }, { "REQUEST_COOKIES", "cookie" } }
local XML_SEPARATOR = "<|>"
local MAX_ARGS = 1000
local MAX_HEADERS = 100
local MAX_VALUE = 8192
local MAX_BODY = 131072
-- set when a limit above cut something from the message (tx.mlwaf_partial): the rules
-- then never let the model's score overrule CRS, which read the whole request
local partial = false
-- the native half's functions (quote, exchange), when the role built it
local native = nil

local function cut(text, limit)
  if #text > limit then partial = true end
  return string.sub(text, 1, limit)
end

local function quote(text)
  if native then return native.quote(text) end
  text = string.gsub(text, '[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. text .. '"'
end

local function var(name)
  return m.getvar(name, "none") or ""
end

local function fallback(reason)
  m.setvar("tx.mlwaf_fallback", (string.gsub(reason, "[^%w%s%.:_/-]", "?")))
  m.log(2, "mlwaf: analyzer unavailable: " .. reason)
  return nil
end

local function arg(source, name, value)
  return "[" .. quote(source) .. "," .. quote(name) .. "," .. quote(cut(value or "", MAX_VALUE)) .. "]"
end

local function short_name(item)
  return string.match(item.name, "^[^:]*:(.*)$") or item.name
end

local function arguments(processor)
  local args, seen = {}, {}
  for _, pair in ipairs(SOURCES) do
    for _, item in ipairs(m.getvars(pair[1], "none") or {}) do
      if #args >= MAX_ARGS then partial = true; return args end
      local key = short_name(item) .. "\0" .. (item.value or "")
      seen[key] = (seen[key] or 0) + 1
      args[#args + 1] = arg(pair[2], short_name(item), item.value)
    end
  end
  -- what ARGS holds beyond the query and the form: the JSON body processor's arguments
  -- (without a body, or with a form or multipart one, ARGS holds nothing more)
  local extra = (processor == "" or processor == "URLENCODED" or processor == "MULTIPART") and {}
    or m.getvars("ARGS", "none") or {}
  for _, item in ipairs(extra) do
    if #args >= MAX_ARGS then partial = true; return args end
    local key = short_name(item) .. "\0" .. (item.value or "")
    if (seen[key] or 0) > 0 then
      seen[key] = seen[key] - 1
    else
      args[#args + 1] = arg("json", short_name(item), item.value)
    end
  end
  local xml = cut(m.getvar("tx.mlwaf_xml", "none") or "", MAX_BODY)
  local start = 1
  while start <= #xml and #args < MAX_ARGS do
    local stop = string.find(xml, XML_SEPARATOR, start, true) or (#xml + 1)
    local piece = string.sub(xml, start, stop - 1)
    -- words and numbers carry no syntax (the analyzer would not score them): not sent
    if piece ~= "" and not string.find(piece, "^[%w_%.%-]+$") then args[#args + 1] = arg("xml", "", piece) end
    start = stop + #XML_SEPARATOR
  end
  if start <= #xml then partial = true end
  return args
end

-- The headers as JSON members, how many the request had, and its Content-Length.
local function headers()
  local out, all, length = {}, m.getvars("REQUEST_HEADERS", "none") or {}, 0
  for _, item in ipairs(all) do
    local name = string.lower(short_name(item))
    if name == "content-length" then length = tonumber(item.value) or 0 end
    if #out >= MAX_HEADERS then
      partial = true
    elseif name ~= "cookie" then  -- read as REQUEST_COOKIES
      out[#out + 1] = quote(name) .. ":" .. quote(cut(item.value or "", MAX_VALUE))
    end
  end
  return out, #all, length
end

-- Learning for site tuning (ml_analyzer_tuning_record): the CRS rules that fired, as
-- "id@VARIABLE" words the rules of ml-analyzer.conf collect in tx.mlwaf_crs, and CRS's
-- anomaly score; nothing when the appliance is not learning.
local function learning()
  local hits = m.getvar("tx.mlwaf_crs", "none")
  if not hits then return "" end
  return ',"crs":' .. quote(cut(hits, MAX_BODY))
    .. ',"crs_score":' .. (tonumber(m.getvar("tx.anomaly_score", "none")) or 0)
end

local function message()
  partial = false
  -- a body no processor parsed (text/plain, ...): ModSecurity keeps it when rule 1013 asked
  local processor = m.getvar("REQBODY_PROCESSOR", "none") or ""
  local body = processor == "" and (m.getvar("REQUEST_BODY", "none") or "") or ""
  body = cut(body, MAX_BODY)
  local fields, count, length = headers()
  local args = table.concat(arguments(processor), ",")
  return table.concat({
    '{"v":1,"id":', quote(var("UNIQUE_ID")),
    ',"cut":', partial and "true" or "false",
    ',"method":', quote(var("REQUEST_METHOD")),
    ',"path":', quote(var("REQUEST_FILENAME")),
    ',"query":', quote(var("QUERY_STRING")),
    ',"args":[', args, "]",
    ',"headers":{', table.concat(fields, ","), "}",
    ',"body":', quote(body),
    ',"content_length":', length,
    ',"header_count":', count,
    ',"protocol":', quote(var("REQUEST_PROTOCOL")),
    ',"client_ip":', quote(var("REMOTE_ADDR")),
    ',"ts":', tonumber(var("TIME_EPOCH")) or 0,
    learning(),
    "}\n",
  })
end

-- lua-socket's Unix socket module: straight from the library the rules name
-- (tx.mlwaf_lua_unix, kept loaded by Apache), which skips require()'s search
-- of the Lua paths and the rest of lua-socket; require() as a fallback.
local function unix_module()
  local library = m.getvar("tx.mlwaf_lua_unix", "none")
  local open = library and package.loadlib(library, "luaopen_socket_unix")
  if open then return open() end
  local ok, unix = pcall(require, "socket.unix")
  return ok and unix or nil
end

-- Microseconds since the transaction began (ModSecurity's clock).
local function now_us()
  return tonumber(m.getvar("DURATION", "none")) or 0
end

-- The native half, when the rules name it and it loads.
local function native_module()
  local library = m.getvar("tx.mlwaf_native", "none")
  local open = library and package.loadlib(library, "luaopen_mlwaf_bridge")
  return open and open() or nil
end

-- One message to the analyzer and its one-line answer (nil and why on failure).
local function exchange(text)
  local path = m.getvar("tx.mlwaf_socket", "none") or "/run/mlwaf/analyzer.sock"
  local timeout_ms = tonumber(var("tx.mlwaf_timeout_ms")) or 50
  if native then return native.exchange(path, text, timeout_ms) end
  local unix = unix_module()
  if not unix then return nil, "lua-socket is not installed" end
  local conn = (unix.stream or unix)()
  conn:settimeout(timeout_ms / 1000)
  local done, err = conn:connect(path)
  if not done then conn:close(); return nil, "connect " .. path .. ": " .. tostring(err) end
  done, err = conn:send(text)
  if not done then conn:close(); return nil, "send: " .. tostring(err) end
  local line
  line, err = conn:receive("*l")
  conn:close()
  if not line then return nil, "receive: " .. tostring(err) end
  return line
end

local function report()
  local verdict = m.getvar("tx.mlwaf_verdict", "none")
  if not verdict or verdict == "block" or verdict == "ratelimit" then return nil end
  local agent = m.getvar("REQUEST_HEADERS.User-Agent", "none")
  local _, err = exchange(table.concat({
    '{"v":1,"type":"status","id":', quote(var("UNIQUE_ID")),
    ',"client_ip":', quote(var("REMOTE_ADDR")),
    ',"headers":{', agent and ('"user-agent":' .. quote(agent)) or "", "}",
    ',"status":', tonumber(var("RESPONSE_STATUS")) or 0,
    "}\n",
  }))
  if err then m.log(3, "mlwaf: status report not delivered: " .. err) end
  return nil
end

local function ask()
  local start = now_us()
  local line, err = exchange(message())
  if partial then m.setvar("tx.mlwaf_partial", "1") end
  if not line then return fallback(err) end

  local verdict = string.match(line, '"verdict":"(%a+)"')
  if not verdict then return fallback("unreadable reply") end
  local problem = string.match(line, '"error":"([^"]*)"')
  if problem then m.log(3, "mlwaf: analyzer could not read the request: " .. problem) end
  if verdict == "block" and string.match(line, '"status":429') then
    verdict = "ratelimit"
    m.setvar("tx.mlwaf_retry_after", string.match(line, '"retry_after":(%d+)') or "60")
  end
  m.setvar("tx.mlwaf_verdict", verdict)
  -- the analyzer's own limits (inputs, JSON depth, body size) count as a cut too
  local anomalies = string.match(line, '"anomalies":%[([^%]]*)%]') or ""
  if string.find(anomalies, "truncated", 1, true) or string.find(anomalies, "too_deep", 1, true) then
    m.setvar("tx.mlwaf_partial", "1")
  end
  m.setvar("tx.mlwaf_ms", string.format("%.3f", (now_us() - start) / 1000))
  m.setvar("tx.mlwaf_summary", string.match(line, '"summary":"([^"]*)"') or "")
  for name, score in string.gmatch(string.match(line, '"scores":{([^}]*)}') or "", '"([%w_]+)":([%d%.eE+-]+)') do
    m.setvar("tx.mlwaf_score_" .. name, score)
    local value = tonumber(score)  -- for rules, which compare integers only
    if value then m.setvar("tx.mlwaf_permille_" .. name, tostring(math.floor(value * 1000 + 0.5))) end
  end
  return nil
end

function main()
  native = native_module()
  -- Any failure in the bridge itself is a fallback too, never a failed rule.
  if m.getvar("tx.mlwaf_report", "none") == "1" then
    pcall(report)
    return nil
  end
  local ok, err = pcall(ask)
  if not ok then return fallback("bridge error: " .. tostring(err)) end
  return nil
end

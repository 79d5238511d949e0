-- REST normaliser: the first HTTP filter, so it sees every response last, local replies included.
--
-- Request side (REST only): the query string made what FastAPI would read (`rewritten_query`:
-- no parameter may name a path variable, the last of repeated values, on/off booleans); for
-- write requests, remember the query string so a 422 can say whether a bad value came from the
-- query or the body.
-- Response side (REST only; native gRPC passes untouched):
--   * bare arrays: a route with metadata unwrap=items serves {"items":[...]} as [...];
--   * every error becomes JSON {"detail": ...} with the status the real API uses:
--     gRPC errors keep their message, x-http-status / x-http-body trailers from services choose
--     402/422, the transcoder's own replies become FastAPI-shaped 422s, 404s and 413s;
--   * grpc-* headers never reach REST clients.
-- The renderer prepends BOOL_QUERY_PARAMS, BODY_FIELDS, REPEATED_QUERY_PARAMS and
-- PATH_VARIABLES (sets, from the descriptor), PATH_BINDINGS ({method, Lua path pattern, set of
-- the variables it binds} per REST route with path variables),
-- STREAMED_PATHS (Lua patterns of REST paths whose bodies stream to the service) and
-- MAX_BODY_BYTES (the largest JSON body a REST client may send).

local REASONS = {
  ["400"] = "Bad Request", ["401"] = "Unauthorized", ["403"] = "Forbidden", ["404"] = "Not Found",
  ["405"] = "Method Not Allowed", ["408"] = "Request Timeout", ["413"] = "Request Entity Too Large",
  ["406"] = "Not Acceptable", ["409"] = "Conflict", ["411"] = "Length Required",
  ["415"] = "Unsupported Media Type", ["422"] = "Unprocessable Entity",
  ["431"] = "Request Header Fields Too Large",
  ["429"] = "Too Many Requests", ["500"] = "Internal Server Error", ["501"] = "Not Implemented",
  ["502"] = "Bad Gateway", ["503"] = "Service Unavailable", ["504"] = "Gateway Timeout",
}

local FASTAPI_TYPES = {
  TYPE_INT32 = {"int_parsing", "Input should be a valid integer, unable to parse string as an integer"},
  TYPE_INT64 = {"int_parsing", "Input should be a valid integer, unable to parse string as an integer"},
  TYPE_UINT32 = {"int_parsing", "Input should be a valid integer, unable to parse string as an integer"},
  TYPE_DOUBLE = {"float_parsing", "Input should be a valid number, unable to parse string as a number"},
  TYPE_FLOAT = {"float_parsing", "Input should be a valid number, unable to parse string as a number"},
  TYPE_BOOL = {"bool_parsing", "Input should be a valid boolean, unable to interpret input"},
  TYPE_STRING = {"string_type", "Input should be a valid string"},
}

local META = "chutes.gateway"

-- Bytes that are not UTF-8 (a client's, echoed in a parser's message) as U+FFFD: the answer
-- must stay valid JSON whatever the request held.
local function utf8_safe(s)
  if not s:find("[\128-\255]") then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:byte(i)
    local size = 0
    if c < 0x80 then size = 1
    elseif c >= 0xC2 and c <= 0xDF then size = 2
    elseif c >= 0xE0 and c <= 0xEF then size = 3
    elseif c >= 0xF0 and c <= 0xF4 then size = 4 end
    local ok = size > 0 and i + size - 1 <= n
    if ok then
      for k = i + 1, i + size - 1 do
        local b = s:byte(k)
        if b < 0x80 or b > 0xBF then ok = false; break end
      end
    end
    if ok then
      out[#out + 1] = s:sub(i, i + size - 1)
      i = i + size
    else
      out[#out + 1] = "\239\191\189"
      i = i + 1
    end
  end
  return table.concat(out)
end

local function json_string(s)
  s = utf8_safe(s):gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\"
    elseif c == "\n" then return "\\n" elseif c == "\r" then return "\\r" elseif c == "\t" then return "\\t" end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

-- A transcoder message without the names of the gateway's insides (protobuf types and
-- packages), which the issue found in 208 answers: what is left says what was wrong.
local function scrub(message)
  message = message:gsub("type%.googleapis%.com/google%.protobuf%.Struct", "object")
  message = message:gsub("type%.googleapis%.com/google%.protobuf%.ListValue", "array")
  message = message:gsub("type%.googleapis%.com/[%w_%.]+", "object")
  message = message:gsub("TYPE_(%w+)", function(kind) return kind:lower() end)
  message = message:gsub("[Pp]roto field", "Field")
  message = message:gsub("[%w_]+%.v%d+%.[%w_%.]+", "object")
  message = message:gsub("google%.protobuf%.[%w_%.]+", "value")
  return message
end

local function is_grpc(content_type)
  return content_type ~= nil and content_type:sub(1, 16) == "application/grpc"
end

local function streamed(path)
  local bare = path:match("^[^?]*")
  for _, pattern in ipairs(STREAMED_PATHS) do
    if bare:match(pattern) then return true end
  end
  return false
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The path variables of the REST routes this request may be for (nil when none).
local function bound_by(method, bare)
  if method == "HEAD" then method = "GET" end
  local names = nil
  for _, route in ipairs(PATH_BINDINGS) do
    if route[1] == method and bare:match(route[2]) then
      names = names or {}
      for name in pairs(route[3]) do names[name] = true end
    end
  end
  return names
end

-- The query string as the transcoder must see it, or nil when it is fine as it is:
--   * a parameter naming a path variable is dropped. The transcoder would let it set the same
--     request field as the path (`DELETE /chutes/X?chute_id=Y` deleted Y), while API key
--     scopes are judged on the path; FastAPI ignores such a parameter, and so do we;
--   * a parameter given twice takes its last value (FastAPI's rule; the transcoder refuses it),
--     unless it is a list;
--   * FastAPI's extra boolean spellings (on/off) for boolean parameters.
local function rewritten_query(query, method, bare)
  local params, last = {}, {}
  local bound = nil
  local changed = false
  for param in query:gmatch("[^&]+") do
    local name, value = param:match("^([^=]*)=?(.*)$")
    -- The transcoder reads `a.b` as field a's b: the top-level field is what a path binds.
    local field = unescape(name):match("^[^%.]*")
    local drop = false
    if PATH_VARIABLES[field] then
      bound = bound or bound_by(method, bare) or {}
      drop = bound[field] == true
    end
    if drop then
      changed = true
    else
      if BOOL_QUERY_PARAMS[name] then
        local v = value:lower()
        if v == "on" then param = name .. "=true"; changed = true
        elseif v == "off" then param = name .. "=false"; changed = true end
      end
      params[#params + 1] = {field, param}
      if not REPEATED_QUERY_PARAMS[field] then
        if last[field] ~= nil then changed = true end
        last[field] = #params
      end
    end
  end
  if not changed then return nil end
  local kept = {}
  for i, entry in ipairs(params) do
    if REPEATED_QUERY_PARAMS[entry[1]] or last[entry[1]] == i then kept[#kept + 1] = entry[2] end
  end
  return table.concat(kept, "&")
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if is_grpc(headers:get("content-type")) then
    return
  end
  local path = headers:get(":path")
  local length = tonumber(headers:get("content-length") or "0") or 0
  if length > MAX_BODY_BYTES and not streamed(path) then
    handle:respond({[":status"] = "413", ["content-type"] = "application/json"},
      '{"detail":"Request Entity Too Large"}')
    return
  end
  local method = headers:get(":method")
  local q = path:find("?", 1, true)
  local query = ""
  if q ~= nil then
    query = path:sub(q + 1)
    local rewritten = rewritten_query(query, method, path:sub(1, q - 1))
    if rewritten ~= nil then
      query = rewritten
      headers:replace(":path", path:sub(1, q) .. rewritten)
    end
  end
  if method == "POST" or method == "PUT" or method == "PATCH" then
    handle:streamInfo():dynamicMetadata():set(META, "query", "&" .. query .. "&")
  end
end

-- What a value of a message type must be, as FastAPI says it.
local MESSAGE_TYPES = {
  ["google.protobuf.Struct"] = {"dict_type", "Input should be a valid dictionary"},
  ["google.protobuf.ListValue"] = {"list_type", "Input should be a valid list"},
}
local OBJECT = {"model_attributes_type", "Input should be a valid dictionary or object to extract fields from"}

-- `scopes[1].object_type` as loc parts: "scopes", 1, "object_type".
local function loc_parts(field)
  local parts = {}
  for part in field:gmatch("[^%.]+") do
    local name, rest = part:match("^([^%[]*)(.*)$")
    if name ~= "" then parts[#parts + 1] = json_string(name) end
    for index in rest:gmatch("%[(%d+)%]") do parts[#parts + 1] = index end
  end
  return parts
end

local function one_error(kind, loc, msg, input)
  return '{"detail":[{"type":"' .. kind .. '","loc":[' .. table.concat(loc, ",") .. '],"msg":'
    .. json_string(msg) .. ',"input":' .. input .. '}]}'
end

-- The transcoder's refusal of a request (text) as one FastAPI validation error: a typed value
-- (`field.path: invalid value X for type TYPE_Y`, or a message type), a body that is not an
-- object, or a body that is not JSON. Never with protobuf's names (scrub).
local function fastapi_error(message, query)
  message = message:gsub("%s+$", "")
  local bound = message:match("^The binding value .- of the field ([%w_%.]+) is conflicting with")
  if bound ~= nil then
    -- A `body: "*"` route's body naming the object the path names (reject_binding_body_field_
    -- collisions): the path alone says which object a request acts on.
    return one_error("value_error", {'"body"', json_string(bound)},
      "Value error, " .. bound .. " is given by the path and cannot be changed", "null")
  end
  if message:find("Root element must be a message", 1, true) then
    return one_error(OBJECT[1], {'"body"'}, OBJECT[2], "null")
  end
  local field, value, kind = message:match("^([%w_%.%[%]]*): invalid value (.-) for type (%S+)$")
  if field == nil then
    -- Not a typed value: the body is not valid JSON (or not the JSON shape expected).
    return '{"detail":[{"type":"json_invalid","loc":["body",0],"msg":"JSON decode error","input":{},'
      .. '"ctx":{"error":' .. json_string(scrub(message)) .. '}}]}'
  end
  local fastapi
  local input = json_string((value:gsub('^"(.*)"$', "%1")))
  if kind:sub(1, 5) == "TYPE_" then
    fastapi = FASTAPI_TYPES[kind] or {"value_error", "Input should be a valid " .. kind:sub(6):lower()}
  elseif kind:find("/", 1, true) then
    fastapi = MESSAGE_TYPES[kind:match("/(.*)$")] or OBJECT
  else
    -- `: invalid value Starting an object on a scalar field for type name`: the last word is
    -- the field, the value an explanation rather than the input.
    field = (field ~= "" and field .. "." or "") .. kind
    fastapi = {"value_error", "Input should be a single value, not " .. (value:find("object") and "an object" or "a list")}
    input = "null"
  end
  local parts = loc_parts(field)
  local top = field:match("^[%w_]*")
  local loc
  if query ~= nil and not query:find("&" .. top .. "=", 1, true) then
    if BODY_FIELDS[top] then table.remove(parts, 1) end
    loc = {'"body"'}
  else
    loc = {'"query"'}
  end
  for _, part in ipairs(parts) do loc[#loc + 1] = part end
  return one_error(fastapi[1], loc, fastapi[2], input)
end

-- The `message` of a transcoded gRPC error ({"code":N,"message":"...","details":[...]}), still
-- JSON-escaped, so it can be copied into {"detail":"..."} as is.
local function grpc_message(text)
  local start = text:find('"message":"', 1, true)
  if start == nil then return nil end
  local i = start + 11
  local n = #text
  while i <= n do
    local c = text:sub(i, i)
    if c == "\\" then i = i + 2
    elseif c == '"' then return text:sub(start + 11, i - 1)
    else i = i + 1 end
  end
  return nil
end

-- The methods some route takes `path` with (FastAPI's Allow, HEAD wherever GET), or nil.
local function allowed_methods(path)
  local methods, seen = {}, {}
  for _, route in ipairs(ROUTE_METHODS) do
    if not seen[route[1]] and path:match(route[2]) then
      seen[route[1]] = true
      methods[#methods + 1] = route[1]
    end
  end
  if #methods == 0 then return nil end
  if seen["GET"] and not seen["HEAD"] then methods[#methods + 1] = "HEAD" end
  table.sort(methods)
  return table.concat(methods, ", ")
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type")
  if is_grpc(content_type) then
    return
  end
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-accept-encoding")
  local status = headers:get(":status")
  local forced_status = headers:get("x-http-status")
  local forced_body = headers:get("x-http-body")
  local unwrap = nil
  if status == "200" then
    unwrap = handle:metadata():get("unwrap")
    if unwrap == nil then return end
  elseif status:sub(1, 1) == "2" or status:sub(1, 1) == "3" then
    return
  end

  -- Only unwrapped arrays and errors get here; everything else streams through unbuffered.
  local allow = nil
  local body = handle:body(true)
  local text = body:getBytes(0, body:length())
  local out
  if unwrap ~= nil then
    local prefix = '{"' .. unwrap .. '":'
    if text:sub(1, #prefix) == prefix then out = text:sub(#prefix + 1, -2) else out = "[]" end
  elseif forced_body ~= nil then
    out = forced_body
  elseif content_type ~= nil and content_type:sub(1, 16) == "application/json" then
    local message = grpc_message(text)
    if status == "429" and message ~= nil and message:find("Received message larger than max", 1, true) then
      -- A chunked body (no content-length) larger than a service accepts.
      forced_status = "413"
      out = '{"detail":"Request Entity Too Large"}'
    elseif message ~= nil then
      out = '{"detail":"' .. message .. '"}'
    elseif text:sub(1, 10) == '{"detail":' then
      out = text
    else
      out = '{"detail":' .. json_string(REASONS[status] or "Error") .. '}'
    end
  elseif status == "400" and text ~= "" and text ~= "Bad Request" then
    -- The transcoder rejected the request before any service saw it: a FastAPI validation error.
    -- (Envoy's own 400, for a method it does not take, says nothing or "Bad Request": a plain 400.)
    forced_status = "422"
    local request = handle:streamInfo():dynamicMetadata():get(META)
    out = fastapi_error(text, request and request["query"] or nil)
  else
    -- The transcoder found no route for the method and path: where some route takes the path
    -- with another method, FastAPI's 405 and its Allow. Only here, on the way out of a 404, so
    -- the requests that do have a route pay nothing for it.
    local unresolved = status == "404" and text:match("^Could not resolve ([^ ?]+)")
    allow = unresolved and allowed_methods(unresolved) or nil
    if allow ~= nil then forced_status = "405"; status = "405" end
    -- Envoy's own words (`upstream connect error or disconnect/reset before headers. reset
    -- reason: ...`, the transcoder's `Could not resolve ...`) name the gateway's insides: the
    -- status says what a client needs.
    out = '{"detail":' .. json_string(REASONS[status] or "Error") .. '}'
  end
  body:setBytes(out)
  headers = handle:headers()
  if forced_status ~= nil then headers:replace(":status", forced_status) end
  if allow ~= nil then headers:replace("allow", allow) end
  headers:remove("x-http-status")
  headers:remove("x-http-body")
  headers:replace("content-type", "application/json")
  headers:replace("content-length", tostring(#out))
end

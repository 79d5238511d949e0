-- The registry's invocation verdicts, reused for a moment by each Envoy worker.
--
-- Runs on the chute route only, right before the registry's ext_authz filter
-- (chutes.invocation_authz). Asking the registry costs a call sporadic requests pay in full
-- (two Python wake-ups: ~1.1 ms of the first SSE event, bench/README.md), so an allow is reused:
--   * request: a live verdict for (verified user id, Authorization, host) skips the check
--     (dynamic metadata chutes.verdicts.reused, which the ext_authz filter's
--     filter_enabled_metadata reads) and gives the instance the caller it allowed;
--   * response: an allow the registry marked reusable (x-chutes-verdict-reuse-ms, which reaches
--     here as ext_authz dynamic metadata) is kept for that long.
-- Denials are never reused. The registry bounds the reuse so a revoked key or an unshare still
-- bites within 5 s (services/registry/invocations.py). Credentials never go into dynamic
-- metadata (the access log carries it): a request is tied to its response by a number.
-- Lua globals live per worker, so each worker asks the registry once per key and second.

local MAX_ENTRIES = 10000

local verdicts = {}   -- key -> {expires_ms, user_id}
local verdict_count = 0
local pending = {}    -- request number -> key, until its response
local pending_count = 0
local sequence = 0

local function key_of(headers)
  return (headers:get("x-chutes-user-id") or "") .. "\n" .. (headers:get("authorization") or "")
    .. "\n" .. (headers:get(":authority") or "")
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local key = key_of(headers)
  local hit = verdicts[key]
  if hit ~= nil and hit[1] > handle:timestamp() then
    headers:replace("x-chutes-user-id", hit[2])
    handle:streamInfo():dynamicMetadata():set("chutes.verdicts", "reused", true)
    return
  end
  if pending_count >= MAX_ENTRIES then  -- responses that never came (reset streams)
    pending, pending_count = {}, 0
  end
  sequence = sequence + 1
  pending[sequence] = key
  pending_count = pending_count + 1
  handle:streamInfo():dynamicMetadata():set("chutes.verdicts", "request", sequence)
end

function envoy_on_response(handle)
  local metadata = handle:streamInfo():dynamicMetadata()
  local mine = metadata:get("chutes.verdicts")
  local number = mine and mine["request"]
  local key = number and pending[number]
  if key == nil then
    return
  end
  pending[number] = nil
  pending_count = pending_count - 1
  local verdict = metadata:get("envoy.filters.http.ext_authz")
  local reuse_ms = verdict and tonumber(verdict["x-chutes-verdict-reuse-ms"])
  local user_id = verdict and verdict["x-chutes-user-id"]
  if reuse_ms == nil or user_id == nil then
    return
  end
  if verdict_count >= MAX_ENTRIES then
    verdicts, verdict_count = {}, 0
  end
  if verdicts[key] == nil then
    verdict_count = verdict_count + 1
  end
  verdicts[key] = {handle:timestamp() + reuse_ms, user_id}
end

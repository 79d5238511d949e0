-- Token usage of a chute call, read from its response as it streams past, for the access log.
--
-- Runs on the chute route only. The platform counts tokens where the answer passes (the real
-- API reads them from the responses it relays); here that is Envoy. OpenAI-shaped answers end
-- with a `usage` object ({"prompt_tokens": N, "completion_tokens": M}: the last JSON body, or
-- the last SSE event of a stream with usage), and so does any cord that returns one. The body
-- is never buffered or changed: bodyChunks() hands over each chunk as it goes, and only the
-- last few KiB are kept to look for the final usage.
-- Results go to dynamic metadata chutes.usage (input_tokens, output_tokens, first_token_ms:
-- from the request to the first body chunk, tokens_per_second: output tokens over the time the
-- body took after its first chunk), which the access log carries to the metrics service as tags
-- (services/metrics/records.py).

local TAIL_BYTES = 4096

function envoy_on_request(handle)
  handle:streamInfo():dynamicMetadata():set("chutes.usage", "started_ms", handle:timestamp())
end

local function last_number(text, key)
  local found = nil
  for value in string.gmatch(text, '"' .. key .. '"%s*:%s*(%d+)') do
    found = value
  end
  return found and tonumber(found)
end

function envoy_on_response(handle)
  -- JSON, SSE, or none at all: the SDK's streaming cords name no type (as the real SDK's).
  local content_type = handle:headers():get("content-type")
  if content_type ~= nil and not (string.find(content_type, "json", 1, true)
      or string.find(content_type, "event-stream", 1, true)) then
    return
  end
  local tail, first_ms, last_ms = "", nil, nil
  for chunk in handle:bodyChunks() do
    local length = chunk:length()
    if length > 0 then
      last_ms = handle:timestamp()
      first_ms = first_ms or last_ms
      local keep = math.min(length, TAIL_BYTES)
      tail = string.sub(tail .. chunk:getBytes(length - keep, keep), -TAIL_BYTES)
    end
  end
  local usage = string.find(tail, '"usage"', 1, true)
  if usage == nil then
    return
  end
  local text = string.sub(tail, usage)
  local input_tokens = last_number(text, "prompt_tokens")
  local output_tokens = last_number(text, "completion_tokens")
  if input_tokens == nil and output_tokens == nil then
    return
  end
  local metadata = handle:streamInfo():dynamicMetadata()
  local started = metadata:get("chutes.usage")
  started = started and started["started_ms"]
  if input_tokens ~= nil then
    metadata:set("chutes.usage", "input_tokens", tostring(input_tokens))
  end
  if output_tokens ~= nil then
    metadata:set("chutes.usage", "output_tokens", tostring(output_tokens))
    if last_ms > first_ms then
      metadata:set("chutes.usage", "tokens_per_second", tostring(output_tokens * 1000 / (last_ms - first_ms)))
    end
  end
  if started ~= nil then
    metadata:set("chutes.usage", "first_token_ms", tostring(first_ms - started))
  end
end

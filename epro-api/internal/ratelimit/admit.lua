-- admit: the token buckets of one request, all or nothing, and the keys the caller reads, in one call.
-- The bucket arithmetic and key layout are go-zero's TokenLimiter's (core/limit/tokenscript.lua, v1.9.2):
-- a bucket is {name}.tokens and {name}.ts, refilled rate tokens per whole second up to capacity, both keys
-- living twice the time the bucket takes to fill. What differs: every bucket of the request is judged
-- before any is taken from, and tokens are taken from all of them or from none.
--
-- KEYS[2i-1], KEYS[2i]: bucket i's tokens and timestamp keys, i = 1..ARGV[2]; the KEYS after them are read.
-- ARGV[1]: now, Unix seconds; ARGV[2]: the number of buckets; then per bucket i: rate, capacity, requested
-- at ARGV[3i], ARGV[3i+1], ARGV[3i+2].
-- Returns { refused, value... }: refused is 0 when every bucket had enough tokens (they are taken), else the
-- number of the first bucket that had too few (none is taken); then each read key's value, "" when absent.
local now = tonumber(ARGV[1])
local buckets = tonumber(ARGV[2])
local filled = {}
local refused = 0
for i = 1, buckets do
    local rate = tonumber(ARGV[3 * i])
    local capacity = tonumber(ARGV[3 * i + 1])
    local requested = tonumber(ARGV[3 * i + 2])
    local last_tokens = tonumber(redis.call("get", KEYS[2 * i - 1]))
    if last_tokens == nil then
        last_tokens = capacity
    end
    local last_refreshed = tonumber(redis.call("get", KEYS[2 * i]))
    if last_refreshed == nil then
        last_refreshed = 0
    end
    local delta = math.max(0, now - last_refreshed)
    filled[i] = math.min(capacity, last_tokens + (delta * rate))
    if refused == 0 and filled[i] < requested then
        refused = i
    end
end
for i = 1, buckets do
    local rate = tonumber(ARGV[3 * i])
    local capacity = tonumber(ARGV[3 * i + 1])
    local new_tokens = filled[i]
    if refused == 0 then
        new_tokens = new_tokens - tonumber(ARGV[3 * i + 2])
    end
    -- go-zero's ttl; at least 1 s, as SETEX refuses 0 (a bucket that fills in under half a second).
    local ttl = math.max(1, math.floor(capacity / rate * 2))
    redis.call("setex", KEYS[2 * i - 1], ttl, new_tokens)
    redis.call("setex", KEYS[2 * i], ttl, now)
end
local out = { refused }
for k = 2 * buckets + 1, #KEYS do
    out[#out + 1] = redis.call("get", KEYS[k]) or ""
end
return out

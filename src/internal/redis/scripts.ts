/**
 * The multi-step operations that must be atomic, as Lua scripts run with `EVALSHA`. Each runs as
 * one step on the server, so no reader ever sees half a move. The command connection loads them
 * all first thing on every (re)connect (`all`, connection.ts), so commands sent after it never
 * meet `NOSCRIPT`: a call that failed on it and was repeated after loading would run after calls
 * sent later, and the chunks of one `publishAll` would be stored out of order. Should a script
 * still be missing (an operator's `SCRIPT FLUSH`), `run` loads it and repeats the call.
 *
 * Stream entry fields (see codec.ts): `a` attempt, `r` redelivered, `l` last error, `k` topic,
 * `d` dead reason, `g` group, `x` deadline. Delayed entries are sorted-set members: a 16-byte
 * nonce (so equal messages stay distinct) followed by the entry's fields packed with `cmsgpack`.
 */
import { createHash } from "node:crypto"
import type { Connection } from "./connection.js"

/** @internal */
export interface Script {
  readonly lua: string
  readonly sha: string
}

const script = (lua: string): Script => ({ lua, sha: createHash("sha1").update(lua).digest("hex") })

/** Creates the group on the topic stream (from `ARGV[3]`: `$` new, `0` recovery) and its private stream; registers it. */
export const declare = script(`
local function create(key, group, from)
  local ok = redis.pcall('XGROUP', 'CREATE', key, group, from, 'MKSTREAM')
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'BUSYGROUP') then return ok end
  return nil
end
local failed = create(KEYS[1], ARGV[1], ARGV[3]) or create(KEYS[2], ARGV[1], '0')
if failed then return failed end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[2])
return 1
`)

/** XADD only when a group is bound to the topic; nil = unroutable. */
export const publish = script(`
if redis.call('SCARD', KEYS[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV))
`)

/**
 * Several messages for one topic in one call (publishAll): only when a group is bound (nil =
 * unroutable); `ARGV[1]` holds the messages' fields packed as one MessagePack array of arrays
 * (pack.ts). One command per chunk instead of one per message: the client's per-command cost,
 * not Redis, bounds publishing.
 */
export const publishMany = script(`
if redis.call('SCARD', KEYS[1]) == 0 then return false end
local messages = cmsgpack.unpack(ARGV[1])
for i = 1, #messages do
  redis.call('XADD', KEYS[2], '*', unpack(messages[i]))
end
return #messages
`)

/** A delayed publish: one delayed entry per bound group (`ARGV[1]` key prefix of delayed sets, `ARGV[2]` due, `ARGV[3]` nonce). */
export const publishDelayed = script(`
local groups = redis.call('SMEMBERS', KEYS[1])
if #groups == 0 then return 0 end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local member = ARGV[3] .. cmsgpack.pack(fields)
for _, g in ipairs(groups) do redis.call('ZADD', ARGV[1] .. g, ARGV[2], member) end
return #groups
`)

/**
 * Lua: appends to `out` the deadline `x` (epoch ms: `from` plus the expiration `e`) of an entry
 * whose fields `f` have an expiration and no deadline yet.
 */
const deadline = `
local function deadline(f, out, from)
  local x, ttl
  for i = 1, #f, 2 do
    if f[i] == 'x' then x = f[i + 1] elseif f[i] == 'e' then ttl = f[i + 1] end
  end
  if x == nil and ttl ~= nil then
    out[#out + 1] = 'x'
    out[#out + 1] = string.format('%.0f', from + tonumber(ttl))
  end
end`

/**
 * Moves up to ARGV[2] entries due at ARGV[1] from the delayed set to the group stream; returns
 * {moved, next due or false}. An entry with an expiration `e` and no deadline yet gets `x`, its
 * due time plus `e`: its expiration counts from the end of its delay even when no consumer ran
 * the mover then.
 */
export const move = script(`${deadline}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do
  local m = due[i]
  local f = cmsgpack.unpack(string.sub(m, 17))
  deadline(f, f, tonumber(due[i + 1]))
  redis.call('XADD', KEYS[2], '*', unpack(f))
  redis.call('ZREM', KEYS[1], m)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due / 2, nxt[2] or false}
`)

/**
 * Settles a delivery other than by a plain ack: acks it and, only if it was still pending (not
 * settled by a consumer that claimed it meanwhile), writes its copy: `retry` to the group stream
 * (or its delayed set when `ARGV[6]` > 0) with attempt `ARGV[4]` and last error `ARGV[5]`;
 * `requeue` to the group stream flagged redelivered, attempt and last error kept; `dead` to the
 * dead-letter stream with the reason; `stalled` likewise, keeping the entry's attempt (a delivery
 * handed out too often without being settled). `ARGV[8]` empty keeps the entry's topic. Every
 * copy carries its message's deadline as `x` (epoch ms): the first entry's id time plus its
 * expiration `e`, so no retry outlives the message. Returns 1 moved, 0 already settled, -1 entry gone.
 */
export const settle = script(`${deadline}
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 0 then return -1 end
local f = e[1][2]
local mode = ARGV[3]
local kept = mode == 'requeue' or mode == 'stalled'
local out = {}
for i = 1, #f, 2 do
  local n = f[i]
  if n ~= 'r' and n ~= 'd' and n ~= 'g' and (n ~= 'k' or ARGV[8] == '') and ((n ~= 'a' and n ~= 'l') or kept) then
    out[#out + 1] = n
    out[#out + 1] = f[i + 1]
  end
end
if ARGV[8] ~= '' then
  out[#out + 1] = 'k'
  out[#out + 1] = ARGV[8]
end
deadline(f, out, tonumber(string.match(ARGV[2], '^%d+')))
if ARGV[4] ~= '1' and not kept then
  out[#out + 1] = 'a'
  out[#out + 1] = ARGV[4]
end
if mode == 'dead' or mode == 'stalled' then
  out[#out + 1] = 'd'
  out[#out + 1] = ARGV[5]
  out[#out + 1] = 'g'
  out[#out + 1] = ARGV[1]
  redis.call('XADD', KEYS[4], '*', unpack(out))
elseif mode == 'requeue' then
  out[#out + 1] = 'r'
  out[#out + 1] = '1'
  redis.call('XADD', KEYS[2], '*', unpack(out))
else
  out[#out + 1] = 'l'
  out[#out + 1] = ARGV[5]
  if tonumber(ARGV[6]) > 0 then
    redis.call('ZADD', KEYS[3], ARGV[6], ARGV[7] .. cmsgpack.pack(out))
  else
    redis.call('XADD', KEYS[2], '*', unpack(out))
  end
end
return 1
`)

/**
 * Trims what every group has acknowledged: entries older than each group's oldest pending entry
 * and not after its last delivered one. A stream without groups is left alone.
 */
export const trim = script(`
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local bestMs, bestSeq
local function split(id)
  local d = string.find(id, '-')
  return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1))
end
for _, g in ipairs(groups) do
  local name, pending, last
  for i = 1, #g, 2 do
    local k = g[i]
    if k == 'name' then name = g[i + 1] elseif k == 'pending' then pending = g[i + 1] elseif k == 'last-delivered-id' then last = g[i + 1] end
  end
  local ms, seq
  if pending > 0 then
    ms, seq = split(redis.call('XPENDING', KEYS[1], name)[2])
  else
    ms, seq = split(last)
    seq = seq + 1
  end
  if bestMs == nil or ms < bestMs or (ms == bestMs and seq < bestSeq) then bestMs, bestSeq = ms, seq end
end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f-%.0f', bestMs, bestSeq))
`)

/**
 * Moves up to ARGV[2] dead letters (ids up to ARGV[1]) back to the group stream from attempt 1,
 * their expiration started again (`x` dropped).
 */
export const redrive = script(`
local e = redis.call('XRANGE', KEYS[1], '-', ARGV[1], 'COUNT', ARGV[2])
for _, x in ipairs(e) do
  local f = x[2]
  local out = {}
  for i = 1, #f, 2 do
    local n = f[i]
    if n ~= 'a' and n ~= 'r' and n ~= 'l' and n ~= 'd' and n ~= 'g' and n ~= 'x' then
      out[#out + 1] = n
      out[#out + 1] = f[i + 1]
    end
  end
  redis.call('XADD', KEYS[2], '*', unpack(out))
  redis.call('XDEL', KEYS[1], x[1])
end
return #e
`)

/**
 * Resets the idle time of deliveries still owned by consumer ARGV[2] (a heartbeat for slow
 * handlers), never taking over one another consumer has claimed.
 */
export const touch = script(`
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
`)

/** Every script, loaded on each (re)connect of the command connection. @internal */
export const all: ReadonlyArray<Script> = [
  declare,
  publish,
  publishMany,
  publishDelayed,
  move,
  settle,
  trim,
  redrive,
  touch
]

const isNoScript = (error: unknown): boolean => error instanceof Error && error.message.startsWith("NOSCRIPT")

/** `EVALSHA`, loading the script on `NOSCRIPT`. @internal */
export const run = async <T>(
  connection: Connection,
  s: Script,
  keys: ReadonlyArray<string>,
  args: ReadonlyArray<string | Buffer>
): Promise<T> => {
  const command = ["EVALSHA", s.sha, String(keys.length), ...keys, ...args]
  try {
    return await connection.send<T>(command)
  } catch (error) {
    if (!isNoScript(error)) throw error
    await connection.send(["SCRIPT", "LOAD", s.lua])
    return await connection.send<T>(command)
  }
}

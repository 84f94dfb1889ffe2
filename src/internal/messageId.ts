import { randomFillSync } from "node:crypto"

/**
 * Message ids are UUIDv7 (RFC 9562): a UUID like any other to users, whose first 48 bits are the
 * creation time in milliseconds. The RabbitMQ transport then leaves out AMQP's `timestamp`
 * (whole seconds) when the id already tells the publish time: measured here, a UUID message id
 * plus a timestamp costs RabbitMQ ~12 % of its confirmed publish rate over either alone, and
 * consumers get the publish time to the millisecond.
 */

// Random bytes drawn in blocks: one `randomFillSync` per 256 ids.
const pool = Buffer.alloc(16 * 256)
let offset = pool.length

/**
 * The id is written as ASCII into one buffer and read out as one string. Joining hex pieces with
 * `+` or a template instead makes V8 keep a tree of ~10 cons-string nodes per id (measured: 424
 * bytes per id instead of 64) until something flattens it; `publishAll` holds every id of a batch
 * until its confirms arrive, so those trees were copied by each young-generation GC.
 */
const text = Buffer.from("00000000-0000-7000-8000-000000000000", "latin1")
const digits = Buffer.from("0123456789abcdef", "latin1")

const writeByte = (at: number, byte: number): void => {
  text[at] = digits[(byte >> 4) & 15] ?? 48
  text[at + 1] = digits[byte & 15] ?? 48
}

const random = (i: number): number => pool[offset + i] ?? 0

// The time part of the last id: a batch made in one millisecond shares it.
let lastMillis = Number.NaN
// The last id made, as the very string returned, and the time its text tells (which is `now`
// for any whole, non-negative `now`): a publisher asks `millisOf` of the id it just made, and
// comparing one string with itself is a pointer compare.
let lastMade = ""
let lastMadeMillis = Number.NaN

/** The millisecond an id's first 13 characters (`xxxxxxxx-xxxx`, hex) tell. */
const timeOf = (id: string): number => parseInt(id.slice(0, 8), 16) * 0x10000 + parseInt(id.slice(9, 13), 16)

/** A new UUIDv7 for `now` (epoch ms). @internal */
export const make = (now: number): string => {
  if (offset >= pool.length) {
    randomFillSync(pool)
    offset = 0
  }
  if (now !== lastMillis) {
    // 48 time bits as two 24-bit halves (bitwise operators work on 32 bits).
    const high = Math.floor(now / 0x1000000)
    const low = now % 0x1000000
    writeByte(0, high >>> 16)
    writeByte(2, high >>> 8)
    writeByte(4, high)
    writeByte(6, low >>> 16)
    writeByte(9, low >>> 8)
    writeByte(11, low)
    lastMillis = now
    lastMadeMillis = timeOf(text.toString("latin1", 0, 13))
  }
  writeByte(14, 0x70 | (random(6) & 0x0f))
  writeByte(16, random(7))
  writeByte(19, 0x80 | (random(8) & 0x3f))
  writeByte(21, random(9))
  for (let i = 10; i < 16; i++) writeByte(24 + 2 * (i - 10), random(i))
  offset += 16
  lastMade = text.toString("latin1")
  return lastMade
}

/** Per ASCII code: 1 a hex digit, 2 a dash, 0 anything else. */
const kinds = new Uint8Array(128)
for (const digit of "0123456789abcdefABCDEF") kinds[digit.charCodeAt(0)] = 1
kinds[45] = 2

/**
 * `xxxxxxxx-xxxx-7xxx-[89ab]xxx-xxxxxxxxxxxx` from position `from` on (what comes before is known
 * to match), checked by char code: a regex cost ~0.5 µs per publish.
 */
const isUuidV7 = (id: string, from: number): boolean => {
  if (id.length !== 36) return false
  for (let i = from; i < 36; i++) {
    const code = id.charCodeAt(i)
    const kind = code < 128 ? kinds[code] : 0
    if (kind !== (i === 8 || i === 13 || i === 18 || i === 23 ? 2 : 1)) return false
  }
  const variant = id.charCodeAt(19) | 0x20
  return id.charCodeAt(14) === 55 && (variant === 56 || variant === 57 || variant === 97 || variant === 98)
}

// The time part (`xxxxxxxx-xxxx`) of the last id read and its millisecond: ids made in one
// millisecond share it, so most answers skip the hex parsing (publishers ask once per message,
// consumers once per delivery).
let prefixMillis = Number.NaN
let prefix = ""

/** The creation time (epoch ms) of a UUIDv7, or undefined for any other id. @internal */
export const millisOf = (id: string): number | undefined => {
  if (id === lastMade) return lastMadeMillis
  // The cached time part was checked when it was cached: only the rest needs checking.
  if (prefix !== "" && id.startsWith(prefix)) return isUuidV7(id, 13) ? prefixMillis : undefined
  if (!isUuidV7(id, 0)) return undefined
  // The id's own time part, upper-case hex included: it maps to this time and no other.
  prefixMillis = timeOf(id)
  prefix = id.slice(0, 13)
  return prefixMillis
}

/**
 * Whether a message needs its publish time written apart from its id: it has one, and `id` is
 * not a UUIDv7 of that millisecond (which tells it). The NATS and Redis codecs share this rule.
 *
 * @internal
 */
export const needsPublishedAt = (id: string, publishedAt: number | undefined): publishedAt is number =>
  publishedAt !== undefined && millisOf(id) !== publishedAt

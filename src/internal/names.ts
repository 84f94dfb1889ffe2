import * as Either from "effect/Either"
import { InvalidName } from "../BrokerError.js"
import * as wire from "./wire.js"

/**
 * Name checks done before anything reaches amqplib: it throws synchronously on long names and
 * big header tables, RabbitMQ closes the channel on `amq.*`, and an empty queue name silently
 * declares a server-named queue.
 */

const maxRoutingKeyBytes = 255
/** Group names get suffixes (`.retry.<ms>`, `.dlq`) and a prefix; keep room under 255 bytes. */
const maxGroupBytes = 200
/** amqplib encodes headers into a 64 KiB field table; leave room for its framing. */
export const maxHeaderBytes = 32 * 1024

const byteLength = (s: string): number => Buffer.byteLength(s, "utf8")

const invalid = (kind: InvalidName["kind"], value: string, reason: string) =>
  Either.left(new InvalidName({ kind, value, reason }))

const checkWords = (kind: "topic" | "pattern", value: string, allowWildcards: boolean) => {
  if (value.length === 0) return invalid(kind, value, "must not be empty")
  if (byteLength(value) > maxRoutingKeyBytes) return invalid(kind, value, `longer than ${maxRoutingKeyBytes} bytes`)
  for (const word of value.split(".")) {
    if (word.length === 0) return invalid(kind, value, "has an empty word (leading, trailing or double dot)")
    if (word === "*" || word === "#") {
      if (!allowWildcards) return invalid(kind, value, "wildcards `*` and `#` belong in Broker.pattern, not a topic")
    } else if (word.includes("*") || word.includes("#")) {
      return invalid(kind, value, "`*` and `#` must stand alone as a word")
    }
  }
  return Either.void
}

/** @internal */
export const validateTopic = (name: string): Either.Either<void, InvalidName> => checkWords("topic", name, false)

/** @internal */
export const validatePattern = (name: string): Either.Either<void, InvalidName> => checkWords("pattern", name, true)

/** Whether a validated pattern has a `*` or `#` word. @internal */
export const hasWildcard = (pattern: string): boolean => pattern.split(".").some((word) => word === "*" || word === "#")

/** @internal */
export const validateGroup = (name: string): Either.Either<void, InvalidName> => {
  if (name.length === 0) return invalid("group", name, "must not be empty")
  if (byteLength(name) > maxGroupBytes) return invalid("group", name, `longer than ${maxGroupBytes} bytes`)
  if (name.startsWith("amq.")) return invalid("group", name, "the `amq.` prefix is reserved by RabbitMQ")
  if (!/^[A-Za-z0-9._:-]+$/.test(name)) return invalid("group", name, "use letters, digits and . _ : -")
  return Either.void
}

/** Names transports write themselves: a library's metadata may not set them. */
const transportOwned: ReadonlySet<string> = new Set([
  wire.headers.attempt,
  wire.headers.deadReason,
  wire.headers.lastError,
  wire.headers.group,
  "x-eb-routing-key",
  "x-eb-published-at",
  "x-eb-delay"
])

const checkTable = (
  table: Readonly<Record<string, string>>,
  nameRule: (key: string) => string | undefined
): Either.Either<void, InvalidName> => {
  let bytes = 0
  for (const key in table) {
    const value = table[key]
    if (typeof value !== "string") return invalid("header", key, "header values must be strings")
    if (key.length === 0 || byteLength(key) > 128) return invalid("header", key, "names must be 1-128 bytes")
    const refused = nameRule(key)
    if (refused !== undefined) return invalid("header", key, refused)
    // PostgreSQL's jsonb cannot store U+0000: one rule for every path (publish, outbox, tasks).
    if (value.includes("\u0000") || key.includes("\u0000")) {
      return invalid("header", key, "names and values must not contain U+0000")
    }
    bytes += byteLength(key) + byteLength(value) + 8
  }
  if (bytes > maxHeaderBytes) return invalid("header", "(all)", `headers take ${bytes} bytes, over ${maxHeaderBytes}`)
  return Either.void
}

const userHeaderRule = (key: string): string | undefined =>
  wire.isReservedHeader(key)
    ? "reserved for effect-background and the transports (`x-eb-*`, `traceparent`, `tracestate`, `x-death`)"
    : undefined

const metadataRule = (key: string): string | undefined =>
  !key.startsWith(wire.reservedPrefix)
    ? "library metadata names start with `x-eb-`"
    : transportOwned.has(key)
    ? "written by the transport itself"
    : undefined

/** The caller's headers. @internal */
export const validateHeaders = (headers: Readonly<Record<string, string>>): Either.Either<void, InvalidName> =>
  checkTable(headers, userHeaderRule)

/** Library metadata (`PublishOptions.metadata`). @internal */
export const validateMetadata = (metadata: Readonly<Record<string, string>>): Either.Either<void, InvalidName> =>
  checkTable(metadata, metadataRule)

/**
 * AMQP topic-exchange matching: `*` is exactly one word, `#` zero or more words. Dynamic
 * programming over (pattern word, key word), so many `#` cost O(p·k), not exponential time.
 *
 * @internal
 */
export const matchesPattern = (pattern: string, routingKey: string): boolean => {
  if (pattern === routingKey) return true
  const p = pattern.split(".")
  const k = routingKey.split(".")
  // reachable[j]: the pattern words seen so far can match exactly the first j key words
  let reachable: Array<boolean> = Array.from({ length: k.length + 1 }, (_, j) => j === 0)
  for (const word of p) {
    const next: Array<boolean> = new Array(k.length + 1).fill(false)
    if (word === "#") {
      let any = false
      for (let j = 0; j <= k.length; j++) {
        any = any || reachable[j] === true
        next[j] = any
      }
    } else {
      for (let j = 1; j <= k.length; j++) {
        next[j] = reachable[j - 1] === true && (word === "*" || word === k[j - 1])
      }
    }
    reachable = next
  }
  return reachable[k.length] === true
}

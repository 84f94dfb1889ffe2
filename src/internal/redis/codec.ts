/**
 * A message as one stream entry. Fields: `b` body (bytes), `i` message id, `t` publish time
 * (epoch ms; left out when `i` is a UUIDv7 of that millisecond, which tells it: one field less for
 * Redis to store and for every reader to parse; without either, the time the entry entered its
 * stream), `c` correlation id, `e` expiration (ms, counted from the entry's id time, i.e. from
 * when it entered the stream it is read from; copies carry the message's deadline instead, `x`,
 * epoch ms), `h:<name>` a caller header, `m:<name>` library
 * metadata (kept apart, so no header can collide with metadata), and the transport's bookkeeping
 * set by the scripts: `k` topic (entries of a group stream), `a` attempt (absent: 1), `r` redelivered,
 * `l` last error, `d` dead reason, `g` group.
 */
import type * as BrokerTransport from "../../BrokerTransport.js"
import { toBuffer } from "../broker.js"
import * as MessageId from "../messageId.js"
import * as wire from "../wire.js"

/**
 * Writes the entry's fields into `out` from index `at` and returns the index after them. Written
 * by index, so an array reused for every message keeps its capacity (truncating it with
 * `length = 0` would drop its storage each time).
 *
 * @internal
 */
export const writeFields = (
  message: BrokerTransport.TransportMessage,
  out: Array<string | Buffer>,
  at: number
): number => {
  let i = at
  out[i++] = "b"
  out[i++] = toBuffer(message.body)
  out[i++] = "i"
  out[i++] = message.messageId
  const publishedAt = message.publishedAt
  if (MessageId.needsPublishedAt(message.messageId, publishedAt)) {
    out[i++] = "t"
    out[i++] = String(publishedAt)
  }
  if (message.correlationId !== undefined) {
    out[i++] = "c"
    out[i++] = message.correlationId
  }
  if (message.expiration !== undefined) {
    out[i++] = "e"
    out[i++] = String(message.expiration)
  }
  for (const name in message.headers) {
    const value = message.headers[name]
    if (value === undefined) continue
    out[i++] = `h:${name}`
    out[i++] = value
  }
  for (const name in message.metadata) {
    const value = message.metadata[name]
    if (value === undefined) continue
    out[i++] = `m:${name}`
    out[i++] = value
  }
  return i
}

/** The entry's fields, appended to `head` (a command's first arguments). @internal */
export const toFields = (
  message: BrokerTransport.TransportMessage,
  head: Array<string | Buffer> = []
): Array<string | Buffer> => {
  writeFields(message, head, head.length)
  return head
}

/** A stream entry as read (`XREADGROUP`, `XCLAIM`, `XRANGE`). @internal */
export interface Entry {
  readonly id: string
  readonly message: BrokerTransport.TransportMessage
  readonly attempt: number
  readonly redelivered: boolean
  /** Epoch ms after which the entry is dropped: `x`, or its id time plus `e`. */
  readonly expiresAt: number | undefined
  readonly deadReason: string | undefined
}

/** Epoch ms of a stream id (`<ms>-<seq>`). @internal */
export const idMillis = (id: string): number => {
  const dash = id.indexOf("-")
  return Number(dash < 0 ? id : id.slice(0, dash))
}

/** One-letter field names by byte, decoded once. */
const letters: ReadonlyArray<string> = Array.from({ length: 128 }, (_, code) => String.fromCharCode(code))

const text = (value: unknown): string | undefined =>
  Buffer.isBuffer(value) ? value.toString("utf8") : typeof value === "string" ? value : undefined

/**
 * Decodes one `[id, [field, value, …]]` reply; undefined when it is not an entry (a deleted
 * entry reads as `[id, nil]`).
 *
 * @internal
 */
export const fromReply = (raw: unknown, topic: string): Entry | undefined => {
  if (!Array.isArray(raw) || raw.length < 2) return undefined
  const id = text(raw[0])
  const fields: unknown = raw[1]
  if (id === undefined || !Array.isArray(fields)) return undefined
  let body: Uint8Array = new Uint8Array(0)
  let messageId = ""
  let publishedAt: number | undefined
  let correlationId: string | undefined
  let expiration: number | undefined
  let deadline: number | undefined
  let routingKey = topic
  let attempt = 1
  let redelivered = false
  let deadReason: string | undefined
  let headers: Record<string, string> | undefined
  let metadata: Record<string, string> | undefined
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const raw = fields[i]
    // One-letter names (all but headers and metadata) without decoding them to a string.
    const name = Buffer.isBuffer(raw) && raw.length === 1 ? letters[raw[0] ?? 0] ?? text(raw) : text(raw)
    const value: unknown = fields[i + 1]
    if (name === undefined) continue
    if (name === "b") {
      if (Buffer.isBuffer(value)) body = value
      else if (typeof value === "string") body = Buffer.from(value)
      continue
    }
    const string = text(value) ?? ""
    switch (name) {
      case "i":
        messageId = string
        break
      case "t":
        publishedAt = Number(string)
        break
      case "c":
        correlationId = string
        break
      case "e":
        expiration = Number(string)
        break
      case "x": {
        // A deadline that does not parse is ignored (a NaN would read as past: dropped).
        const at = Number(string)
        if (Number.isFinite(at)) deadline = at
        break
      }
      case "k":
        routingKey = string
        break
      case "a":
        attempt = Number(string)
        break
      case "r":
        redelivered = true
        break
      case "d":
        deadReason = string
        break
      case "l":
        ;(metadata ??= {})[wire.headers.lastError] = string
        break
      default:
        if (name.startsWith("h:")) (headers ??= {})[name.slice(2)] = string
        else if (name.startsWith("m:")) (metadata ??= {})[name.slice(2)] = string
    }
  }
  publishedAt ??= MessageId.millisOf(messageId) ?? idMillis(id)
  return {
    id,
    attempt: Number.isInteger(attempt) && attempt >= 1 ? attempt : 1,
    redelivered,
    expiresAt: deadline ?? (expiration === undefined ? undefined : idMillis(id) + expiration),
    deadReason,
    message: {
      routingKey,
      body,
      headers: headers ?? wire.noHeaders,
      metadata: metadata ?? wire.noHeaders,
      messageId,
      correlationId,
      publishedAt,
      priority: undefined,
      expiration,
      delay: undefined,
      persistent: true
    }
  }
}

/** Entries of an `XREADGROUP` / `XCLAIM` / `XRANGE` entry list. @internal */
export const entries = (raw: unknown, topic: string): Array<Entry> => {
  const out: Array<Entry> = []
  if (!Array.isArray(raw)) return out
  for (const item of raw) {
    const entry = fromReply(item, topic)
    if (entry !== undefined) out.push(entry)
  }
  return out
}

/** Ids of deleted entries in an entry list (`[id, nil]`). @internal */
export const deletedIds = (raw: unknown): Array<string> => {
  const out: Array<string> = []
  if (!Array.isArray(raw)) return out
  for (const item of raw) {
    if (Array.isArray(item) && item.length >= 2 && item[1] === null) {
      const id = text(item[0])
      if (id !== undefined) out.push(id)
    }
  }
  return out
}

/** `XREADGROUP` reply (RESP2): `[[stream, entries], …]` or null. @internal */
export const streams = (raw: unknown): Array<{ readonly key: string; readonly entries: unknown }> => {
  const out: Array<{ readonly key: string; readonly entries: unknown }> = []
  if (!Array.isArray(raw)) return out
  for (const item of raw) {
    if (Array.isArray(item) && item.length >= 2) {
      const key = text(item[0])
      if (key !== undefined) out.push({ key, entries: item[1] })
    }
  }
  return out
}

/** @internal */
export const asText = text

/**
 * Wire-format facts shared by the typed front, the transports and the AsyncAPI document: header
 * names the library owns, how user headers and library metadata share one header table, and the
 * packed content type. A non-Node client sees exactly these.
 */

import type * as Broker from "../Broker.js"

/** @internal */
export const headers = {
  /** 1 on first delivery; set by a transport that carries out a Retry by republishing. */
  attempt: "x-eb-attempt",
  /** W3C trace context of the producer's span. */
  traceparent: "traceparent",
  tracestate: "tracestate",
  /** Why a message was dead-lettered. */
  deadReason: "x-eb-dead-reason",
  /** The failure that caused the last retry. */
  lastError: "x-eb-last-error",
  /** The group a dead letter belongs to. */
  group: "x-eb-group",
  /** A task's deduplication key (TaskQueue). */
  taskKey: "x-eb-task-key"
} as const

/** @internal */
export const reservedPrefix = "x-eb-"

/**
 * Library metadata and transport bookkeeping: `x-eb-*`, W3C trace context, and RabbitMQ's
 * dead-lettering headers.
 *
 * @internal
 */
export const isReservedHeader = (name: string): boolean =>
  name.startsWith(reservedPrefix) || name === headers.traceparent || name === headers.tracestate || isDeathHeader(name)

/** RabbitMQ's dead-lettering bookkeeping headers (not strings; never library metadata). @internal */
export const isDeathHeader = (name: string): boolean =>
  name === "x-death" || name.startsWith("x-first-death") || name.startsWith("x-last-death")

/** @internal */
export const noHeaders: Readonly<Record<string, string>> = Object.freeze({})

/** @internal */
export const noTypedHeaders: Readonly<Record<string, Broker.HeaderValue>> = Object.freeze({})

/** Whether a header table has an entry, without listing its keys. @internal */
export const hasHeaders = (table: Readonly<Record<string, string>>): boolean => {
  for (const _ in table) return true
  return false
}

/** @internal */
export const splitHeaders = (
  table: Readonly<Record<string, string>>
): { readonly headers: Readonly<Record<string, string>>; readonly metadata: Readonly<Record<string, string>> } => {
  let user: Record<string, string> | undefined
  let metadata: Record<string, string> | undefined
  for (const key in table) {
    const value = table[key]
    if (value === undefined || isDeathHeader(key)) continue
    if (isReservedHeader(key)) (metadata ??= {})[key] = value
    else (user ??= {})[key] = value
  }
  return { headers: user ?? noHeaders, metadata: metadata ?? noHeaders }
}

/** Both tables as one, for transports with a single header table. @internal */
export const mergeHeaders = (
  user: Readonly<Record<string, string>>,
  metadata: Readonly<Record<string, string>>
): Readonly<
  Record<string, string>
> => (hasHeaders(metadata) ? (hasHeaders(user) ? { ...user, ...metadata } : metadata) : user)

/**
 * Content type of a packed message: several messages for one routing key in one wire message
 * (`PublishAllOptions.pack`). Body: u32 count, then per message u32 length + JSON meta
 * (`i` id, `t` publish time, `h` headers, `m` metadata, `c` correlation id), u32 length + body.
 *
 * @internal
 */
export const packedContentType = "application/vnd.effect-background.packed"

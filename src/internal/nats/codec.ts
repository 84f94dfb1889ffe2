/**
 * A `TransportMessage` on a NATS message and back. NATS has one header table, so the caller's
 * headers and the library's metadata share it (metadata names are reserved) and are split again
 * on delivery, as on AMQP. The id travels in `Nats-Msg-Id`, which JetStream's duplicate window
 * deduplicates on; the other properties in `x-eb-*` headers, present only when set.
 */
import type { JsMsg } from "@nats-io/jetstream"
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node"
import type * as BrokerTransport from "../../BrokerTransport.js"
import * as MessageId from "../messageId.js"
import * as wire from "../wire.js"

/** @internal */
export const header = {
  msgId: "Nats-Msg-Id",
  /** The caller's id when `Nats-Msg-Id` had to differ (a redriven copy). */
  messageId: "x-eb-message-id",
  correlationId: "x-eb-correlation-id",
  /** Milliseconds from the moment the message entered the group's stream. */
  expiration: "x-eb-expiration",
  /** Epoch ms; only for a caller-chosen id (a UUIDv7 id tells its own time). */
  publishedAt: "x-eb-published-at",
  /** Epoch ms before which a delayed message stays in the delay stream. */
  notBefore: "x-eb-not-before",
  /** A redriven copy is for this group only; the others ack it unseen. */
  redriveGroup: "x-eb-redrive-group",
  /** The topic of a dead letter. */
  routingKey: "x-eb-routing-key",
  deadReason: wire.headers.deadReason,
  group: wire.headers.group,
  attempt: wire.headers.attempt
} as const

const transportOnly = new Set<string>([
  header.messageId,
  header.correlationId,
  header.expiration,
  header.publishedAt,
  header.notBefore,
  header.redriveGroup,
  header.routingKey,
  header.deadReason,
  header.group,
  header.attempt
])

/** The NATS headers of a message (always at least `Nats-Msg-Id`). @internal */
export const encode = (message: BrokerTransport.TransportMessage, notBefore?: number): MsgHdrs => {
  const h = natsHeaders()
  for (const key in message.headers) {
    const value = message.headers[key]
    if (value !== undefined) h.set(key, value)
  }
  for (const key in message.metadata) {
    const value = message.metadata[key]
    if (value !== undefined) h.set(key, value)
  }
  h.set(header.msgId, message.messageId)
  if (message.correlationId !== undefined) h.set(header.correlationId, message.correlationId)
  if (message.expiration !== undefined) h.set(header.expiration, String(message.expiration))
  const publishedAt = message.publishedAt
  if (MessageId.needsPublishedAt(message.messageId, publishedAt)) h.set(header.publishedAt, String(publishedAt))
  if (notBefore !== undefined) h.set(header.notBefore, String(notBefore))
  return h
}

/** Every header as one value per name (the last). @internal */
export const table = (h: MsgHdrs | undefined): Record<string, string> => {
  const out: Record<string, string> = {}
  if (h === undefined) return out
  for (const [key, values] of h) {
    const last = values[values.length - 1]
    if (last !== undefined) out[key] = last
  }
  return out
}

/** @internal */
export interface Decoded {
  readonly message: BrokerTransport.TransportMessage
  /** Epoch ms after which it must not be handled, if it expires. */
  readonly expiresAt: number | undefined
  readonly redriveGroup: string | undefined
}

const numberOf = (text: string | undefined): number | undefined => {
  if (text === undefined) return undefined
  const n = Number(text)
  return Number.isFinite(n) ? n : undefined
}

/** @internal */
export const decode = (msg: JsMsg): Decoded => {
  // One pass over the headers: the transport's own, the caller's, the library's.
  const raw: Record<string, string> = {}
  const user: Record<string, string> = {}
  const library: Record<string, string> = {}
  let hasUser = false
  let hasLibrary = false
  if (msg.headers !== undefined) {
    for (const [key, values] of msg.headers) {
      const value = values[values.length - 1]
      if (value === undefined) continue
      if (key.startsWith("Nats-") || transportOnly.has(key)) raw[key] = value
      else if (wire.isReservedHeader(key)) {
        library[key] = value
        hasLibrary = true
      } else {
        user[key] = value
        hasUser = true
      }
    }
  }
  const messageId = raw[header.messageId] ?? raw[header.msgId] ?? `no-id:${msg.info.stream}:${msg.seq}`
  // The stream's own time: when the message entered it (for a delayed one, when it was moved).
  const storedAt = Math.floor(msg.info.timestampNanos / 1_000_000)
  const expiration = numberOf(raw[header.expiration])
  return {
    message: {
      routingKey: msg.subject,
      body: msg.data,
      headers: hasUser ? user : wire.noHeaders,
      metadata: hasLibrary ? library : wire.noHeaders,
      messageId,
      correlationId: raw[header.correlationId],
      publishedAt: numberOf(raw[header.publishedAt]) ?? MessageId.millisOf(messageId) ?? storedAt,
      priority: undefined,
      expiration,
      delay: undefined,
      persistent: true
    },
    expiresAt: expiration === undefined ? undefined : storedAt + expiration,
    redriveGroup: raw[header.redriveGroup]
  }
}

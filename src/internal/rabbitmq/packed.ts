/**
 * Packed messages, part of the publisher and consumer kernels: several messages for one routing
 * key in a single AMQP message, unpacked by the consumer into one delivery each. RabbitMQ's cost
 * is per AMQP message (routing, the queue's log, fsync batching, the ack), so packing many tasks
 * into one lets a queue move that many times the messages; each message keeps its own id,
 * headers, metadata, publish time, retries and dead-lettering. Only consumers of this library
 * understand the format, hence opt-in on `publishAll`. Format: see `wire.packedContentType`.
 *
 * - `unpack(pack(ms))` gives back each message's id, body, headers and metadata (in one table,
 *   as a message of its own carries them), correlation id and publish time, in order.
 * - `unpack` never throws: a body that is not exactly a count above zero followed by that many
 *   well-formed entries gives `undefined`, and the consumer treats the carrier as one
 *   undecodable message.
 * - Each member is shaped as the AMQP message it would have been alone: the carrier's fields
 *   (delivery tag, redelivered) and properties (persistence, priority), its own id and headers,
 *   so a retry or dead letter republishes it alone.
 * - Only messages without delay, priority or expiration are packable (`packable`): those need
 *   AMQP properties of their own.
 */
import type * as Amqp from "amqplib"
import type * as BrokerTransport from "../../BrokerTransport.js"
import * as MessageId from "../messageId.js"
import * as wire from "../wire.js"

/** Per-message metadata inside a packed body. */
interface Meta {
  /** message id */
  readonly i: string
  /** publish time, epoch ms (absent: not recorded) */
  readonly t?: number
  readonly h?: Readonly<Record<string, string>>
  /** library metadata (absent in packs written before it existed) */
  readonly m?: Readonly<Record<string, string>>
  readonly c?: string
}

/** A message can share a carrier when nothing about it needs per-message AMQP properties. @internal */
export const packable = (message: BrokerTransport.TransportMessage): boolean =>
  (message.delay === undefined || message.delay <= 0) && message.priority === undefined &&
  message.expiration === undefined

/** Encodes messages (same routing key and persistence) into one body. @internal */
export const pack = (messages: ReadonlyArray<BrokerTransport.TransportMessage>): Buffer => {
  const metas: Array<Buffer> = []
  let size = 4
  for (const message of messages) {
    const meta: Meta = {
      i: message.messageId,
      ...(message.publishedAt === undefined ? {} : { t: message.publishedAt }),
      ...(wire.hasHeaders(message.headers) ? { h: message.headers } : {}),
      ...(wire.hasHeaders(message.metadata) ? { m: message.metadata } : {}),
      ...(message.correlationId === undefined ? {} : { c: message.correlationId })
    }
    const encoded = Buffer.from(JSON.stringify(meta), "utf8")
    metas.push(encoded)
    size += 8 + encoded.length + message.body.byteLength
  }
  const out = Buffer.allocUnsafe(size)
  let at = out.writeUInt32BE(messages.length, 0)
  messages.forEach((message, i) => {
    const meta = metas[i] ?? Buffer.alloc(0)
    at = out.writeUInt32BE(meta.length, at)
    at += meta.copy(out, at)
    at = out.writeUInt32BE(message.body.byteLength, at)
    out.set(message.body, at)
    at += message.body.byteLength
  })
  return out
}

/** Bytes `pack` adds for one message beside its body (meta JSON and lengths), for size limits. @internal */
export const overheadOf = (message: BrokerTransport.TransportMessage): number => {
  let headers = 0
  for (const key in message.headers) headers += key.length + (message.headers[key]?.length ?? 0) + 6
  for (const key in message.metadata) headers += key.length + (message.metadata[key]?.length ?? 0) + 6
  return 64 + message.messageId.length + headers + (message.correlationId?.length ?? 0)
}

const isMeta = (value: unknown): value is Meta => {
  if (typeof value !== "object" || value === null) return false
  const meta = value as Record<string, unknown>
  if (typeof meta["i"] !== "string" || (meta["t"] !== undefined && typeof meta["t"] !== "number")) return false
  if (meta["c"] !== undefined && typeof meta["c"] !== "string") return false
  return isTable(meta["h"]) && isTable(meta["m"])
}

const isTable = (table: unknown): boolean =>
  table === undefined ||
  (typeof table === "object" && table !== null && Object.values(table).every((v) => typeof v === "string"))

/**
 * The messages of a packed delivery, each shaped as the AMQP message it would have been on its
 * own (so retries and dead letters republish it alone); undefined when the body is malformed,
 * and the carrier is then handled as one undecodable message.
 *
 * @internal
 */
export const unpack = (carrier: Amqp.Message, publishedAtHeader: string): Array<Amqp.Message> | undefined => {
  const body = carrier.content
  try {
    const count = body.readUInt32BE(0)
    let at = 4
    const messages: Array<Amqp.Message> = []
    for (let n = 0; n < count; n++) {
      const metaLength = body.readUInt32BE(at)
      at += 4
      const meta: unknown = JSON.parse(body.toString("utf8", at, at + metaLength))
      at += metaLength
      const length = body.readUInt32BE(at)
      at += 4
      if (!isMeta(meta) || at + length > body.length) return undefined
      const content = body.subarray(at, at + length)
      at += length
      // The publish time rides in the id when it is a UUIDv7 of that time, as on its own.
      const idMillis = MessageId.millisOf(meta.i)
      const timed = meta.t === undefined || (idMillis !== undefined && Math.abs(idMillis - meta.t) < 1000)
      // Headers and metadata share the AMQP table, as on a message of its own.
      const table = meta.m === undefined ? meta.h : { ...meta.h, ...meta.m }
      const headers = timed ? table : { ...table, [publishedAtHeader]: String(meta.t) }
      messages.push({
        fields: carrier.fields,
        content,
        properties: {
          ...carrier.properties,
          contentType: "application/json",
          headers,
          messageId: meta.i,
          correlationId: meta.c,
          timestamp: undefined
        }
      })
    }
    return at === body.length && count > 0 ? messages : undefined
  } catch {
    return undefined
  }
}

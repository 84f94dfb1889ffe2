import type { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Broker from "../../Broker.js"
import { EncodeError } from "../../BrokerError.js"
import type { InvalidOptions } from "../../InvalidOptions.js"
import type * as Outbox from "../../Outbox.js"
import type * as OutboxError from "../../OutboxError.js"
import type * as OutboxStore from "../../OutboxStore.js"
import { toBuffer } from "../broker.js"
import * as MessageId from "../messageId.js"
import * as names from "../names.js"
import * as checks from "../options.js"
import { withTraceContext } from "../tracing.js"
import * as outboxChecks from "./checks.js"
import { defaults } from "./dispatcher.js"
import * as Wake from "./wake.js"

const TypeId: Outbox.TypeId = Symbol.for("effect-background/Outbox") as Outbox.TypeId

const module = "Outbox"

/** A message id becomes the broker's `message-id` (an AMQP short string: at most 255 bytes). */
const maxMessageIdBytes = 255

/** `maxAge` is required: a missing one must not read as "delete every dispatched event". @internal */
export const checkPrune = (options: Outbox.PruneOptions | undefined) =>
  Either.all([
    options?.maxAge === undefined
      ? Either.left(checks.invalid(module, "maxAge", undefined, "is required"))
      : checks.duration(module, "maxAge", options.maxAge, { fallback: Duration.zero }),
    checks.integer(module, "batchSize", options?.batchSize, {
      min: 1,
      max: 1_000_000,
      fallback: defaults.retentionBatchSize
    })
  ])

/**
 * The typed `Outbox` service over a store: encodes with the topic's Schema, applies the Broker's
 * header rules (an event the outbox accepts can be published), carries the trace context into
 * the row, and wakes dispatchers — those of this process directly, the others through the
 * store's `notify`, which never runs inside the caller's transaction.
 *
 * @internal
 */
export const make = (
  store: OutboxStore.Service,
  /** The broker's limit, when one is known here: an event over it could never be published. */
  maxMessageBytes?: number
): Outbox.Service => {
  const wake = Wake.make()

  const signal = Effect.suspend(() => {
    wake.signal()
    return store.notify
  })

  const add = <A, I>(
    topic: Broker.Topic<A, I>,
    message: A,
    options?: Outbox.AddOptions
  ): Effect.Effect<string, OutboxError.AddError> => {
    const encoded = topic.codec.encode(message)
    if (Either.isLeft(encoded)) return Effect.fail(encoded.left)
    const bytes = encoded.right.byteLength
    if (maxMessageBytes !== undefined && bytes > maxMessageBytes) {
      return Effect.fail(
        new EncodeError({
          topic: topic.name,
          issue:
            `the encoded event is ${bytes} bytes, over the broker's maxMessageBytes of ${maxMessageBytes}; no dispatcher could publish it`
        })
      )
    }
    const headers = options?.headers
    if (headers !== undefined) {
      const valid = names.validateHeaders(headers)
      if (Either.isLeft(valid)) return Effect.fail(valid.left)
    }
    const given = options?.messageId
    if (given !== undefined) {
      const checked = outboxChecks.text(module, "messageId", given, { maxBytes: maxMessageIdBytes })
      if (Either.isLeft(checked)) return Effect.fail(checked.left)
    }
    const key = options?.key
    if (key !== undefined) {
      const checked = outboxChecks.text(module, "key", key, { minBytes: 0 })
      if (Either.isLeft(checked)) return Effect.fail(checked.left)
    }
    const body = toBuffer(encoded.right).toString("utf8")
    return Effect.clockWith((clock) => {
      // A UUIDv7 whose time part is the Clock's, as `Broker.publish` makes them.
      const messageId = given ?? MessageId.make(clock.unsafeCurrentTimeMillis())
      // The row carries this span's context, so the consumer's span becomes a child of outbox.add.
      return withTraceContext(() => ["outbox.add", {
        kind: "producer",
        captureStackTrace: false,
        attributes: { "messaging.destination.name": topic.name, "messaging.message.id": messageId }
      }], (traceparent) =>
        store.insert({ messageId, topic: topic.name, key, headers, body, traceparent }).pipe(
          Effect.zipRight(signal),
          Effect.as(messageId)
        ))
    })
  }

  const service: Outbox.Service = {
    [TypeId]: TypeId,
    add,
    replay: (ids) => {
      const list = Array.from(ids)
      return list.length === 0 ? Effect.succeed(0) : Effect.tap(store.replay(list), (n) => n > 0 ? signal : Effect.void)
    },
    dead: (options) =>
      Effect.flatMap(
        checks.integer(module, "limit", options?.limit, { min: 1, max: 100_000, fallback: defaults.deadLimit }),
        (limit) => store.dead(limit)
      ),
    stats: store.stats,
    prune: (options): Effect.Effect<number, SqlError | InvalidOptions> =>
      Effect.flatMap(checkPrune(options), ([maxAge, batchSize]) => store.prune(maxAge, batchSize)),
    wake
  }
  return service
}

import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as Broker from "../../Broker.js"
import { InvalidName } from "../../BrokerError.js"
import * as Outbox from "../../Outbox.js"
import { toBuffer } from "../broker.js"
import { withTraceContext } from "../tracing.js"
import * as MessageId from "../messageId.js"
import * as names from "../names.js"
import * as Sql from "./sql.js"
import * as Wake from "./wake.js"

const TypeId: Outbox.TypeId = Symbol.for("effect-background/Outbox") as Outbox.TypeId

/** @internal */
export const readStats = (sql: SqlClient.SqlClient, t: Sql.Tables) =>
  Effect.map(Sql.stats(sql, t), (rows): Outbox.Stats => {
    const row = rows[0]
    return {
      pending: Number(row?.pending ?? 0),
      retrying: Number(row?.retrying ?? 0),
      dead: Number(row?.dead ?? 0),
      oldestPendingAgeMs: Math.max(0, Math.round(Number(row?.lag_ms ?? 0))),
      dispatchRatePerSecond: Number(row?.dispatched_last_minute ?? 0) / 60
    }
  })

/** @internal */
export interface StoreOptions {
  readonly tables: Sql.Tables
  /** Send a coalesced `pg_notify` after writes, for dispatchers in other processes. */
  readonly notify: boolean
  /** At most one NOTIFY per this interval (the first one after a quiet period goes at once). */
  readonly notifyInterval: Duration.Duration
}

const invalidMessageId = (id: string) =>
  new InvalidName({ kind: "option", value: id, reason: "messageId must be 1-255 bytes" })

/**
 * The `Outbox` service over a `SqlClient`. `add` never sends NOTIFY inside the caller's
 * transaction (PostgreSQL serialises commits that queue notifications, halving the commit rate
 * of concurrent writers); it only signals: in-process dispatchers directly, and a notifier fiber
 * that sends at most one `pg_notify` per interval on its own connection.
 *
 * @internal
 */
export const make = (
  sql: SqlClient.SqlClient,
  options: StoreOptions
): Effect.Effect<Outbox.Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    const t = options.tables
    const wake = Wake.make()
    const notifications = yield* Queue.sliding<void>(1)

    if (options.notify) {
      yield* Effect.gen(function*() {
        while (true) {
          yield* Queue.take(notifications)
          yield* Sql.notify(sql, t)
          yield* Effect.sleep(options.notifyInterval)
        }
      }).pipe(
        Effect.sandbox,
        Effect.tapError((cause) => Effect.logWarning("outbox notify failed; retrying", cause)),
        Effect.retry({ schedule: Schedule.spaced("100 millis"), while: (cause) => !Cause.isInterruptedOnly(cause) }),
        Effect.annotateLogs({ package: "effect-background", module: "Outbox", fiber: "notify" }),
        Effect.forkScoped,
        Effect.interruptible
      )
    }

    const signal = () => {
      wake.signal()
      if (options.notify) Queue.unsafeOffer(notifications, undefined)
    }

    const add = <A, I>(topic: Broker.Topic<A, I>, message: A, addOptions?: Outbox.AddOptions) => {
      const encoded = topic.codec.encode(message)
      if (Either.isLeft(encoded)) return Effect.fail(encoded.left)
      const headers = addOptions?.headers
      if (headers !== undefined) {
        const valid = names.validateHeaders(headers)
        if (Either.isLeft(valid)) return Effect.fail(valid.left)
      }
      const messageId = addOptions?.messageId ?? MessageId.make()
      if (messageId.length === 0 || Buffer.byteLength(messageId) > 255) return Effect.fail(invalidMessageId(messageId))
      const body = toBuffer(encoded.right).toString("utf8")
      // The row carries this span's context, so the consumer's span becomes a child of outbox.add.
      return withTraceContext("outbox.add", {
        kind: "producer",
        captureStackTrace: false,
        attributes: { "messaging.destination.name": topic.name, "messaging.message.id": messageId }
      }, (traceparent) =>
        Sql.insert(sql, t, {
          messageId,
          topic: topic.name,
          key: addOptions?.key ?? null,
          headers: headers === undefined ? null : JSON.stringify(headers),
          body,
          traceparent: traceparent ?? null
        }).pipe(Effect.map(() => {
          signal()
          return messageId
        })))
    }

    const service: Outbox.Service = {
      [TypeId]: TypeId,
      add,
      replay: (ids) => {
        const list = Array.from(ids)
        return list.length === 0 ? Effect.succeed(0) : Effect.tap(Sql.replay(sql, t, list), (n) => {
          if (n > 0) signal()
        })
      },
      dead: (deadOptions) =>
        Effect.map(Sql.dead(sql, t, Math.max(1, deadOptions?.limit ?? 100)), (rows) =>
          rows.map((row): Outbox.DeadEvent => ({
            messageId: row.message_id,
            topic: row.topic,
            key: row.key ?? undefined,
            attempts: row.attempts,
            lastError: row.last_error ?? undefined,
            createdAt: row.created_at
          }))),
      stats: readStats(sql, t),
      prune: (pruneOptions) =>
        Effect.suspend((): Effect.Effect<number, SqlError | InvalidName> => {
          const maxAge = Duration.decodeUnknown(pruneOptions.maxAge)
          const batchSize = pruneOptions.batchSize ?? Outbox.defaults.retentionBatchSize
          if (Option.isNone(maxAge)) {
            return Effect.fail(new InvalidName({ kind: "option", value: `maxAge=${String(pruneOptions.maxAge)}`, reason: "must be a duration" }))
          }
          if (!Number.isInteger(batchSize) || batchSize < 1) {
            return Effect.fail(new InvalidName({ kind: "option", value: `batchSize=${batchSize}`, reason: "must be a positive integer" }))
          }
          return Sql.pruneDispatched(sql, t, Duration.toMillis(maxAge.value), batchSize)
        }),
      wake
    }
    return service
  })

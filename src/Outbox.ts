/**
 * Transactional outbox: `Outbox.add` writes an event through the ambient transaction, so inside
 * `sql.withTransaction` it commits or rolls back with the domain writes; `Outbox.dispatcher`
 * publishes committed events through the `Broker` with confirms. Both run on an `OutboxStore`
 * (the port, `OutboxStore.ts`); `layers/PgOutbox` provides one on PostgreSQL and assembles the
 * Layers.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import * as Broker from "./Broker.js"
import type { PublishError } from "./BrokerError.js"
import * as dispatcherInternal from "./internal/outbox/dispatcher.js"
import * as internal from "./internal/outbox/outbox.js"
import type * as Wake from "./internal/outbox/wake.js"
import type { InvalidOptions } from "./InvalidOptions.js"
import type { AddError, QueryError } from "./OutboxError.js"
import * as OutboxStore from "./OutboxStore.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-background/Outbox")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * @since 0.1.0
 * @category models
 */
export interface AddOptions {
  /**
   * Events sharing a key are published in order by a `per-key` dispatcher. Stored verbatim; must
   * not contain U+0000 (PostgreSQL text cannot hold it).
   */
  readonly key?: string | undefined
  /** The rules of `Broker.publish`: names of 1-128 bytes, no `x-eb-` prefix, no U+0000. */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /**
   * Defaults to a fresh UUIDv7; it becomes the broker message id (consumers deduplicate on it).
   * 1-255 bytes, no U+0000.
   */
  readonly messageId?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export type Stats = OutboxStore.Stats

/**
 * @since 0.1.0
 * @category models
 */
export type DeadEvent = OutboxStore.DeadEvent

/**
 * @since 0.1.0
 * @category models
 */
export interface DeadOptions {
  /** At most this many, from 1 to 100,000. Default 100. */
  readonly limit?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly [TypeId]: TypeId
  /**
   * Encodes with the topic's Schema and inserts the event with the caller's trace context; runs
   * in the caller's transaction when there is one. Returns the message id.
   *
   * The input is checked as `Broker.publish` checks it, before anything is written: a payload
   * that does not encode, or holds NaN or ±Infinity in a number field (JSON cannot carry them),
   * fails with `EncodeError` naming the field; a bad header name or value (U+0000 included)
   * with `InvalidName` naming the header; a bad `messageId` or `key` with `InvalidOptions`.
   * Nothing is inserted then, so the caller's transaction can roll back. The body is JSON: a
   * `-0` arrives as `0`.
   */
  readonly add: <A, I>(
    topic: Broker.Topic<A, I>,
    message: A,
    options?: AddOptions
  ) => Effect.Effect<string, AddError>
  /** Requeues dead (or retrying) events by message id for immediate dispatch; returns how many. */
  readonly replay: (messageIds: Iterable<string>) => Effect.Effect<number, SqlError>
  /** Dead events, oldest first, for inspection. */
  readonly dead: (options?: DeadOptions) => Effect.Effect<ReadonlyArray<DeadEvent>, QueryError>
  readonly stats: Effect.Effect<Stats, SqlError>
  /**
   * Deletes dispatched events older than `maxAge`, in statements of `batchSize` rows (default
   * 5,000), until none is left; returns how many. The dispatcher's `retention` does this on its
   * own; this is for running it as a scheduled task instead (one replica at a time).
   */
  readonly prune: (options: PruneOptions) => Effect.Effect<number, QueryError>
  /** @internal */
  readonly wake: Wake.LocalWake
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Outbox extends Context.Tag("effect-background/Outbox")<Outbox, Service>() {}

/**
 * The typed service over a store: `add` encodes and validates, then inserts through the store;
 * dispatchers built in the same process are woken directly. When a `Broker` is in the context it
 * is built in (as in `PgOutbox.layer`, which runs a dispatcher too), `add` also refuses an event
 * whose encoded body is over the broker's `maxMessageBytes` (an `EncodeError`): no dispatcher
 * could ever publish it. Without one (a producer-only process) the check is left to the
 * dispatcher, which dead-letters such an event at once.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (store: OutboxStore.Service): Effect.Effect<Service> =>
  Effect.map(
    Effect.serviceOption(Broker.Broker),
    (broker) => internal.make(store, Option.getOrUndefined(broker)?.capabilities.maxMessageBytes)
  )

/**
 * The `Outbox` service on the `OutboxStore` in context (producers; pair it with `dispatcher`).
 * A `Broker` provided to it bounds the size of what `add` accepts (see `make`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Outbox, never, OutboxStore.OutboxStore> = Layer.effect(
  Outbox,
  Effect.flatMap(OutboxStore.OutboxStore, make)
)

/**
 * `unordered`: every dispatcher may publish every due event (fastest). `per-key`: among events that
 * share a key, strict publish order even with several dispatchers and failures — a key's next
 * event waits until its predecessor is confirmed (a dead predecessor blocks the key until
 * `replay`). Events without a key are unordered in both modes.
 *
 * @since 0.1.0
 * @category models
 */
export type Ordering = "unordered" | "per-key"

/**
 * @since 0.1.0
 * @category models
 */
export interface RetentionOptions {
  /**
   * Dispatched events older than this (finite, non-negative) are deleted. `0` deletes each event
   * in the transaction that records its dispatch: no history of dispatched events (and no
   * dispatch rate in `stats`), but less work for the database per event than marking it.
   */
  readonly maxAge: Duration.DurationInput
  /** How often to look (positive). Default 1 minute. */
  readonly every?: Duration.DurationInput | undefined
  /** Rows per delete statement, from 1 to 1,000,000. Default 5,000. */
  readonly batchSize?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PruneOptions {
  /** A finite, non-negative duration. */
  readonly maxAge: Duration.DurationInput
  /** Rows per delete statement, from 1 to 1,000,000. Default 5,000. */
  readonly batchSize?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface DispatcherOptions {
  /** Events claimed per transaction, from 1 to 100,000. Default 1,000. */
  readonly batchSize?: number | undefined
  /** Batches in flight per dispatcher (each its own transaction), from 1 to 64. Default 2. */
  readonly concurrency?: number | undefined
  /** Publisher confirms in flight per batch, from 1 to 100,000. Default: the batch size. */
  readonly window?: number | undefined
  /**
   * Events of one topic per broker message (`Broker.PublishAllOptions.pack`), from 1 to 10,000.
   * Default 1: each event its own message, readable by any AMQP consumer. Above 1, only this
   * library's consumers can read them, and RabbitMQ then moves many times the events per second.
   */
  readonly pack?: number | undefined
  /** Fallback poll when no wake-up arrives (positive). Default 1 second. */
  readonly pollInterval?: Duration.DurationInput | undefined
  readonly ordering?: Ordering | undefined
  /** Per-event retry of events the broker rejected; exhausted → `dead`. Default {@link defaultRetry}. */
  readonly retry?: Schedule.Schedule<unknown, PublishError> | undefined
  /** Back-off while the broker is unavailable (events are not charged an attempt). */
  readonly brokerBackoff?: Schedule.Schedule<unknown, unknown> | undefined
  /** Delete old dispatched events. Default: keep 7 days, checked every minute. `false` disables. */
  readonly retention?: RetentionOptions | false | undefined
  /**
   * Wake up on the store's cross-process wake-ups (PgOutbox: LISTEN/NOTIFY), with the poll as
   * fallback. Default: when the store has them. `true` fails the Layer with `InvalidOptions`
   * when the store has none.
   */
  readonly listen?: boolean | undefined
  /** How often the pending/lag/dead gauges are refreshed (positive). Default 5 seconds. */
  readonly metricsInterval?: Duration.DurationInput | undefined
}

/**
 * Default per-event retry: exponential from 1 second, capped at 5 minutes, 10 retries.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = dispatcherInternal.defaultRetry

/**
 * Default back-off while the broker is unavailable: exponential from 100 ms, capped at 2 seconds.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultBrokerBackoff: Schedule.Schedule<unknown, unknown> = dispatcherInternal.defaultBrokerBackoff

/**
 * @since 0.1.0
 * @category models
 */
export const defaults: {
  readonly batchSize: 1000
  readonly concurrency: 2
  readonly pollInterval: "1 second"
  readonly retentionMaxAge: "7 days"
  readonly retentionEvery: "1 minute"
  readonly retentionBatchSize: 5000
  readonly metricsInterval: "5 seconds"
  readonly deadLimit: 100
} = dispatcherInternal.defaults

/**
 * Effect metrics kept by dispatchers (counters are per process; gauges read the store).
 *
 * @since 0.1.0
 * @category models
 */
export const metrics: {
  readonly dispatched: Metric.Metric.Counter<number>
  readonly failures: Metric.Metric.Counter<number>
  readonly pending: Metric.Metric.Gauge<number>
  readonly lagSeconds: Metric.Metric.Gauge<number>
  readonly dead: Metric.Metric.Gauge<number>
} = dispatcherInternal.metrics

/**
 * Runs a dispatcher on the `OutboxStore` in context for as long as the Layer lives:
 * `concurrency` claim loops, retention, gauges and the store's cross-process wake-ups. Every
 * option is checked when the Layer is built (`InvalidOptions` naming the field). With an
 * `Outbox` service in context, its `add` wakes the dispatcher directly.
 *
 * @since 0.1.0
 * @category layers
 */
export const dispatcher = (
  options?: DispatcherOptions
): Layer.Layer<never, InvalidOptions, OutboxStore.OutboxStore | Broker.Broker> =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const resolved = yield* dispatcherInternal.resolve(options)
    const store = yield* OutboxStore.OutboxStore
    const broker = yield* Broker.Broker
    const local = yield* Effect.serviceOption(Outbox)
    yield* dispatcherInternal.run(store, broker, resolved, Option.map(local, (outbox) => outbox.wake))
  }))

/**
 * @since 0.1.0
 * @category accessors
 */
export const add = <A, I>(
  topic: Broker.Topic<A, I>,
  message: A,
  options?: AddOptions
): Effect.Effect<string, AddError, Outbox> => Effect.flatMap(Outbox, (outbox) => outbox.add(topic, message, options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const replay = (messageIds: Iterable<string>): Effect.Effect<number, SqlError, Outbox> =>
  Effect.flatMap(Outbox, (outbox) => outbox.replay(messageIds))

/**
 * @since 0.1.0
 * @category accessors
 */
export const dead = (options?: DeadOptions): Effect.Effect<ReadonlyArray<DeadEvent>, QueryError, Outbox> =>
  Effect.flatMap(Outbox, (outbox) => outbox.dead(options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const stats: Effect.Effect<Stats, SqlError, Outbox> = Effect.flatMap(Outbox, (outbox) => outbox.stats)

/**
 * Deletes dispatched events older than `maxAge` (see `Service.prune`).
 *
 * @since 0.1.0
 * @category accessors
 */
export const prune = (options: PruneOptions): Effect.Effect<number, QueryError, Outbox> =>
  Effect.flatMap(Outbox, (outbox) => outbox.prune(options))

/**
 * Transactional outbox: `Outbox.add` writes an event through the ambient `SqlClient`, so inside
 * `sql.withTransaction` it commits or rolls back with the domain writes; a dispatcher Layer
 * (`layers/PgOutbox`) publishes committed events through the `Broker` with confirms.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import type * as Broker from "./Broker.js"
import type { EncodeError, InvalidName, PublishError } from "./BrokerError.js"
import type * as internal from "./internal/outbox/wake.js"

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
  /** Events sharing a key are published in order by a `per-key` dispatcher. Stored verbatim. */
  readonly key?: string | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** Defaults to a random UUID; it becomes the broker message id (consumers deduplicate on it). */
  readonly messageId?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Events waiting to be published, including those waiting for a retry. */
  readonly pending: number
  /** Pending events that failed at least once. */
  readonly retrying: number
  /** Events given up on; see `dead` and `replay`. */
  readonly dead: number
  /** Age of the oldest pending event in milliseconds (0 when none): the dispatcher's lag. */
  readonly oldestPendingAgeMs: number
  /** Events dispatched in the last minute, per second, across all dispatchers. */
  readonly dispatchRatePerSecond: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface DeadEvent {
  readonly messageId: string
  readonly topic: string
  readonly key: string | undefined
  readonly attempts: number
  readonly lastError: string | undefined
  readonly createdAt: Date
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly [TypeId]: TypeId
  /**
   * Encodes with the topic's Schema and inserts the event with the caller's trace context; runs
   * in the caller's transaction when there is one. Returns the message id. An encode failure is
   * a typed error, so the caller's transaction can roll back.
   */
  readonly add: <A, I>(
    topic: Broker.Topic<A, I>,
    message: A,
    options?: AddOptions
  ) => Effect.Effect<string, EncodeError | InvalidName | SqlError>
  /** Requeues dead (or retrying) events by message id for immediate dispatch; returns how many. */
  readonly replay: (messageIds: Iterable<string>) => Effect.Effect<number, SqlError>
  /** Dead events, oldest first, for inspection. */
  readonly dead: (options?: { readonly limit?: number | undefined }) => Effect.Effect<ReadonlyArray<DeadEvent>, SqlError>
  readonly stats: Effect.Effect<Stats, SqlError>
  /**
   * Deletes dispatched events older than `maxAge`, in statements of `batchSize` rows (default
   * 5,000), until none is left; returns how many. The dispatcher's `retention` does this on its
   * own; this is for running it as a scheduled task instead (one replica at a time).
   */
  readonly prune: (options: PruneOptions) => Effect.Effect<number, SqlError | InvalidName>
  /** @internal */
  readonly wake: internal.LocalWake
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Outbox extends Context.Tag("effect-background/Outbox")<Outbox, Service>() {}

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
   * Dispatched events older than this are deleted. `0` deletes each event in the transaction that
   * records its dispatch: no history of dispatched events (and no dispatch rate in `stats`), but
   * less work for PostgreSQL per event than marking it.
   */
  readonly maxAge: Duration.DurationInput
  /** How often to look. Default 1 minute. */
  readonly every?: Duration.DurationInput | undefined
  /** Rows per delete statement. Default 5,000. */
  readonly batchSize?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PruneOptions {
  readonly maxAge: Duration.DurationInput
  readonly batchSize?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface DispatcherOptions {
  /** Rows claimed per transaction. Default 1,000. */
  readonly batchSize?: number | undefined
  /** Batches in flight per dispatcher (each its own transaction). Default 2. */
  readonly concurrency?: number | undefined
  /** Publisher confirms in flight per batch. Default: the batch size. */
  readonly window?: number | undefined
  /**
   * Events of one topic per broker message (`Broker.PublishAllOptions.pack`). Default 1: each
   * event its own message, readable by any AMQP consumer. Above 1, only this library's
   * consumers can read them, and RabbitMQ then moves many times the events per second.
   */
  readonly pack?: number | undefined
  /** Fallback poll when no wake-up arrives. Default 1 second. */
  readonly pollInterval?: Duration.DurationInput | undefined
  readonly ordering?: Ordering | undefined
  /** Per-row retry of events the broker rejected; exhausted → `dead`. Default {@link defaultRetry}. */
  readonly retry?: Schedule.Schedule<unknown, PublishError> | undefined
  /** Back-off while the broker is unavailable (rows are not charged an attempt). */
  readonly brokerBackoff?: Schedule.Schedule<unknown, unknown> | undefined
  /** Delete old dispatched rows. Default: keep 7 days, checked every minute. `false` disables. */
  readonly retention?: RetentionOptions | false | undefined
  /** LISTEN for wake-ups (with the poll as fallback). Default true. */
  readonly listen?: boolean | undefined
  /** `application_name` of the LISTEN connection. Default `eb-outbox-listen`. */
  readonly listenApplicationName?: string | undefined
  /** How often the pending/lag/dead gauges are refreshed. Default 5 seconds. */
  readonly metricsInterval?: Duration.DurationInput | undefined
}

/**
 * Default per-row retry: exponential from 1 second, capped at 5 minutes, 10 retries.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("1 second").pipe(
  Schedule.union(Schedule.spaced("5 minutes")),
  Schedule.intersect(Schedule.recurs(10))
)

/**
 * Default back-off while the broker is unavailable: exponential from 100 ms, capped at 2 seconds.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultBrokerBackoff: Schedule.Schedule<unknown, unknown> = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("2 seconds"))
)

/**
 * @since 0.1.0
 * @category models
 */
export const defaults = {
  batchSize: 1000,
  concurrency: 2,
  pollInterval: "1 second",
  retentionMaxAge: "7 days",
  retentionEvery: "1 minute",
  retentionBatchSize: 5000,
  metricsInterval: "5 seconds",
  listenApplicationName: "eb-outbox-listen"
} as const

/**
 * Effect metrics kept by dispatchers (counters are per process; gauges read the table).
 *
 * @since 0.1.0
 * @category models
 */
export const metrics = {
  dispatched: Metric.counter("effect_background_outbox_dispatched", {
    description: "outbox events confirmed by the broker and marked dispatched",
    incremental: true
  }),
  failures: Metric.counter("effect_background_outbox_failures", {
    description: "outbox publish failures charged to a row (retried or dead)",
    incremental: true
  }),
  pending: Metric.gauge("effect_background_outbox_pending", { description: "pending outbox events" }),
  lagMs: Metric.gauge("effect_background_outbox_lag_ms", { description: "age of the oldest pending outbox event" }),
  dead: Metric.gauge("effect_background_outbox_dead", { description: "dead outbox events" })
} as const

/**
 * @since 0.1.0
 * @category accessors
 */
export const add = <A, I>(
  topic: Broker.Topic<A, I>,
  message: A,
  options?: AddOptions
): Effect.Effect<string, EncodeError | InvalidName | SqlError, Outbox> =>
  Effect.flatMap(Outbox, (outbox) => outbox.add(topic, message, options))

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
export const dead = (
  options?: { readonly limit?: number | undefined }
): Effect.Effect<ReadonlyArray<DeadEvent>, SqlError, Outbox> => Effect.flatMap(Outbox, (outbox) => outbox.dead(options))

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
export const prune = (options: PruneOptions): Effect.Effect<number, SqlError | InvalidName, Outbox> =>
  Effect.flatMap(Outbox, (outbox) => outbox.prune(options))

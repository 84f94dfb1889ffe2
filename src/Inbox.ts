/**
 * Exactly-once effects for consumers: the handler runs inside a store transaction that also
 * records `(consumer, message id)`. A redelivered message finds the record and is skipped (and
 * acked); a failed handler rolls its effects and the record back together, so the retry runs it
 * again. With `layers/PgInbox` the handler's own SQL and `Outbox.add` join that transaction:
 * "consume an event → change my tables → emit the next event" commits once or not at all.
 *
 * Opt in per consumer by wrapping the handler: {@link subscriber} for `Broker.subscribe`,
 * {@link worker} for `TaskQueue.worker`. The message is acked only after the commit (the
 * wrapped handler returns after it).
 *
 * A redelivery arriving after its record was pruned (older than the dedup window kept with
 * {@link Service.prune}) is not detected and runs again.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schema from "effect/Schema"
import type * as Broker from "./Broker.js"
import * as memory from "./internal/inbox/memory.js"
import type { InvalidOptions } from "./InvalidOptions.js"
import type * as Task from "./Task.js"
import type * as TaskQueue from "./TaskQueue.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-background/Inbox")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * What `run` did: ran the effect (its value), or found the message already recorded (the JSON
 * result stored with it, `null` when none was).
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome<A> =
  | { readonly _tag: "Ran"; readonly value: A }
  | { readonly _tag: "Duplicate"; readonly result: unknown }

/**
 * @since 0.1.0
 * @category models
 */
export interface RunOptions<A> {
  /** A JSON value stored with the record, handed back to later duplicates (a task's result). */
  readonly result?: ((value: A) => Effect.Effect<unknown>) | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PruneOptions {
  /** Records older than this (finite, non-negative) are deleted: the dedup window. */
  readonly maxAge: Duration.DurationInput
  /** Rows per delete statement, from 1 to 1,000,000. Default 5,000. */
  readonly batchSize?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly [TypeId]: TypeId
  /**
   * Runs `effect` once per `(consumer, messageId)`: in one transaction, records the pair, runs the
   * effect and commits. When the pair is already recorded the effect is skipped (`Duplicate`).
   * A failure, defect or interruption of the effect rolls the record back with its effects. Two
   * concurrent runs of one pair: the second waits for the first's outcome, then skips (first
   * committed) or runs (first rolled back).
   */
  readonly run: <A, E, R>(
    consumer: string,
    messageId: string,
    effect: Effect.Effect<A, E, R>,
    options?: RunOptions<A>
  ) => Effect.Effect<Outcome<A>, E | SqlError, R>
  /** Deletes records older than `maxAge` in batches; returns how many. */
  readonly prune: (options: PruneOptions) => Effect.Effect<number, SqlError | InvalidOptions>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Inbox extends Context.Tag("effect-background/Inbox")<Inbox, Service>() {}

/**
 * @since 0.1.0
 * @category models
 */
export const defaults: { readonly pruneBatchSize: 5000 } = { pruneBatchSize: 5000 }

/**
 * @since 0.1.0
 * @category models
 */
export const metrics = {
  /** Deliveries skipped because their message was already recorded, by consumer. */
  duplicates: Metric.counter("effect_background_inbox_duplicates_total", {
    description: "deliveries an inbox skipped because their message id was already recorded",
    incremental: true
  })
} as const

/**
 * The in-process inbox, for tests: the same semantics without a database (a record is kept only
 * when the effect succeeds; the effect's own changes are the caller's to roll back).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<Service> = memory.make

/**
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<Inbox> = Layer.effect(Inbox, memory.make)

const skipped = (consumer: string) =>
  Effect.zipRight(
    Metric.increment(Metric.tagged(metrics.duplicates, "consumer", consumer)),
    Effect.annotateCurrentSpan("effect_background.inbox.duplicate", true)
  )

/**
 * A `Broker.subscribe` handler that runs at most once per message id for `consumer` (use the
 * subscription's group): a redelivery is skipped and acked.
 *
 * @since 0.1.0
 * @category combinators
 */
export const subscriber = <A, E, R>(
  consumer: string,
  handler: Broker.Handler<A, E, R>
): Broker.Handler<A, E | SqlError, R | Inbox> =>
(message, envelope) =>
  Effect.flatMap(Inbox, (inbox) =>
    Effect.flatMap(
      inbox.run(consumer, envelope.id, handler(message, envelope)),
      (outcome) => outcome._tag === "Duplicate" ? skipped(consumer) : Effect.void
    ))

/**
 * A `TaskQueue.worker` handler that runs at most once per task id: the result is stored with the
 * record (encoded with the task's `success` Schema) and a redelivered task returns it without
 * running. The consumer is the task's group. A store failure (database down) is a defect, so the
 * task's retry Schedule applies to it as to any defect.
 *
 * @since 0.1.0
 * @category combinators
 */
export const worker = <Name extends string, P, S, F, R>(
  task: Task.Task<Name, P, S, F>,
  handler: TaskQueue.Handler<P, S, F, R>
): TaskQueue.Handler<P, S, F, R | Inbox> => {
  const encode = Schema.encodeUnknown(task.success)
  const decode = Schema.decodeUnknown(task.success)
  return (payload, context) =>
    Effect.flatMap(
      Inbox,
      (inbox) =>
        inbox.run(task.group, context.id, Effect.mapError(handler(payload, context), (error) => new Failed(error)), {
          result: (value) => Effect.orDie(encode(value))
        }).pipe(
          // The handler's own failures keep their type; the store's are defects (retried as such).
          Effect.catchAll((error) => error instanceof Failed ? Effect.fail(error.error) : Effect.die(error)),
          Effect.flatMap((outcome) =>
            outcome._tag === "Ran"
              ? Effect.succeed(outcome.value)
              : Effect.zipRight(skipped(task.group), Effect.orDie(decode(outcome.result)))
          )
        )
    )
}

class Failed<F> {
  constructor(readonly error: F) {}
}

/**
 * Typed task definitions: a name, Schemas for the payload, the success value and the typed
 * failure, a retry `Schedule` and a timeout. Definitions carry no handler code, so producers
 * import them without the worker's dependencies; handlers are bound with `TaskQueue.worker`.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import { dual } from "effect/Function"
import * as Schedule from "effect/Schedule"
import type * as Pipeable from "effect/Pipeable"
import type * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import * as Broker from "./Broker.js"
import { HandlerDefect } from "./BrokerError.js"
import * as names from "./internal/names.js"
import * as internal from "./internal/task.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = internal.TypeId

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

export {
  /**
   * A handler died (an untyped throw or `Effect.die`): retried like a failure.
   *
   * @since 0.1.0
   * @category errors
   */
  HandlerDefect
}

/**
 * A task run exceeded its timeout. The run is interrupted and the failure goes through the
 * task's retry Schedule like any other.
 *
 * @since 0.1.0
 * @category errors
 */
export class TaskTimeout extends Schema.TaggedError<TaskTimeout>()("TaskTimeout", {
  task: Schema.String,
  id: Schema.String,
  attempt: Schema.Number,
  timeoutMillis: Schema.Number
}) {
  /** @since 0.1.0 */
  override get message(): string {
    return `task "${this.task}" (${this.id}) attempt ${this.attempt} exceeded its timeout of ${this.timeoutMillis} ms`
  }
}

/**
 * What a task's retry Schedule receives: the handler's typed failure, a timeout, or a defect
 * (an untyped throw or `Effect.die`).
 *
 * @since 0.1.0
 * @category models
 */
export type RunError<F> = F | TaskTimeout | HandlerDefect

/**
 * A typed task definition. Encoded sides of the Schemas are not part of the type: payloads and
 * results only ever travel as JSON.
 *
 * @since 0.1.0
 * @category models
 */
export interface Task<Name extends string, P, S = void, F = never> extends Pipeable.Pipeable {
  readonly [TypeId]: TypeId
  readonly name: Name
  readonly payload: Schema.Schema<P, unknown>
  readonly success: Schema.Schema<S, unknown>
  readonly failure: Schema.Schema<F, unknown>
  /** Decides the delay before the next attempt; exhausted → dead-lettered. Default: no retries. */
  readonly retry: Schedule.Schedule<unknown, RunError<F>>
  /** Each attempt is interrupted after this long and fails with `TaskTimeout`. */
  readonly timeout: Duration.Duration | undefined
  /** Failures this predicate accepts are dead-lettered on the first attempt, never retried. */
  readonly nonRetryable: Predicate.Predicate<F> | undefined
  /** Declares the task queue with this maximum priority so `enqueue({ priority })` is honoured. */
  readonly maxPriority: number | undefined
  /** `"transient"` tasks may be kept in the broker's memory only (see `Options.delivery`). */
  readonly delivery: Delivery
  /** The Broker topic tasks travel on: `tasks.<name>`. */
  readonly topic: Broker.Topic<P, unknown>
  /** The durable Broker group (queue) workers of this task share: `tasks.<name>`. */
  readonly group: string
  /** @internal */
  readonly resultCodec: internal.ResultCodec<S, F>
}

/**
 * Any task, for code that handles definitions generically (registries, the Scheduler).
 *
 * @since 0.1.0
 * @category models
 */
export interface Any extends Pipeable.Pipeable {
  readonly [TypeId]: TypeId
  readonly name: string
  readonly topic: { readonly name: string }
  readonly group: string
}

/**
 * How the broker keeps a task's messages until a worker has run it.
 *
 * - `"persistent"` (default): on disk before the enqueue is confirmed; survives a broker restart.
 * - `"transient"`: in the broker's memory only. RabbitMQ takes these faster (~1.4× end to end
 *   here) and still confirms each enqueue, but a broker restart loses every task not yet run — the
 *   durability of BullMQ on a Redis without persistence. For work that can be lost or redone
 *   (cache warming, previews, notifications with a fallback).
 *
 * A retry keeps its task's delivery mode; a dead-lettered task is always kept on disk. Quorum
 * queues (`RabbitMQBroker` with `queueType: "quorum"`) keep every task on disk whatever its mode.
 *
 * @since 0.1.0
 * @category models
 */
export type Delivery = "persistent" | "transient"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<P, PI, S, SI, F, FI> {
  readonly payload: Schema.Schema<P, PI>
  readonly success?: Schema.Schema<S, SI> | undefined
  readonly failure?: Schema.Schema<F, FI> | undefined
  readonly retry?: Schedule.Schedule<unknown, RunError<NoInfer<F>>> | undefined
  readonly timeout?: Duration.DurationInput | undefined
  readonly nonRetryable?: Predicate.Predicate<NoInfer<F>> | undefined
  /** 1-255. Changing it for an existing queue is refused by RabbitMQ (inequivalent arg). */
  readonly maxPriority?: number | undefined
  /** Default `"persistent"`; see `Delivery`. */
  readonly delivery?: Delivery | undefined
}

/**
 * Prefix of the topic and group each task rides on.
 *
 * @since 0.1.0
 * @category models
 */
export const topicPrefix: string = internal.topicPrefix

/**
 * Defines a task. Throws `InvalidName` for a name that cannot be a routing key (task
 * definitions are static, like topics), and `RangeError` for a bad timeout, priority or delivery.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Task } from "effect-background"
 *
 * class InvalidAddress extends Schema.TaggedError<InvalidAddress>()("InvalidAddress", { address: Schema.String }) {}
 *
 * export const sendWelcomeEmail = Task.make("send_welcome_email", {
 *   payload: Schema.Struct({ userId: Schema.String }),
 *   success: Schema.Struct({ messageId: Schema.String }),
 *   failure: InvalidAddress,
 *   nonRetryable: (e) => e._tag === "InvalidAddress",
 *   timeout: "30 seconds"
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const Name extends string, P, PI, S = void, SI = void, F = never, FI = never>(
  name: Name,
  options: Options<P, PI, S, SI, F, FI>
): Task<Name, P, S, F> => {
  const topicName = `${internal.topicPrefix}.${name}`
  names.assertValid(names.validateTopic(topicName))
  const payload = internal.erase(options.payload)
  // Without a success/failure Schema, S is void and F is never (the type parameter defaults).
  const success = internal.erase(options.success ?? (Schema.Void as unknown as Schema.Schema<S, SI>))
  const failure = internal.erase(options.failure ?? (Schema.Never as unknown as Schema.Schema<F, FI>))
  const task: Task<Name, P, S, F> = Object.assign(Object.create(internal.proto), {
    name,
    payload,
    success,
    failure,
    retry: options.retry ?? noRetry,
    timeout: options.timeout === undefined ? undefined : internal.decodeTimeout(options.timeout),
    nonRetryable: options.nonRetryable,
    maxPriority: internal.validateMaxPriority(options.maxPriority),
    delivery: internal.validateDelivery(options.delivery),
    topic: Broker.topic(topicName, payload),
    group: topicName,
    resultCodec: internal.makeResultCodec(success, Schema.Union(failure, TaskTimeout, HandlerDefect))
  })
  return task
}

/**
 * The default retry policy of a task: none (one attempt), as in TaskIQ and BullMQ. Give a
 * task `retry` to retry transient failures.
 *
 * @since 0.1.0
 * @category models
 */
export const noRetry: Schedule.Schedule<unknown, unknown> = Schedule.recurs(0)

/**
 * Replaces the retry Schedule.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withRetry: {
  <F>(
    retry: Schedule.Schedule<unknown, RunError<NoInfer<F>>>
  ): <Name extends string, P, S>(self: Task<Name, P, S, F>) => Task<Name, P, S, F>
  <Name extends string, P, S, F>(
    self: Task<Name, P, S, F>,
    retry: Schedule.Schedule<unknown, RunError<NoInfer<F>>>
  ): Task<Name, P, S, F>
} = dual(
  2,
  <Name extends string, P, S, F>(
    self: Task<Name, P, S, F>,
    retry: Schedule.Schedule<unknown, RunError<F>>
  ): Task<Name, P, S, F> => internal.copy(self, { retry })
)

/**
 * Replaces the per-attempt timeout.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withTimeout: {
  (timeout: Duration.DurationInput): <Name extends string, P, S, F>(self: Task<Name, P, S, F>) => Task<Name, P, S, F>
  <Name extends string, P, S, F>(self: Task<Name, P, S, F>, timeout: Duration.DurationInput): Task<Name, P, S, F>
} = dual(
  2,
  <Name extends string, P, S, F>(self: Task<Name, P, S, F>, timeout: Duration.DurationInput): Task<Name, P, S, F> =>
    internal.copy(self, { timeout: internal.decodeTimeout(timeout) })
)

/**
 * Declares failures the predicate accepts as non-retryable: dead-lettered on the first attempt.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withNonRetryable: {
  <F>(predicate: Predicate.Predicate<NoInfer<F>>): <Name extends string, P, S>(self: Task<Name, P, S, F>) => Task<Name, P, S, F>
  <Name extends string, P, S, F>(self: Task<Name, P, S, F>, predicate: Predicate.Predicate<NoInfer<F>>): Task<Name, P, S, F>
} = dual(
  2,
  <Name extends string, P, S, F>(self: Task<Name, P, S, F>, predicate: Predicate.Predicate<F>): Task<Name, P, S, F> =>
    internal.copy(self, { nonRetryable: predicate })
)

/**
 * @since 0.1.0
 * @category guards
 */
export const isTask = (u: unknown): u is Any => internal.isTask(u)

/**
 * The timeout as milliseconds, or undefined.
 *
 * @since 0.1.0
 * @category accessors
 */
export const timeoutMillis = (task: { readonly timeout: Duration.Duration | undefined }): number | undefined =>
  task.timeout === undefined ? undefined : Duration.toMillis(task.timeout)

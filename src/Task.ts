/**
 * Typed task definitions: a name, Schemas for the payload, the success value and the typed
 * failure, a retry `Schedule` and a timeout. Definitions carry no handler code, so producers
 * import them without the worker's dependencies; handlers are bound with `TaskQueue.worker`.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import { dual } from "effect/Function"
import type * as Pipeable from "effect/Pipeable"
import type * as Predicate from "effect/Predicate"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Broker from "./Broker.js"
import { HandlerDefect, type InvalidName } from "./BrokerError.js"
import * as names from "./internal/names.js"
import * as internal from "./internal/task.js"
import type { InvalidOptions } from "./InvalidOptions.js"
import { TaskTimeout } from "./TaskError.js"

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
  HandlerDefect,
  /**
   * A run exceeded the task's timeout (see `TaskError.TaskTimeout`).
   *
   * @since 0.1.0
   * @category errors
   */
  TaskTimeout
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
 * - `"transient"`: in the broker's memory only. RabbitMQ takes these faster and still confirms
 *   each enqueue, but a broker restart loses every task not yet run — the durability of BullMQ on
 *   a Redis without persistence. For work that can be lost or redone
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
 * Options of `make`; a bad value is reported as `InvalidOptions` (module `"Task"`, `field` the
 * option's name).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<P, PI, S, SI, F, FI> {
  readonly payload: Schema.Schema<P, PI>
  readonly success?: Schema.Schema<S, SI> | undefined
  readonly failure?: Schema.Schema<F, FI> | undefined
  readonly retry?: Schedule.Schedule<unknown, RunError<NoInfer<F>>> | undefined
  /** Finite and positive. */
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
 * Defines a task, or returns why it cannot: `InvalidName` for a name that cannot be a routing key,
 * `InvalidOptions` (module `"Task"`, `field` the option) for a bad option. See {@link make}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeEither = <const Name extends string, P, PI, S = void, SI = void, F = never, FI = never>(
  name: Name,
  options: Options<P, PI, S, SI, F, FI>
): Either.Either<Task<Name, P, S, F>, InvalidName | InvalidOptions> => {
  const topicName = `${internal.topicPrefix}.${name}`
  const validName = names.validateTopic(topicName)
  if (Either.isLeft(validName)) return Either.left(validName.left)
  return Either.map(internal.checkOptions(options), (checked): Task<Name, P, S, F> => {
    const payload = internal.erase(checked.payload)
    // Without a success/failure Schema, S is void and F is never (the type parameter defaults).
    const success = internal.erase(checked.success ?? (Schema.Void as unknown as Schema.Schema<S, SI>))
    const failure = internal.erase(checked.failure ?? (Schema.Never as unknown as Schema.Schema<F, FI>))
    return Object.assign(Object.create(internal.proto), {
      name,
      payload,
      success,
      failure,
      retry: checked.retry ?? noRetry,
      timeout: checked.timeout,
      nonRetryable: checked.nonRetryable,
      maxPriority: checked.maxPriority,
      delivery: checked.delivery,
      topic: Broker.topic(topicName, payload),
      group: topicName,
      resultCodec: internal.makeResultCodec(success, Schema.Union(failure, TaskTimeout, HandlerDefect))
    })
  })
}

/**
 * Defines a task. Task definitions are static, like topics, so a mistake is reported where the
 * task is defined: throws `InvalidName` for a name that cannot be a routing key, and
 * `InvalidOptions` (module `"Task"`) for a bad option (a non-positive timeout, a `maxPriority`
 * outside 1-255, an unknown `delivery`). {@link makeEither} returns these instead of throwing.
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
): Task<Name, P, S, F> => Either.getOrThrowWith(makeEither(name, options), (error) => error)

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
 * Replaces the per-attempt timeout, or returns `InvalidOptions` (module `"Task"`, field
 * `"timeout"`) for one that is not a finite, positive duration. See {@link withTimeout}.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withTimeoutEither: {
  (
    timeout: Duration.DurationInput
  ): <Name extends string, P, S, F>(self: Task<Name, P, S, F>) => Either.Either<Task<Name, P, S, F>, InvalidOptions>
  <Name extends string, P, S, F>(
    self: Task<Name, P, S, F>,
    timeout: Duration.DurationInput
  ): Either.Either<Task<Name, P, S, F>, InvalidOptions>
} = dual(
  2,
  <Name extends string, P, S, F>(
    self: Task<Name, P, S, F>,
    timeout: Duration.DurationInput
  ): Either.Either<Task<Name, P, S, F>, InvalidOptions> =>
    Either.map(internal.checkTimeout(timeout), (decoded) => internal.copy(self, { timeout: decoded }))
)

/**
 * Replaces the per-attempt timeout. Throws `InvalidOptions` (module `"Task"`, field `"timeout"`)
 * for one that is not a finite, positive duration; {@link withTimeoutEither} returns it instead.
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
    Either.getOrThrowWith(withTimeoutEither(self, timeout), (error) => error)
)

/**
 * Declares failures the predicate accepts as non-retryable: dead-lettered on the first attempt.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withNonRetryable: {
  <F>(
    predicate: Predicate.Predicate<NoInfer<F>>
  ): <Name extends string, P, S>(self: Task<Name, P, S, F>) => Task<Name, P, S, F>
  <Name extends string, P, S, F>(
    self: Task<Name, P, S, F>,
    predicate: Predicate.Predicate<NoInfer<F>>
  ): Task<Name, P, S, F>
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

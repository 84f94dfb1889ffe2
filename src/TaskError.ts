/**
 * Tagged errors of tasks, the TaskQueue and result stores. They are Schemas, so they cross the
 * wire into dead-letter reasons and result stores. A handler's defect is `BrokerError.HandlerDefect`.
 *
 * @since 0.1.0
 */
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-background/TaskError")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * A task was not enqueued. `invalid`: fix the input (payload, options; `cause` holds the
 * `InvalidOptions` or the encoding error); `rejected` / `unavailable`: the broker did not take it,
 * retry later (`ambiguous`: it may have been stored anyway); `no-queue`: no queue is bound to the
 * task yet; `key-store`: the key could not be checked, so nothing was sent.
 *
 * @since 0.1.0
 * @category errors
 */
export class EnqueueError extends Schema.TaggedError<EnqueueError>()("EnqueueError", {
  task: Schema.String,
  reason: Schema.Literal("invalid", "rejected", "unavailable", "no-queue", "key-store"),
  ambiguous: Schema.Boolean,
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `cannot enqueue task "${this.task}" (${this.reason}${
      this.ambiguous ? ", may have been stored" : ""
    }): ${this.detail}`
  }
}

/**
 * A task's result could not be had. `wait-timeout`: not finished within the wait; `no-store` /
 * `store-unavailable`: results are not kept or the store is down; `malformed`: the stored
 * result does not decode with the task's Schemas; `task-timeout` / `task-defect`: the task's
 * last attempt timed out or died (an untyped failure) and no retries were left.
 *
 * @since 0.1.0
 * @category errors
 */
export class ResultError extends Schema.TaggedError<ResultError>()("ResultError", {
  task: Schema.String,
  id: Schema.String,
  reason: Schema.Literal("wait-timeout", "no-store", "store-unavailable", "malformed", "task-timeout", "task-defect"),
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `no result for task "${this.task}" (${this.id}): ${this.reason}: ${this.detail}`
  }
}

/**
 * A result store operation failed (database down, connection lost). Retrying later may succeed.
 *
 * @since 0.1.0
 * @category errors
 */
export class ResultStoreError extends Schema.TaggedError<ResultStoreError>()("ResultStoreError", {
  operation: Schema.String,
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `result store ${this.operation} failed: ${this.detail}`
  }
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
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `task "${this.task}" (${this.id}) attempt ${this.attempt} exceeded its timeout of ${this.timeoutMillis} ms`
  }
}

/**
 * @since 0.1.0
 * @category errors
 */
export type TaskError = EnqueueError | ResultError | ResultStoreError | TaskTimeout

/**
 * @since 0.1.0
 * @category guards
 */
export const isTaskError = (u: unknown): u is TaskError => Predicate.hasProperty(u, TypeId)

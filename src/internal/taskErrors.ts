import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

/**
 * @since 0.1.0
 * @category type ids
 */
export const ErrorTypeId: unique symbol = Symbol.for("effect-background/TaskQueue/Error")

/**
 * @since 0.1.0
 * @category type ids
 */
export type ErrorTypeId = typeof ErrorTypeId

/**
 * A task was not enqueued. `invalid`: fix the input (payload, options); `rejected` /
 * `unavailable`: the broker did not take it, retry later (`ambiguous`: it may have been stored
 * anyway); `no-queue`: no queue is bound to the task yet; `key-store`: the key could not be
 * checked, so nothing was sent.
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
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `cannot enqueue task "${this.task}" (${this.reason}${this.ambiguous ? ", may have been stored" : ""}): ${this.detail}`
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
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `no result for task "${this.task}" (${this.id}): ${this.reason}: ${this.detail}`
  }
}

/**
 * A result store operation failed (database down, connection lost).
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
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `result store ${this.operation} failed: ${this.detail}`
  }
}

/**
 * @since 0.1.0
 * @category guards
 */
export const isTaskQueueError = (u: unknown): u is EnqueueError | ResultError | ResultStoreError =>
  Predicate.hasProperty(u, ErrorTypeId)

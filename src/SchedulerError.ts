/**
 * Tagged errors of the Scheduler: a schedule definition that can never work, and a lease store
 * that failed. A bad `Scheduler.Options` / `PgLease.Options` value is an `InvalidOptions`.
 *
 * @since 0.1.0
 */
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-background/SchedulerError")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * A schedule definition that can never work: a bad cron field, an unknown time zone, a
 * non-positive interval, a one-shot in the past, a duplicate name. Reported when the Scheduler's
 * Layer is built (or by `Trigger.validate`, `Trigger.toSchedule`, `Scheduler.validate`), never at
 * fire time.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidSchedule extends Schema.TaggedError<InvalidSchedule>()("InvalidSchedule", {
  /** The schedule's name (`"(trigger)"` for a trigger checked on its own). */
  schedule: Schema.String,
  /** Which part is wrong: `cron`, `cron.minute`, `tz`, `offset`, `interval`, `at`, `name`, `missed.max`, `triggers[1].cron.hour`… */
  field: Schema.String,
  value: Schema.String,
  reason: Schema.String
}) {
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `invalid schedule "${this.schedule}": ${this.field} ${JSON.stringify(this.value)} ${this.reason}`
  }
}

/**
 * The lease store failed (e.g. PostgreSQL unreachable). The scheduler retries; it keeps firing only
 * while its last successful renewal is younger than the lease ttl.
 *
 * @since 0.1.0
 * @category errors
 */
export class LeaseError extends Schema.TaggedError<LeaseError>()("LeaseError", {
  operation: Schema.Literal("setup", "acquire", "release", "claim", "mark", "state"),
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `scheduler lease ${this.operation} failed: ${this.detail}`
  }
}

/**
 * @since 0.1.0
 * @category errors
 */
export type SchedulerError = InvalidSchedule | LeaseError

/**
 * @since 0.1.0
 * @category guards
 */
export const isSchedulerError = (u: unknown): u is SchedulerError => Predicate.hasProperty(u, TypeId)

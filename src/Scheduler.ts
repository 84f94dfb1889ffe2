/**
 * Cron, interval and one-shot schedules that enqueue Tasks. The Scheduler never runs task bodies:
 * each firing enqueues the schedule's Task with the key `${name}@${slotIso}`. With several
 * replicas exactly one fires, through a `SchedulerLease` (`SchedulerLease.layerMemory` in one
 * process, `layers/PgLease` across processes); every slot is claimed in the lease store before it
 * is enqueued, so a takeover never fires a slot twice. Triggers come from the `Trigger` module.
 *
 * Bad input is reported when the Layer is built, never at fire time: a schedule definition fails
 * with `SchedulerError.InvalidSchedule` naming the schedule and field, an option of {@link Options}
 * with `InvalidOptions` (module `"Scheduler"`). Definitions themselves never throw.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as runtime from "./internal/scheduler/runtime.js"
import * as internal from "./internal/scheduler/scheduler.js"
import type { InvalidOptions } from "./InvalidOptions.js"
import type { InvalidSchedule } from "./SchedulerError.js"
import type { SchedulerLease } from "./SchedulerLease.js"
import type * as Task from "./Task.js"
import type * as TaskQueue from "./TaskQueue.js"
import type { Trigger } from "./Trigger.js"

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

// ---------------------------------------------------------------------------
// definitions
// ---------------------------------------------------------------------------

/**
 * What to do with slots that passed while no scheduler fired (downtime, takeover, a stalled
 * process): `skip` them, or `catchUp` the latest `max` of them at once.
 *
 * @since 0.1.0
 * @category models
 */
export type MissedPolicy = { readonly _tag: "Skip" } | { readonly _tag: "CatchUp"; readonly max: number }

/**
 * @since 0.1.0
 * @category constructors
 */
export const skip: MissedPolicy = { _tag: "Skip" }

/**
 * Catches up the latest `max` missed slots (a positive integer, checked at Layer build).
 *
 * @since 0.1.0
 * @category constructors
 */
export const catchUp = (options: { readonly max: number }): MissedPolicy => ({ _tag: "CatchUp", max: options.max })

/**
 * A named schedule: a trigger kicking a Task. Build with {@link schedule}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Definition<E = never, R = never> {
  readonly [TypeId]: TypeId
  readonly name: string
  readonly task: Task.Any
  readonly trigger: Trigger
  readonly missed: MissedPolicy
  readonly overlap: "allow" | "skip"
  readonly priority: number | undefined
  /** Enqueues one firing. @internal */
  readonly enqueue: (queue: TaskQueue.Service, key: string) => Effect.Effect<unknown, E | TaskQueue.EnqueueError, R>
  /**
   * Enqueues one firing; succeeds with an effect telling whether that task has finished.
   *
   * @internal
   */
  readonly enqueueTracked: (
    queue: TaskQueue.Service,
    key: string
  ) => Effect.Effect<Effect.Effect<boolean, TaskQueue.ResultError>, E | TaskQueue.EnqueueError, R>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ScheduleOptions<P, E, R> {
  /** When it fires: `Trigger.cron`, `Trigger.interval`, `Trigger.at` or `Trigger.combine`. */
  readonly trigger: Trigger
  /** The payload, or an Effect computing it at each firing. */
  readonly payload: P | Effect.Effect<P, E, R>
  /** Default {@link skip}. */
  readonly missed?: MissedPolicy | undefined
  /**
   * `"skip"`: do not enqueue while the previous firing's task has not finished (polled through the
   * TaskQueue's result store; tracked per process, so it starts fresh after a takeover).
   * Default `"allow"`.
   */
  readonly overlap?: "allow" | "skip" | undefined
  /** The task's priority, 0-255. */
  readonly priority?: number | undefined
}

/**
 * Names a schedule and ties a trigger to a Task and its payload. Never throws: the name, the
 * policies and the trigger are checked when the Scheduler's Layer is built (or by
 * {@link validate}), failing with `InvalidSchedule` naming the schedule and the field.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Scheduler, Task, Trigger } from "effect-background"
 *
 * const report = Task.make("nightly_report", { payload: Schema.Struct({ day: Schema.String }) })
 *
 * export const nightly = Scheduler.schedule("nightly-report", report, {
 *   trigger: Trigger.cron("0 2 * * *", { tz: "Europe/Berlin" }),
 *   payload: { day: "yesterday" },
 *   missed: Scheduler.catchUp({ max: 1 })
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const schedule = <Name extends string, P, S, F, E = never, R = never>(
  name: string,
  task: Task.Task<Name, P, S, F>,
  options: ScheduleOptions<P, E, R>
): Definition<E, R> => {
  const priority = options.priority
  const payload = options.payload
  const enqueue: (
    queue: TaskQueue.Service,
    key: string
  ) => Effect.Effect<TaskQueue.TaskHandle<S, F>, E | TaskQueue.EnqueueError, R> = Effect.isEffect(payload)
    ? (queue, key) =>
      Effect.flatMap(
        payload as Effect.Effect<P, E, R>,
        (p) => queue.enqueue(task, p, priority === undefined ? { key } : { key, priority })
      )
    : (queue, key) => queue.enqueue(task, payload as P, priority === undefined ? { key } : { key, priority })
  return {
    [TypeId]: TypeId,
    name,
    task,
    trigger: options.trigger,
    missed: options.missed ?? skip,
    overlap: options.overlap ?? "allow",
    priority,
    enqueue,
    enqueueTracked: (queue, key) =>
      Effect.map(
        enqueue(queue, key),
        (handle) => Effect.map(Effect.suspend(() => queue.poll(handle)), Option.isSome)
      )
  }
}

/**
 * Checks definitions as the Layer does at build (names, policies, priority, triggers against
 * `Clock`), without starting anything.
 *
 * @since 0.1.0
 * @category constructors
 */
export const validate = (
  definitions: Iterable<Definition<unknown, unknown>>
): Effect.Effect<void, InvalidSchedule> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const result = internal.compileAll(definitions, now)
    return Either.isLeft(result) ? Effect.fail(result.left) : Effect.void
  })

/**
 * The idempotency key of a slot, also the task's dedup key: `${name}@${slotIso}`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const slotKey = (name: string, slot: number): string => `${name}@${new Date(slot).toISOString()}`

// ---------------------------------------------------------------------------
// running
// ---------------------------------------------------------------------------

/**
 * Every option is checked when the Layer is built; a bad value fails it with `InvalidOptions`
 * (module `"Scheduler"`, field the option's name).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long a lease lasts without renewal (positive); the standby takes over at most this (+ `renewEvery`) after the leader dies. Default 10 seconds. */
  readonly leaseTtl?: Duration.DurationInput | undefined
  /** Renewal / standby polling period, positive and shorter than `leaseTtl`. Default a third of `leaseTtl`. */
  readonly renewEvery?: Duration.DurationInput | undefined
  /** A slot more overdue than this (zero or more) is "missed" and follows the schedule's policy. Default 1 second. */
  readonly grace?: Duration.DurationInput | undefined
  /** Enqueues in flight at once, a positive integer. Default 64. */
  readonly concurrency?: number | undefined
  /** This replica's id in the lease store, 1-200 characters. Default a random id. */
  readonly owner?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ScheduleStatus {
  readonly name: string
  readonly nextFire: Option.Option<Date>
  readonly lastFired: Option.Option<Date>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Status {
  readonly owner: string
  readonly role: "leader" | "standby"
  readonly schedules: ReadonlyArray<ScheduleStatus>
}

/**
 * A running scheduler.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly [TypeId]: TypeId
  /** Leader or standby, and each schedule's next fire (known while leading) and last fired slot. */
  readonly status: Effect.Effect<Status>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Scheduler extends Context.Tag("effect-background/Scheduler")<Scheduler, Service>() {}

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category models
 */
export const defaults: {
  readonly leaseTtl: Duration.Duration
  readonly grace: Duration.Duration
  readonly concurrency: number
} = internal.defaults

/**
 * Starts the schedules: checks the options (`InvalidOptions`) and the definitions
 * (`InvalidSchedule`), then campaigns for the lease and fires while leading, until the Scope
 * closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: <E, R>(
  definitions: Iterable<Definition<E, R>>,
  options?: Options
) => Effect.Effect<
  Service,
  InvalidSchedule | InvalidOptions,
  Scope.Scope | SchedulerLease | TaskQueue.TaskQueue | R
> = internal.make

/**
 * The scheduler as a Layer for an app: fires in the background until the Layer is released.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <E, R>(
  definitions: Iterable<Definition<E, R>>,
  options?: Options
): Layer.Layer<never, InvalidSchedule | InvalidOptions, SchedulerLease | TaskQueue.TaskQueue | R> =>
  Layer.scopedDiscard(make(definitions, options))

/**
 * Like {@link layer}, also providing the running {@link Scheduler} for health checks.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerService = <E, R>(
  definitions: Iterable<Definition<E, R>>,
  options?: Options
): Layer.Layer<Scheduler, InvalidSchedule | InvalidOptions, SchedulerLease | TaskQueue.TaskQueue | R> =>
  Layer.scoped(Scheduler, make(definitions, options))

/**
 * The scheduler as the main effect of a dedicated process: `Effect.runFork(Scheduler.run(...))`.
 * Runs until interrupted; interrupting releases the lease.
 *
 * @since 0.1.0
 * @category constructors
 */
export const run = <E, R>(
  definitions: Iterable<Definition<E, R>>,
  options?: Options
): Effect.Effect<never, InvalidSchedule | InvalidOptions, SchedulerLease | TaskQueue.TaskQueue | R> =>
  Effect.scoped(Effect.zipRight(make(definitions, options), Effect.never))

/**
 * Effect metrics: `effect_background_scheduler_firings_total`, `…_firing_failures_total`,
 * `…_skipped_total`, the `…_lateness_seconds` histogram and the `…_leader` gauge.
 *
 * @since 0.1.0
 * @category models
 */
export const metrics = runtime.metrics

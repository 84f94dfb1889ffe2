/**
 * Cron, interval and one-shot schedules that enqueue Tasks. The Scheduler never runs task bodies:
 * each firing enqueues the schedule's Task with the key `${name}@${slotIso}`. With several
 * replicas exactly one fires, through a {@link Lease} (`Scheduler.layerLeaseMemory` in one
 * process, `layers/PgLease` across processes); every slot is claimed in the lease store before it
 * is enqueued, so a takeover never fires a slot twice.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as leaseMemory from "./internal/scheduler/leaseMemory.js"
import * as runtime from "./internal/scheduler/runtime.js"
import * as trigger from "./internal/scheduler/trigger.js"
import type * as Task from "./Task.js"
import * as TaskQueue from "./TaskQueue.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-background/Scheduler")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

/**
 * A schedule definition that can never work: a bad cron field, an unknown time zone, a
 * non-positive interval, a one-shot in the past, a duplicate name. Raised at Layer build (or by
 * {@link validate}), never at fire time.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidSchedule extends Schema.TaggedError<InvalidSchedule>()("InvalidSchedule", {
  /** The schedule's name. */
  schedule: Schema.String,
  /** Which part is wrong: `cron`, `cron.minute`, `tz`, `offset`, `interval`, `at`, `name`, `missed.max`, `triggers[1].cron.hour`… */
  field: Schema.String,
  value: Schema.String,
  reason: Schema.String
}) {
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
  override get message(): string {
    return `scheduler lease ${this.operation} failed: ${this.detail}`
  }
}

// ---------------------------------------------------------------------------
// triggers
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface Cron {
  readonly _tag: "Cron"
  readonly expression: string
  readonly tz: string | undefined
  readonly offset: string | Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Interval {
  readonly _tag: "Interval"
  readonly every: Duration.DurationInput
  /** Slots are `anchor + k·every`; default the Unix epoch, so `interval("1 hour")` fires on whole hours UTC. */
  readonly anchor: Date | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface At {
  readonly _tag: "At"
  readonly at: Date
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Combined {
  readonly _tag: "Combined"
  readonly triggers: ReadonlyArray<Trigger>
}

/**
 * When a schedule fires. Every trigger is also an Effect `Schedule` ({@link toSchedule}).
 *
 * @since 0.1.0
 * @category models
 */
export type Trigger = Cron | Interval | At | Combined

/**
 * @since 0.1.0
 * @category models
 */
export interface CronOptions {
  /** An IANA time zone (`"Europe/Berlin"`); default UTC. DST gaps fire once, after the gap; repeated hours fire once, on the first pass. */
  readonly tz?: string | undefined
  /** A fixed UTC offset: `"-03:00"`, `"+05:30"`, a Duration east of UTC, or `"-3 hours"`. */
  readonly offset?: string | Duration.DurationInput | undefined
}

/**
 * A cron trigger (cron-parser syntax): 5 fields, or 6 with seconds first; ranges, steps, lists,
 * names (`MON-FRI`, `JAN`), `L` (last day of month / last weekday `5L`), `#` (`1#2`, second
 * Monday), nicknames (`@daily`, `@hourly`, `@weekly`, `@monthly`, `@yearly`, `@weekdays`, …).
 *
 * @example
 * ```ts
 * import { Scheduler } from "effect-background"
 *
 * const weekdayMornings = Scheduler.cron("30 8 * * MON-FRI", { tz: "Europe/Berlin" })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const cron = (expression: string, options?: CronOptions): Cron => ({
  _tag: "Cron",
  expression,
  tz: options?.tz,
  offset: options?.offset
})

/**
 * Fires every `every`, on slots aligned to `anchor` (default the Unix epoch).
 *
 * @since 0.1.0
 * @category constructors
 */
export const interval = (every: Duration.DurationInput, options?: { readonly anchor?: Date | undefined }): Interval => ({
  _tag: "Interval",
  every,
  anchor: options?.anchor
})

/**
 * Fires once, at `date` (must be in the future when the scheduler starts).
 *
 * @since 0.1.0
 * @category constructors
 */
export const at = (date: Date): At => ({ _tag: "At", at: date })

/**
 * Fires at every instant of any of `triggers`; an instant shared by several fires once.
 *
 * @since 0.1.0
 * @category constructors
 */
export const combine = (...triggers: ReadonlyArray<Trigger>): Combined => ({ _tag: "Combined", triggers })

/**
 * The trigger as an Effect `Schedule` that outputs each slot instant (epoch ms). Validated now.
 *
 * @since 0.1.0
 * @category combinators
 */
export const toSchedule = (
  self: Trigger,
  name = "(trigger)"
): Effect.Effect<Schedule.Schedule<number>, InvalidSchedule> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const compiled = trigger.compile(self, now)
    return Either.isLeft(compiled)
      ? Effect.fail(new InvalidSchedule({ schedule: name, ...compiled.left }))
      : Effect.succeed(trigger.toSchedule(compiled.right))
  })

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
  readonly priority?: number | undefined
}

/**
 * Names a schedule and ties a trigger to a Task and its payload.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Scheduler, Task } from "effect-background"
 *
 * const report = Task.make("nightly_report", { payload: Schema.Struct({ day: Schema.String }) })
 *
 * export const nightly = Scheduler.schedule("nightly-report", report, {
 *   trigger: Scheduler.cron("0 2 * * *", { tz: "Europe/Berlin" }),
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
    enqueue,
    enqueueTracked: (queue, key) =>
      Effect.map(
        enqueue(queue, key),
        (handle) => Effect.map(Effect.suspend(() => queue.poll(handle)), Option.isSome)
      )
  }
}

/**
 * Validates definitions as the Layer does at build: names, triggers, policies.
 *
 * @since 0.1.0
 * @category constructors
 */
export const validate = (
  definitions: Iterable<Definition<unknown, unknown>>
): Effect.Effect<void, InvalidSchedule> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const result = compileAll(definitions, now)
    return Either.isLeft(result) ? Effect.fail(result.left) : Effect.void
  })

const maxNameLength = 200

const compileAll = <E, R>(
  definitions: Iterable<Definition<E, R>>,
  now: number
): Either.Either<Array<{ readonly definition: Definition<E, R>; readonly next: trigger.Next }>, InvalidSchedule> => {
  const seen = new Set<string>()
  const memo: trigger.Memo = new Map()
  const out: Array<{ readonly definition: Definition<E, R>; readonly next: trigger.Next }> = []
  for (const d of definitions) {
    const fail = (field: string, value: string, reason: string) =>
      Either.left(new InvalidSchedule({ schedule: d.name, field, value, reason }))
    if (d.name.length === 0 || d.name.trim() !== d.name) return fail("name", d.name, "must be non-empty without surrounding whitespace")
    if (d.name.length > maxNameLength) return fail("name", d.name, `is longer than ${maxNameLength} characters`)
    if (seen.has(d.name)) return fail("name", d.name, "is used by two schedules")
    seen.add(d.name)
    if (d.missed._tag === "CatchUp" && (!Number.isInteger(d.missed.max) || d.missed.max < 1)) {
      return fail("missed.max", String(d.missed.max), "must be a positive integer")
    }
    const compiled = trigger.compile(d.trigger, now, memo)
    if (Either.isLeft(compiled)) return Either.left(new InvalidSchedule({ schedule: d.name, ...compiled.left }))
    out.push({ definition: d, next: compiled.right })
  }
  return Either.right(out)
}

/**
 * The idempotency key of a slot, also the task's dedup key: `${name}@${slotIso}`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const slotKey = (name: string, slot: number): string => {
  // Aligned schedules share slot instants: format each instant once, not once per schedule.
  if (slot !== lastSlot) {
    lastSlot = slot
    lastIso = new Date(slot).toISOString()
  }
  return `${name}@${lastIso}`
}
let lastSlot = Number.NaN
let lastIso = ""

// ---------------------------------------------------------------------------
// lease port
// ---------------------------------------------------------------------------

/**
 * A claim of the due slots of one schedule, `first`..`last` (epoch ms).
 *
 * @since 0.1.0
 * @category models
 */
export interface Claim {
  readonly schedule: string
  readonly first: number
  readonly last: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface FiredSlot {
  readonly schedule: string
  readonly slot: number
}

/**
 * The persisted progress of one schedule: the latest slot claimed, and the latest slot whose
 * enqueue succeeded.
 *
 * @since 0.1.0
 * @category models
 */
export interface SlotState {
  readonly schedule: string
  readonly claimed: number | undefined
  readonly fired: number | undefined
}

/**
 * Leadership plus per-schedule slot watermarks. Implementations: {@link layerLeaseMemory},
 * `layers/PgLease`.
 *
 * @since 0.1.0
 * @category models
 */
export interface LeaseService {
  /** Takes or renews the lease for `owner` for `ttlMillis`; true when `owner` holds it afterwards. */
  readonly acquire: (owner: string, ttlMillis: number) => Effect.Effect<boolean, LeaseError>
  /** Gives the lease up if `owner` holds it, so a standby takes over at once. */
  readonly release: (owner: string) => Effect.Effect<void, LeaseError>
  /**
   * Atomically, and only while `owner` holds an unexpired lease: for each claim whose `first` is
   * after the schedule's claimed watermark, moves the watermark to `last`. Returns the schedules
   * won. A slot is therefore claimed at most once, whatever the replicas do.
   */
  readonly claim: (owner: string, claims: ReadonlyArray<Claim>) => Effect.Effect<ReadonlyArray<string>, LeaseError>
  /** Raises the fired watermark of each schedule (enqueue succeeded). */
  readonly markFired: (owner: string, slots: ReadonlyArray<FiredSlot>) => Effect.Effect<void, LeaseError>
  /** The watermarks of those of `schedules` that ever claimed a slot. */
  readonly state: (schedules: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<SlotState>, LeaseError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Lease extends Context.Tag("effect-background/Scheduler/Lease")<Lease, LeaseService>() {}

/**
 * An in-process lease (time from `Clock`): one scheduler per process, or several sharing this
 * Layer's instance in tests.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeLeaseMemory: Effect.Effect<LeaseService> = leaseMemory.make

/**
 * @since 0.1.0
 * @category layers
 */
export const layerLeaseMemory: Layer.Layer<Lease> = Layer.effect(Lease, leaseMemory.make)

// ---------------------------------------------------------------------------
// running
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long a lease lasts without renewal; the standby takes over at most this (+ `renewEvery`) after the leader dies. Default 10 seconds. */
  readonly leaseTtl?: Duration.DurationInput | undefined
  /** Renewal / standby polling period. Default a third of `leaseTtl`. */
  readonly renewEvery?: Duration.DurationInput | undefined
  /** A slot more overdue than this is "missed" and follows the schedule's policy. Default 1 second. */
  readonly grace?: Duration.DurationInput | undefined
  /** Enqueues in flight at once. Default 64. */
  readonly concurrency?: number | undefined
  /** This replica's id in the lease store. Default a random id. */
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
 * @since 0.1.0
 * @category models
 */
export const defaults = {
  leaseTtl: Duration.seconds(10),
  grace: Duration.seconds(1),
  concurrency: 64
} as const

const toMillis = (d: Duration.DurationInput): number => Duration.toMillis(Duration.decode(d))

/**
 * Starts the schedules: validates them (failing with `InvalidSchedule`), then campaigns for the
 * lease and fires while leading, until the Scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <E, R>(
  definitions: Iterable<Definition<E, R>>,
  options?: Options
): Effect.Effect<Service, InvalidSchedule, Scope.Scope | Lease | TaskQueue.TaskQueue | R> =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const compiled = compileAll(definitions, now)
    if (Either.isLeft(compiled)) return yield* compiled.left
    const lease = yield* Lease
    const queue = yield* TaskQueue.TaskQueue
    const leaseTtl = toMillis(options?.leaseTtl ?? defaults.leaseTtl)
    const config: runtime.Config = {
      owner: options?.owner ?? `scheduler-${crypto.randomUUID()}`,
      leaseTtl,
      renewEvery: options?.renewEvery === undefined ? Math.max(1, Math.floor(leaseTtl / 3)) : toMillis(options.renewEvery),
      grace: toMillis(options?.grace ?? defaults.grace),
      concurrency: options?.concurrency ?? defaults.concurrency,
      maxEnumerate: 100_000
    }
    const entries = compiled.right.map(({ definition, next }): runtime.Entry<R> => {
      let running: Effect.Effect<boolean, TaskQueue.ResultError> | undefined
      const remember = (finished: Effect.Effect<boolean, TaskQueue.ResultError>) => {
        running = finished
      }
      const enqueue = (slot: number) =>
        Effect.map(definition.enqueueTracked(queue, slotKey(definition.name, slot)), remember)
      const fire = definition.overlap === "allow"
        ? (slot: number) => definition.enqueue(queue, slotKey(definition.name, slot))
        : (slot: number) =>
        Effect.suspend(() => {
          const previous = running
          if (previous === undefined) return enqueue(slot)
          return previous.pipe(
            Effect.flatMap((finished) =>
              finished
                ? enqueue(slot)
                : Effect.logInfo(`scheduler: "${definition.name}" still running, slot skipped (overlap: skip)`)
            )
          )
        })
      return {
        name: definition.name,
        next,
        missed: definition.missed,
        fire,
        nextAt: undefined,
        claimed: undefined,
        fired: undefined
      }
    })
    let role: runtime.Role = "standby"
    yield* runtime.leadership(entries, lease, config, (r) => {
      role = r
    })
    const toDate = (t: number | undefined) => (t === undefined ? Option.none() : Option.some(new Date(t)))
    return {
      [TypeId]: TypeId,
      status: Effect.sync((): Status => ({
        owner: config.owner,
        role,
        schedules: entries.map((e) => ({
          name: e.name,
          nextFire: role === "leader" ? toDate(e.nextAt) : Option.none(),
          lastFired: toDate(e.fired)
        }))
      }))
    }
  })

/**
 * The scheduler as a Layer for an app: fires in the background until the Layer is released.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <E, R>(
  definitions: Iterable<Definition<E, R>>,
  options?: Options
): Layer.Layer<never, InvalidSchedule, Lease | TaskQueue.TaskQueue | R> =>
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
): Layer.Layer<Scheduler, InvalidSchedule, Lease | TaskQueue.TaskQueue | R> => Layer.scoped(Scheduler, make(definitions, options))

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
): Effect.Effect<never, InvalidSchedule, Lease | TaskQueue.TaskQueue | R> =>
  Effect.scoped(Effect.zipRight(make(definitions, options), Effect.never))

/**
 * Effect metrics: `effect_background_scheduler_firings_total`, `…_firing_failures_total`,
 * `…_skipped_total`, the `…_lateness_ms` histogram and the `…_leader` gauge.
 *
 * @since 0.1.0
 * @category models
 */
export const metrics = runtime.metrics

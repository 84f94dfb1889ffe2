/**
 * When a schedule fires: cron expressions, fixed intervals, one-shots and their combination.
 * Triggers are plain data (no service): every trigger is also an Effect `Schedule` driven by
 * `Clock` ({@link toSchedule}), so `TestClock` moves it.
 *
 * Constructors never throw. A trigger is checked where a typed failure can be returned: by the
 * Scheduler's Layer at build (with the schedule's name and `Clock`'s time), by {@link toSchedule},
 * and synchronously by {@link validate}. Every check fails with `SchedulerError.InvalidSchedule`
 * naming the field (`cron.hour`, `tz`, `interval`, `triggers[1].at`…), never at fire time.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Schedule from "effect/Schedule"
import * as internal from "./internal/scheduler/trigger.js"
import { InvalidSchedule } from "./SchedulerError.js"

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
 * When a schedule fires.
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
 * @since 0.1.0
 * @category models
 */
export interface IntervalOptions {
  /** Slots are `anchor + k·every`; default the Unix epoch. */
  readonly anchor?: Date | undefined
}

/**
 * A cron trigger (cron-parser syntax): 5 fields, or 6 with seconds first; ranges, steps, lists,
 * names (`MON-FRI`, `JAN`), `L` (last day of month / last weekday `5L`), `#` (`1#2`, second
 * Monday), nicknames (`@daily`, `@hourly`, `@weekly`, `@monthly`, `@yearly`, `@weekdays`, …).
 * Stricter than cron-parser: `""`, 4 or 7 fields, a day that never occurs (`0 0 31 2 *`) and an
 * unknown or padded zone are rejected with the field named.
 *
 * @example
 * ```ts
 * import { Trigger } from "effect-background"
 *
 * const weekdayMornings = Trigger.cron("30 8 * * MON-FRI", { tz: "Europe/Berlin" })
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
 * Fires every `every` (a positive, finite, whole number of milliseconds), on slots aligned to
 * `anchor` (default the Unix epoch), so replicas agree on slot instants.
 *
 * @since 0.1.0
 * @category constructors
 */
export const interval = (every: Duration.DurationInput, options?: IntervalOptions): Interval => ({
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
 * Fires at every instant of any of `triggers` (at least one); an instant shared by several fires
 * once.
 *
 * @since 0.1.0
 * @category constructors
 */
export const combine = (...triggers: ReadonlyArray<Trigger>): Combined => ({ _tag: "Combined", triggers })

/**
 * Checks a trigger synchronously, without throwing. With `now` (epoch ms or a Date) it also
 * checks what depends on time, as the Scheduler does at build: a one-shot must be in the future
 * and a cron must fire after `now`. `name` is the schedule named in the error (default
 * `"(trigger)"`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const validate = <T extends Trigger>(
  self: T,
  options?: { readonly now?: number | Date | undefined; readonly name?: string | undefined }
): Either.Either<T, InvalidSchedule> => {
  const now = options?.now
  const compiled = internal.compile(self, now instanceof Date ? now.getTime() : now)
  return Either.isLeft(compiled)
    ? Either.left(new InvalidSchedule({ schedule: options?.name ?? "(trigger)", ...compiled.left }))
    : Either.right(self)
}

/**
 * The trigger as an Effect `Schedule` that outputs each slot instant (epoch ms), checked now
 * against `Clock`; fails with `InvalidSchedule` naming `name` (default `"(trigger)"`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const toSchedule = (
  self: Trigger,
  name = "(trigger)"
): Effect.Effect<Schedule.Schedule<number>, InvalidSchedule> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const compiled = internal.compile(self, now)
    return Either.isLeft(compiled)
      ? Effect.fail(new InvalidSchedule({ schedule: name, ...compiled.left }))
      : Effect.succeed(internal.toSchedule(compiled.right))
  })

import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as Interval from "effect/ScheduleInterval"
import type * as Trigger from "../../Trigger.js"
import * as cron from "../cron.js"

/**
 * A trigger compiled to its next-fire function: the smallest slot instant strictly after `after`
 * (epoch ms), or undefined when the trigger is exhausted (a one-shot that fired).
 *
 * @internal
 */
export type Next = (after: number) => number | undefined

/** @internal */
export type Problem = cron.Problem

/** Compiled crons by expression and zone, shared within one scheduler. @internal */
export type Memo = Map<string, Next>

const problem = (field: string, value: string, reason: string): Either.Either<never, Problem> =>
  Either.left({ field, value, reason })

const compileInterval = (trigger: Trigger.Interval): Either.Either<Next, Problem> => {
  const decoded = Duration.decodeUnknown(trigger.every)
  if (decoded._tag === "None") {
    return problem("interval", String(trigger.every), "is not a Duration (e.g. \"30 seconds\", Duration.minutes(5))")
  }
  const every = Duration.toMillis(decoded.value)
  const shown = typeof trigger.every === "string" ? trigger.every : Duration.format(decoded.value)
  if (!Duration.isFinite(decoded.value)) return problem("interval", shown, "must be finite")
  if (every <= 0) return problem("interval", shown, "must be positive")
  if (!Number.isInteger(every)) return problem("interval", shown, "must be a whole number of milliseconds")
  const anchor = trigger.anchor === undefined
    ? 0
    : trigger.anchor instanceof Date
    ? trigger.anchor.getTime()
    : Number.NaN
  if (Number.isNaN(anchor)) return problem("interval.anchor", String(trigger.anchor), "is an invalid Date")
  // Slots are anchor + k·every for every k, so replicas agree on slot instants (and dedup keys).
  return Either.right((after) => anchor + (Math.floor((after - anchor) / every) + 1) * every)
}

const compileAt = (trigger: Trigger.At, now: number | undefined): Either.Either<Next, Problem> => {
  const at = trigger.at instanceof Date ? trigger.at.getTime() : Number.NaN
  if (Number.isNaN(at)) return problem("at", String(trigger.at), "is an invalid Date")
  if (now !== undefined && at <= now) {
    return problem("at", trigger.at.toISOString(), `is not in the future (now is ${new Date(now).toISOString()})`)
  }
  return Either.right((after) => (at > after ? at : undefined))
}

const prefixed = (prefix: string, p: Problem): Problem => ({ ...p, field: `${prefix}.${p.field}` })

const compileCombined = (
  trigger: Trigger.Combined,
  now: number | undefined,
  memo?: Memo
): Either.Either<Next, Problem> => {
  if (!Array.isArray(trigger.triggers)) return problem("triggers", String(trigger.triggers), "must be an array")
  if (trigger.triggers.length === 0) return problem("triggers", "[]", "combine needs at least one trigger")
  const nexts: Array<Next> = []
  for (let i = 0; i < trigger.triggers.length; i++) {
    const child = trigger.triggers[i]
    if (child === undefined) continue
    const compiled = compile(child, now, memo)
    if (Either.isLeft(compiled)) return Either.left(prefixed(`triggers[${i}]`, compiled.left))
    nexts.push(compiled.right)
  }
  return Either.right((after) => {
    let best: number | undefined
    for (const next of nexts) {
      const t = next(after)
      if (t !== undefined && (best === undefined || t < best)) best = t
    }
    return best
  })
}

/**
 * Validates a trigger and compiles its next-fire function. `now` is the Clock's time at Layer
 * build: it decides whether a one-shot is in the past and a cron ever fires; without it only
 * what does not depend on time is checked.
 *
 * @internal
 */
export const compile = (
  trigger: Trigger.Trigger,
  now: number | undefined,
  memo?: Memo
): Either.Either<Next, Problem> => {
  // Triggers are data a JavaScript caller may build by hand: an unknown shape is a Problem, not a crash.
  if (typeof trigger !== "object" || trigger === null) return problem("trigger", String(trigger), "is not a trigger")
  switch (trigger._tag) {
    case "Cron": {
      const offset = trigger.offset
      // Schedules with the same expression and zone share one compiled cron (and its cache).
      const key = typeof offset === "object" ? undefined : `${trigger.expression}\u0000${trigger.tz}\u0000${offset}`
      const cached = key === undefined ? undefined : memo?.get(key)
      if (cached !== undefined) return Either.right(cached)
      const compiled = Either.map(
        cron.parse(trigger.expression, { tz: trigger.tz, offset: trigger.offset }, now ?? 0),
        (spec) => spec.next
      )
      if (key !== undefined && memo !== undefined && Either.isRight(compiled)) memo.set(key, compiled.right)
      return compiled
    }
    case "Interval":
      return compileInterval(trigger)
    case "At":
      return compileAt(trigger, now)
    case "Combined":
      return compileCombined(trigger, now, memo)
    default:
      return problem("trigger", JSON.stringify(trigger), "is not a trigger (use Trigger.cron, interval, at or combine)")
  }
}

/**
 * The trigger as an Effect `Schedule` whose output is each slot instant (epoch ms): usable with
 * `Effect.repeat`/`Effect.schedule` and driven by `Clock`, so `TestClock` moves it.
 *
 * @internal
 */
export const toSchedule = (next: Next): Schedule.Schedule<number> =>
  Schedule.makeWithState<number, unknown, number>(Number.NEGATIVE_INFINITY, (now, _, last) => {
    const slot = next(Math.max(now, last))
    if (slot === undefined) return Effect.succeed([last, last, ScheduleDecision.done] as const)
    return Effect.succeed([slot, slot, ScheduleDecision.continueWith(Interval.after(slot))] as const)
  })

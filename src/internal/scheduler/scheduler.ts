import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import type * as Scheduler from "../../Scheduler.js"
import { InvalidSchedule } from "../../SchedulerError.js"
import { SchedulerLease } from "../../SchedulerLease.js"
import * as TaskQueue from "../../TaskQueue.js"
import * as checks from "../options.js"
import * as runtime from "./runtime.js"
import * as trigger from "./trigger.js"

/** @internal */
export const TypeId: Scheduler.TypeId = Symbol.for("effect-background/Scheduler") as Scheduler.TypeId

/** @internal */
export const defaults = {
  leaseTtl: Duration.seconds(10),
  grace: Duration.seconds(1),
  concurrency: 64
} as const

const maxNameLength = 200

/** @internal */
export interface Compiled<E, R> {
  readonly definition: Scheduler.Definition<E, R>
  readonly next: trigger.Next
}

/**
 * Checks every definition (name, policies, priority, trigger) and compiles its trigger; `now` is
 * the Clock's time at build. Schedules with the same cron expression and zone share one compiled
 * cron (the memo lives as long as this call's result, i.e. one scheduler).
 *
 * @internal
 */
export const compileAll = <E, R>(
  definitions: Iterable<Scheduler.Definition<E, R>>,
  now: number
): Either.Either<Array<Compiled<E, R>>, InvalidSchedule> => {
  const seen = new Set<string>()
  const memo: trigger.Memo = new Map()
  const out: Array<Compiled<E, R>> = []
  for (const d of definitions) {
    const fail = (field: string, value: string, reason: string) =>
      Either.left(new InvalidSchedule({ schedule: String(d.name), field, value, reason }))
    if (typeof d.name !== "string" || d.name.length === 0 || d.name.trim() !== d.name) {
      return fail("name", String(d.name), "must be non-empty without surrounding whitespace")
    }
    if (d.name.length > maxNameLength) return fail("name", d.name, `is longer than ${maxNameLength} characters`)
    if (d.name.includes("\u0000")) return fail("name", d.name, "must not contain U+0000")
    if (seen.has(d.name)) return fail("name", d.name, "is used by two schedules")
    seen.add(d.name)
    const missed: unknown = d.missed
    if (typeof missed !== "object" || missed === null || !("_tag" in missed)) {
      return fail("missed", String(missed), "must be Scheduler.skip or Scheduler.catchUp({ max })")
    }
    if (d.missed._tag === "CatchUp") {
      if (!Number.isInteger(d.missed.max) || d.missed.max < 1) {
        return fail("missed.max", String(d.missed.max), "must be a positive integer")
      }
    } else if (d.missed._tag !== "Skip") {
      return fail("missed", JSON.stringify(missed), "must be Scheduler.skip or Scheduler.catchUp({ max })")
    }
    if (d.overlap !== "allow" && d.overlap !== "skip") {
      return fail("overlap", String(d.overlap), "must be \"allow\" or \"skip\"")
    }
    const priority = d.priority
    if (priority !== undefined && (!Number.isInteger(priority) || priority < 0 || priority > 255)) {
      return fail("priority", String(priority), "must be an integer from 0 to 255")
    }
    const compiled = trigger.compile(d.trigger, now, memo)
    if (Either.isLeft(compiled)) return Either.left(new InvalidSchedule({ schedule: d.name, ...compiled.left }))
    out.push({ definition: d, next: compiled.right })
  }
  return Either.right(out)
}

/**
 * `checks.duration` for a Scheduler option, refusing a negative input first: effect's Duration
 * reads `-1`, `"-1 seconds"` and `-1n` as zero, which would turn a sign typo into "no grace".
 */
const duration = (
  field: string,
  value: Duration.DurationInput | undefined,
  rule: Parameters<typeof checks.duration>[3]
): checks.Checked<Duration.Duration> => {
  const negative = (typeof value === "number" && value < 0) ||
    (typeof value === "bigint" && value < BigInt(0)) ||
    (typeof value === "string" && value.trim().startsWith("-")) ||
    (Array.isArray(value) && (value[0] < 0 || value[1] < 0))
  return negative
    ? Either.left(checks.invalid("Scheduler", field, value, "must not be negative"))
    : checks.duration("Scheduler", field, value, rule)
}

const owner = (value: string | undefined): checks.Checked<string | undefined> =>
  value === undefined ||
    (typeof value === "string" && value.length > 0 && value.length <= 200 && !value.includes("\u0000"))
    ? Either.right(value)
    : Either.left(checks.invalid("Scheduler", "owner", value, "must be 1-200 characters without U+0000"))

/**
 * The options with defaults applied, each checked; a bad one is the `InvalidOptions` naming it.
 *
 * @internal
 */
export const config = (options: Scheduler.Options | undefined) =>
  Effect.gen(function*() {
    const checked = yield* Either.all({
      leaseTtl: duration("leaseTtl", options?.leaseTtl, { fallback: defaults.leaseTtl, positive: true }),
      renewEvery: duration("renewEvery", options?.renewEvery, { fallback: Duration.zero, positive: true }),
      grace: duration("grace", options?.grace, { fallback: defaults.grace }),
      concurrency: checks.integer("Scheduler", "concurrency", options?.concurrency, {
        min: 1,
        fallback: defaults.concurrency
      }),
      owner: owner(options?.owner)
    })
    const leaseTtl = Duration.toMillis(checked.leaseTtl)
    const renewEvery = options?.renewEvery === undefined
      ? Math.max(1, Math.floor(leaseTtl / 3))
      : Duration.toMillis(checked.renewEvery)
    // A renewal period as long as the lease lets the lease lapse between two renewals.
    if (renewEvery >= leaseTtl) {
      return yield* checks.invalid("Scheduler", "renewEvery", options?.renewEvery, "must be shorter than leaseTtl")
    }
    return {
      owner: checked.owner ?? `scheduler-${crypto.randomUUID()}`,
      leaseTtl,
      renewEvery,
      grace: Duration.toMillis(checked.grace),
      concurrency: checked.concurrency,
      maxEnumerate: 100_000
    } satisfies runtime.Config
  })

/**
 * `${name}@${slotIso}` with the ISO text of the last slot kept: aligned schedules share slot
 * instants, so each instant is formatted once, not once per schedule. One per scheduler.
 */
const slotKeys = (): (name: string, slot: number) => string => {
  let lastSlot = Number.NaN
  let lastIso = ""
  return (name, slot) => {
    if (slot !== lastSlot) {
      lastSlot = slot
      lastIso = new Date(slot).toISOString()
    }
    return `${name}@${lastIso}`
  }
}

/** The firing of one definition, honouring its overlap policy. */
const firing = <E, R>(
  definition: Scheduler.Definition<E, R>,
  queue: TaskQueue.Service,
  keyOf: (name: string, slot: number) => string
): Effect.Effect<(slot: number) => Effect.Effect<unknown, unknown, R>> => {
  if (definition.overlap === "allow") {
    return Effect.succeed((slot) => definition.enqueue(queue, keyOf(definition.name, slot)))
  }
  // overlap "skip": the previous firing's "has it finished" check, per process.
  return Effect.map(
    Ref.make<Option.Option<Effect.Effect<boolean, TaskQueue.ResultError>>>(Option.none()),
    (running) => {
      const enqueue = (slot: number) =>
        Effect.flatMap(
          definition.enqueueTracked(queue, keyOf(definition.name, slot)),
          (finished) => Ref.set(running, Option.some(finished))
        )
      return (slot: number) =>
        Effect.flatMap(Ref.get(running), (previous) =>
          Option.match(previous, {
            onNone: () => enqueue(slot),
            onSome: (finished) =>
              Effect.flatMap(finished, (done) =>
                done
                  ? enqueue(slot)
                  : Effect.logInfo(`scheduler: "${definition.name}" still running, slot skipped (overlap: skip)`))
          }))
    }
  )
}

/** @internal */
export const make = Effect.fnUntraced(function*<E, R>(
  definitions: Iterable<Scheduler.Definition<E, R>>,
  options: Scheduler.Options | undefined
) {
  const settings = yield* config(options)
  const now = yield* Clock.currentTimeMillis
  const compiled = yield* compileAll(definitions, now)
  const lease = yield* SchedulerLease
  const queue = yield* TaskQueue.TaskQueue
  const keyOf = slotKeys()
  const entries: Array<runtime.Entry<R>> = []
  for (const { definition, next } of compiled) {
    entries.push({
      name: definition.name,
      next,
      missed: definition.missed,
      fire: yield* firing(definition, queue, keyOf),
      nextAt: undefined,
      claimed: undefined,
      fired: undefined
    })
  }
  const role = yield* Ref.make<runtime.Role>("standby")
  yield* runtime.leadership(entries, lease, settings, (r) => Ref.set(role, r))
  const toDate = (t: number | undefined) => (t === undefined ? Option.none() : Option.some(new Date(t)))
  const service: Scheduler.Service = {
    [TypeId]: TypeId,
    status: Effect.map(Ref.get(role), (r): Scheduler.Status => ({
      owner: settings.owner,
      role: r,
      schedules: entries.map((e) => ({
        name: e.name,
        nextFire: r === "leader" ? toDate(e.nextAt) : Option.none(),
        lastFired: toDate(e.fired)
      }))
    }))
  }
  return service
})

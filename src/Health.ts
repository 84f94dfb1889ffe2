/**
 * Health aggregation: named checks (the Broker's `health`, outbox lag, scheduler leadership,
 * workers) combined into one report that is `down` when any check is down, plus the Effect
 * metrics in the Prometheus text format.
 *
 * This module loads only `effect`. The HTTP routes (`GET /health`, `GET /metrics`) live in
 * `effect-background/HealthHttp` (needs `@effect/platform`) and the database ping in
 * `effect-background/HealthSql` (needs `@effect/sql`).
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import * as Broker from "./Broker.js"
import * as optionChecks from "./internal/options.js"
import * as prometheus from "./internal/prometheus.js"
import type { InvalidOptions } from "./InvalidOptions.js"
import * as Outbox from "./Outbox.js"
import * as Scheduler from "./Scheduler.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-background/Health")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * @since 0.1.0
 * @category models
 */
export type Status = "up" | "down"

/**
 * What a check returns. Extra fields (a broker's `connection`, an outbox's `pending`) are kept
 * in the report as they are.
 *
 * @since 0.1.0
 * @category models
 */
export interface CheckResult {
  readonly status: Status
  readonly detail?: string | undefined
}

/**
 * A named probe. A failure, a defect or a timeout counts as `down`, with the reason as detail.
 *
 * @since 0.1.0
 * @category models
 */
export type Check<R = never> = Effect.Effect<CheckResult, unknown, R>

/**
 * One check in a report: its result plus how long it took.
 *
 * @since 0.1.0
 * @category models
 */
export interface CheckReport extends CheckResult {
  readonly durationMs: number
  readonly [field: string]: unknown
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Report {
  /** `down` when any check is down. */
  readonly status: Status
  readonly checks: Readonly<Record<string, CheckReport>>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** A check that takes longer is reported `down`. A positive, finite duration; default 5 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly [TypeId]: TypeId
  /** Runs every registered check concurrently. */
  readonly check: Effect.Effect<Report>
  /**
   * Adds a check for the lifetime of the Scope (a layer registers its own probe). A second
   * registration under the same name replaces the first while its Scope is open.
   */
  readonly register: (name: string, check: Check) => Effect.Effect<void, never, Scope.Scope>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Health extends Context.Tag("effect-background/Health")<Health, Service>() {}

const MODULE = "Health"

const describeError = (error: unknown): string => {
  if (typeof error === "string") return error
  if (Predicate.hasProperty(error, "message") && typeof error.message === "string") return error.message
  try {
    return JSON.stringify(error) ?? String(error)
  } catch {
    // Cyclic or BigInt-holding values: the report must still be produced.
    return String(error)
  }
}

const describeCause = (cause: Cause.Cause<unknown>): string =>
  Option.match(Cause.failureOption(cause), {
    onNone: () => Cause.pretty(cause).split("\n")[0] ?? "check died",
    onSome: describeError
  })

const runCheck = (check: Check, timeout: Duration.Duration): Effect.Effect<CheckReport> =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const exit = yield* check.pipe(Effect.timeoutOption(timeout), Effect.exit)
    const durationMs = (yield* Clock.currentTimeMillis) - start
    if (Exit.isFailure(exit)) {
      return { status: "down", detail: describeCause(exit.cause), durationMs } satisfies CheckReport
    }
    return Option.match(exit.value, {
      onNone: () => ({ status: "down", detail: `timed out after ${Duration.format(timeout)}`, durationMs }),
      onSome: (result): CheckReport => ({ ...result, durationMs })
    })
  })

/**
 * The services a record of checks needs.
 *
 * @since 0.1.0
 * @category models
 */
export type Requirements<Checks extends Readonly<Record<string, Check<unknown>>>> = [keyof Checks] extends [never]
  ? never
  : Effect.Effect.Context<Checks[keyof Checks]>

const validate = (
  initial: Readonly<Record<string, unknown>>,
  options: Options
): Either.Either<Duration.Duration, InvalidOptions> =>
  Either.gen(function*() {
    for (const [name, probe] of Object.entries(initial)) {
      if (!Effect.isEffect(probe)) {
        return yield* Either.left(
          optionChecks.invalid(MODULE, `checks.${name}`, probe, "must be an Effect (a Health.Check)")
        )
      }
    }
    return yield* optionChecks.duration(MODULE, "timeout", options.timeout, {
      fallback: Duration.seconds(5),
      positive: true
    })
  })

/**
 * Builds the service with an initial set of checks; the checks' requirements are captured here.
 * Fails with `InvalidOptions` when `options.timeout` is not a positive, finite duration or a
 * check is not an Effect.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const Checks extends Readonly<Record<string, Check<unknown>>> = {}>(
  checks?: Checks,
  options: Options = {}
): Effect.Effect<Service, InvalidOptions, Requirements<Checks>> =>
  Effect.gen(function*() {
    const initial: Readonly<Record<string, Check<unknown>>> = checks ?? {}
    const timeout = yield* validate(initial, options)
    const context = yield* Effect.context<Requirements<Checks>>()
    const registered = yield* Ref.make<ReadonlyMap<string, Check>>(
      new Map(
        Object.entries(initial).map(([name, probe]) =>
          // Each check needs a part of `Requirements<Checks>`, all of which `context` holds.
          [name, Effect.provide(probe as Check<Requirements<Checks>>, context)] as const
        )
      )
    )
    const check = Ref.get(registered).pipe(
      Effect.flatMap((current) =>
        Effect.forEach(
          current,
          ([name, probe]) => Effect.map(runCheck(probe, timeout), (report) => [name, report] as const),
          { concurrency: "unbounded" }
        )
      ),
      Effect.map((entries): Report => ({
        status: entries.some(([, report]) => report.status === "down") ? "down" : "up",
        checks: Object.fromEntries(entries)
      }))
    )
    const register = (name: string, probe: Check) =>
      Effect.acquireRelease(
        Ref.update(registered, (current) => new Map(current).set(name, probe)),
        () =>
          Ref.update(registered, (current) => {
            // A later registration under the same name owns the entry now: leave it.
            if (current.get(name) !== probe) return current
            const next = new Map(current)
            next.delete(name)
            return next
          })
      )
    return { [TypeId]: TypeId, check, register } satisfies Service
  })

/**
 * The service as a Layer; fails to build with `InvalidOptions` as {@link make} does.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <const Checks extends Readonly<Record<string, Check<unknown>>> = {}>(
  checks?: Checks,
  options: Options = {}
): Layer.Layer<Health, InvalidOptions, Requirements<Checks>> => Layer.effect(Health, make(checks, options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const check: Effect.Effect<Report, never, Health> = Effect.flatMap(Health, (health) => health.check)

/**
 * Registers a check for the lifetime of the Scope; its requirements are provided now.
 *
 * @since 0.1.0
 * @category accessors
 */
export const register = <R>(name: string, probe: Check<R>): Effect.Effect<void, never, Health | Scope.Scope | R> =>
  Effect.flatMap(
    Effect.context<R>(),
    (context) => Effect.flatMap(Health, (health) => health.register(name, Effect.provide(probe, context)))
  )

type BrokerHealth = Effect.Effect.Success<Context.Tag.Service<Broker.Broker>["health"]>

const brokerHealth: Effect.Effect<BrokerHealth, never, Broker.Broker> = Effect.flatMap(
  Broker.Broker,
  (broker) => broker.health
)

/**
 * The Broker's own health (connection, consumers).
 *
 * @since 0.1.0
 * @category constructors
 */
export const broker: Check<Broker.Broker> = brokerHealth

type OutboxStats = Context.Tag.Service<Outbox.Outbox>["stats"]

/**
 * The outbox's lag: `down` when the oldest pending event is older than `maxLag` (default 30 s),
 * with the outbox's `stats` figures in the report. A `maxLag` that is not a non-negative
 * duration makes the check fail with `InvalidOptions` (reported `down` with the reason).
 *
 * @since 0.1.0
 * @category constructors
 */
export const outbox = (
  options: { readonly maxLag?: Duration.DurationInput | undefined } = {}
): Effect.Effect<
  CheckResult & Effect.Effect.Success<OutboxStats>,
  Effect.Effect.Error<OutboxStats> | InvalidOptions,
  Outbox.Outbox
> =>
  Either.match(
    optionChecks.duration(MODULE, "outbox.maxLag", options.maxLag, { fallback: Duration.seconds(30), finite: false }),
    {
      onLeft: Effect.fail,
      onRight: (maxLag) => {
        const maxLagMs = Duration.toMillis(maxLag)
        return Effect.flatMap(Outbox.Outbox, (outbox) => outbox.stats).pipe(
          Effect.map((stats) => ({
            ...stats,
            status: stats.oldestPendingAgeMs > maxLagMs ? "down" as const : "up" as const,
            detail: `${stats.pending} pending (oldest ${stats.oldestPendingAgeMs} ms), ${stats.dead} dead`
          }))
        )
      }
    }
  )

/**
 * The scheduler's role. A standby is healthy (it takes over when the leader's lease lapses), so
 * this is `up` either way, with the role and each schedule's next fire in the report.
 *
 * @since 0.1.0
 * @category constructors
 */
export const scheduler: Effect.Effect<
  CheckResult & {
    readonly role: "leader" | "standby"
    readonly schedules: ReadonlyArray<{ readonly name: string; readonly nextFire: string | null }>
  },
  never,
  Scheduler.Scheduler
> = Effect.flatMap(Scheduler.Scheduler, (s) => s.status).pipe(
  Effect.map((status) => ({
    status: "up" as const,
    detail: status.role,
    role: status.role,
    schedules: status.schedules.map((schedule) => ({
      name: schedule.name,
      nextFire: Option.match(schedule.nextFire, { onNone: () => null, onSome: (date) => date.toISOString() })
    }))
  }))
)

/**
 * Workers and subscribers: `down` unless the broker is up with at least `minimum` consumers
 * attached in this process. A `minimum` that is not a non-negative integer makes the check fail
 * with `InvalidOptions` (reported `down` with the reason).
 *
 * @since 0.1.0
 * @category constructors
 */
export const consumers = (minimum: number): Check<Broker.Broker> =>
  Either.match(optionChecks.integer(MODULE, "consumers.minimum", minimum, { min: 0, fallback: 0 }), {
    onLeft: Effect.fail,
    onRight: (minimum) =>
      Effect.map(brokerHealth, (health) => ({
        status: health.status === "up" && health.consumers >= minimum ? "up" as const : "down" as const,
        detail: `${health.consumers} of ${minimum} consumers attached (${health.connection})`
      }))
  })

/**
 * The Prometheus text exposition (version 0.0.4) of every Effect metric in the registry.
 *
 * @since 0.1.0
 * @category accessors
 */
export const prometheusText: Effect.Effect<string> = Effect.map(Metric.snapshot, prometheus.format)

/**
 * Health aggregation: named checks (the Broker's `health`, outbox lag, scheduler leadership,
 * workers, a database ping) combined into one report that is `down` when any check is down,
 * served as `GET /health` (200 / 503 JSON) beside `GET /metrics` (Effect metrics in the
 * Prometheus text format) on an `@effect/platform` HttpRouter.
 *
 * @since 0.1.0
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import type * as Scope from "effect/Scope"
import * as Broker from "./Broker.js"
import * as Outbox from "./Outbox.js"
import * as Scheduler from "./Scheduler.js"
import * as prometheus from "./internal/prometheus.js"

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
  /** A check that takes longer is reported `down`. Default 5 seconds. */
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
  /** Adds a check for the lifetime of the Scope (a layer registers its own probe). */
  readonly register: (name: string, check: Check) => Effect.Effect<void, never, Scope.Scope>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Health extends Context.Tag("effect-background/Health")<Health, Service>() {}

const describeError = (error: unknown): string => {
  if (typeof error === "string") return error
  if (Predicate.hasProperty(error, "message") && typeof error.message === "string") return error.message
  return JSON.stringify(error) ?? String(error)
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
export type Requirements<Checks extends Readonly<Record<string, Check<unknown>>>> = Effect.Effect.Context<
  Checks[keyof Checks]
>

/**
 * Builds the service with an initial set of checks; the checks' requirements are captured here.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const Checks extends Readonly<Record<string, Check<unknown>>> = {}>(
  checks?: Checks,
  options: Options = {}
): Effect.Effect<Service, never, Requirements<Checks>> =>
  Effect.gen(function*() {
    const context = yield* Effect.context<Requirements<Checks>>()
    const timeout = Duration.decode(options.timeout ?? "5 seconds")
    const registered = new Map<string, Check>()
    for (const [name, check] of Object.entries(checks ?? {})) {
      // Each check needs a part of `Requirements<Checks>`, all of which `context` holds.
      registered.set(name, Effect.provide(check as Check<Requirements<Checks>>, context))
    }
    const check = Effect.suspend(() =>
      Effect.forEach(
        Array.from(registered),
        ([name, probe]) => Effect.map(runCheck(probe, timeout), (report) => [name, report] as const),
        { concurrency: "unbounded" }
      )
    ).pipe(
      Effect.map((entries): Report => ({
        status: entries.some(([, report]) => report.status === "down") ? "down" : "up",
        checks: Object.fromEntries(entries)
      }))
    )
    const register = (name: string, probe: Check) =>
      Effect.acquireRelease(
        Effect.sync(() => registered.set(name, probe)),
        () => Effect.sync(() => registered.delete(name))
      ).pipe(Effect.asVoid)
    return { [TypeId]: TypeId, check, register } satisfies Service
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = <const Checks extends Readonly<Record<string, Check<unknown>>> = {}>(
  checks?: Checks,
  options: Options = {}
): Layer.Layer<Health, never, Requirements<Checks>> => Layer.effect(Health, make(checks, options))

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

/**
 * The Broker's own health (connection, consumers).
 *
 * @since 0.1.0
 * @category constructors
 */
export const broker: Check<Broker.Broker> = Broker.health

/**
 * `SELECT 1` through the ambient `SqlClient`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const sql: Check<SqlClient.SqlClient> = Effect.flatMap(SqlClient.SqlClient, (client) => client`SELECT 1`).pipe(
  Effect.as({ status: "up", detail: "SELECT 1 answered" } satisfies CheckResult)
)

/**
 * The outbox's lag: `down` when the oldest pending event is older than `maxLag` (default 30 s),
 * with the `Outbox.stats` figures in the report.
 *
 * @since 0.1.0
 * @category constructors
 */
export const outbox = (
  options: { readonly maxLag?: Duration.DurationInput | undefined } = {}
): Effect.Effect<CheckResult & Outbox.Stats, SqlError, Outbox.Outbox> => {
  const maxLagMs = Duration.toMillis(Duration.decode(options.maxLag ?? "30 seconds"))
  return Effect.map(Outbox.stats, (stats) => ({
    ...stats,
    status: stats.oldestPendingAgeMs > maxLagMs ? "down" as const : "up" as const,
    detail: `${stats.pending} pending (oldest ${stats.oldestPendingAgeMs} ms), ${stats.dead} dead`
  }))
}

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
 * attached in this process.
 *
 * @since 0.1.0
 * @category constructors
 */
export const consumers = (minimum: number): Check<Broker.Broker> =>
  Effect.map(Broker.health, (health) => ({
    status: health.status === "up" && health.consumers >= minimum ? "up" : "down",
    detail: `${health.consumers} of ${minimum} consumers attached (${health.connection})`
  }))

/**
 * The Prometheus text exposition of every Effect metric in the registry.
 *
 * @since 0.1.0
 * @category accessors
 */
export const prometheusText: Effect.Effect<string> = Effect.map(Metric.snapshot, prometheus.format)

/**
 * `GET /health`: the report as JSON, status 200 when up and 503 when down.
 *
 * @since 0.1.0
 * @category accessors
 */
export const healthHandler: Effect.Effect<HttpServerResponse.HttpServerResponse, never, Health> = Effect.map(
  check,
  (report) => HttpServerResponse.unsafeJson(report, { status: report.status === "up" ? 200 : 503 })
)

/**
 * `GET /metrics`: Effect metrics in the Prometheus text format.
 *
 * @since 0.1.0
 * @category accessors
 */
export const metricsHandler: Effect.Effect<HttpServerResponse.HttpServerResponse> = Effect.map(
  prometheusText,
  (body) => HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
)

/**
 * A router with `GET /health` and `GET /metrics`; concatenate or mount it into the app's router.
 *
 * @since 0.1.0
 * @category accessors
 */
export const router: HttpRouter.HttpRouter<never, Health> = HttpRouter.empty.pipe(
  HttpRouter.get("/health", healthHandler),
  HttpRouter.get("/metrics", metricsHandler)
)

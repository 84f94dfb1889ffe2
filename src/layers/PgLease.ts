/**
 * The Scheduler's `SchedulerLease` on PostgreSQL through `@effect/sql`'s `SqlClient`: a lease row
 * with a deadline (not an advisory lock: a holder whose connection is blackholed cannot tell it
 * lost the lock while another session already took it), and one row per schedule holding its
 * claimed and fired slot watermarks. A claim moves the watermark only while the caller holds an
 * unexpired lease and only forward, in one statement, so no slot is ever claimed twice, even by
 * two replicas that both believe they lead.
 *
 * Give the `SqlClient` its own pool with an `applicationName` (e.g. `PgClient.layer({ url,
 * applicationName: "eb-lease" })`) so operators can see, and tests can terminate, its connections.
 *
 * Options are checked when the Layer is built: a bad one fails it with `InvalidOptions`
 * (module `"PgLease"`), before any SQL runs.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as checks from "../internal/options.js"
import type { InvalidOptions } from "../InvalidOptions.js"
import { LeaseError } from "../SchedulerError.js"
import * as SchedulerLease from "../SchedulerLease.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Prefix of the two tables (`<prefix>_lease`, `<prefix>_slots`): a plain SQL identifier of at most 40 characters. Default `"eb_scheduler"`. */
  readonly tablePrefix?: string | undefined
  /** Scheduler replicas compete within a group; several groups can share the tables. 1-200 characters without U+0000. Default `"default"`. */
  readonly group?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export const defaults = {
  tablePrefix: "eb_scheduler",
  group: "default"
} as const

const fail = (operation: LeaseError["operation"]) => (cause: SqlError.SqlError) =>
  new LeaseError({ operation, detail: cause.message, cause })

const checkGroup = (value: string | undefined): checks.Checked<string> => {
  if (value === undefined) return Either.right(defaults.group)
  return typeof value === "string" && value.length > 0 && value.length <= 200 && !value.includes("\u0000")
    ? Either.right(value)
    : Either.left(checks.invalid("PgLease", "group", value, "must be 1-200 characters without U+0000"))
}

const checkOptions = (options: Options | undefined) =>
  Either.all({
    tablePrefix: checks.sqlIdentifier("PgLease", "tablePrefix", options?.tablePrefix, defaults.tablePrefix),
    group: checkGroup(options?.group)
  })

interface SlotRow {
  readonly schedule: string
  readonly claimed: string | null
  readonly fired: string | null
}

const toNumber = (s: string | null): number | undefined => (s === null ? undefined : Number(s))

/**
 * Checks the options, creates the tables if needed (idempotent, serialised by a
 * transaction-scoped advisory lock) and returns the lease.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options?: Options
): Effect.Effect<SchedulerLease.Service, InvalidOptions | LeaseError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const { group, tablePrefix: prefix } = yield* checkOptions(options)
    const sql = yield* SqlClient.SqlClient
    const lease = sql(`${prefix}_lease`)
    const slots = sql(`${prefix}_slots`)

    yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql`select pg_advisory_xact_lock(hashtext(${`effect-background/scheduler/${prefix}`}))`
      yield* sql`create table if not exists ${lease} (
        grp text primary key,
        owner text not null,
        deadline timestamptz not null
      )`
      yield* sql`create table if not exists ${slots} (
        grp text not null,
        schedule text not null,
        claimed bigint not null,
        claimed_first bigint not null,
        fired bigint,
        updated_at timestamptz not null default now(),
        primary key (grp, schedule)
      )`
    })).pipe(Effect.mapError(fail("setup")))

    const service: SchedulerLease.Service = {
      acquire: (owner, ttlMillis) =>
        sql<{ owner: string }>`insert into ${lease} (grp, owner, deadline)
          values (${group}, ${owner}, now() + ${ttlMillis} * interval '1 millisecond')
          on conflict (grp) do update set owner = excluded.owner, deadline = excluded.deadline
          where ${lease}.owner = excluded.owner or ${lease}.deadline <= now()
          returning owner`.pipe(
          Effect.map((rows) => rows.length === 1),
          Effect.mapError(fail("acquire"))
        ),
      release: (owner) =>
        sql`delete from ${lease} where grp = ${group} and owner = ${owner}`.pipe(
          Effect.asVoid,
          Effect.mapError(fail("release"))
        ),
      claim: (owner, claims) =>
        claims.length === 0 ? Effect.succeed([]) : sql<{ schedule: string }>`
          insert into ${slots} (grp, schedule, claimed, claimed_first)
          select ${group}, c.schedule, c.last, c.first
          from unnest(${claims.map((c) => c.schedule)}::text[], ${claims.map((c) => String(c.first))}::bigint[],
                      ${claims.map((c) => String(c.last))}::bigint[]) as c(schedule, first, last)
          where exists (select 1 from ${lease} l where l.grp = ${group} and l.owner = ${owner} and l.deadline > now())
          on conflict (grp, schedule) do update
            set claimed = excluded.claimed, claimed_first = excluded.claimed_first, updated_at = now()
            where ${slots}.claimed < excluded.claimed_first
          returning schedule`.pipe(
          Effect.map((rows) => rows.map((r) => r.schedule)),
          Effect.mapError(fail("claim"))
        ),
      markFired: (_owner, fired) =>
        fired.length === 0 ? Effect.void : sql`
          update ${slots} s set fired = greatest(coalesce(s.fired, f.slot), f.slot), updated_at = now()
          from unnest(${fired.map((f) => f.schedule)}::text[], ${fired.map((f) => String(f.slot))}::bigint[])
            as f(schedule, slot)
          where s.grp = ${group} and s.schedule = f.schedule`.pipe(
          Effect.asVoid,
          Effect.mapError(fail("mark"))
        ),
      state: (schedules) =>
        sql<SlotRow>`select schedule, claimed::text as claimed, fired::text as fired from ${slots}
          where grp = ${group} and schedule = any(${schedules}::text[])`.pipe(
          Effect.map((rows) =>
            rows.map((r): SchedulerLease.SlotState => ({
              schedule: r.schedule,
              claimed: toNumber(r.claimed),
              fired: toNumber(r.fired)
            }))
          ),
          Effect.mapError(fail("state"))
        )
    }
    return service
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: Options
): Layer.Layer<SchedulerLease.SchedulerLease, InvalidOptions | LeaseError, SqlClient.SqlClient> =>
  Layer.effect(SchedulerLease.SchedulerLease, make(options))

/**
 * Reads `options` from `Config`, e.g. `PgLease.layerConfig({ tablePrefix: Config.string("SCHEDULER_TABLE_PREFIX") })`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<
  SchedulerLease.SchedulerLease,
  InvalidOptions | LeaseError | ConfigError.ConfigError,
  SqlClient.SqlClient
> => Layer.effect(SchedulerLease.SchedulerLease, Effect.flatMap(Config.unwrap(config), make))

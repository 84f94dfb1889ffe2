/**
 * A `ResultStore` on PostgreSQL through `@effect/sql`'s `SqlClient`: task results with
 * a TTL and deduplication key claims. Tables are created on Layer build (idempotent, under an
 * advisory lock so replicas can start together); expired rows are deleted by a background fiber
 * in bounded batches.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as checks from "../internal/options.js"
import type { InvalidOptions } from "../InvalidOptions.js"
import * as ResultStore from "../ResultStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Prefix of the tables (`<prefix>_task_results`, `<prefix>_task_keys`) and their indexes: a
   * plain SQL identifier of at most 39 characters. Default `"eb"`.
   */
  readonly prefix?: string | undefined
  /** How often expired results and keys are deleted: a finite, positive duration. Default 1 minute. */
  readonly sweepInterval?: Duration.DurationInput | undefined
  /** Rows deleted per sweep statement: an integer from 1 to 1,000,000. Default 1,000. */
  readonly sweepBatch?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export const defaults = {
  prefix: "eb",
  sweepInterval: Duration.minutes(1),
  sweepBatch: 1000
} as const

const module = "PgResultStore"

/** The longest derived name, `<prefix>_task_results_expires_at`, must fit PostgreSQL's 63 bytes. */
const maxPrefix = 63 - "_task_results_expires_at".length

const checkOptions = (options: Options | undefined) =>
  Either.all({
    prefix: Either.flatMap(
      checks.sqlIdentifier(module, "prefix", options?.prefix, defaults.prefix),
      (prefix) =>
        prefix.length <= maxPrefix
          ? Either.right(prefix)
          : Either.left(
            checks.invalid(
              module,
              "prefix",
              prefix,
              `at most ${maxPrefix} characters: PostgreSQL truncates longer index names`
            )
          )
    ),
    sweepInterval: checks.duration(module, "sweepInterval", options?.sweepInterval, {
      fallback: defaults.sweepInterval,
      positive: true
    }),
    sweepBatch: checks.integer(module, "sweepBatch", options?.sweepBatch, {
      min: 1,
      max: 1_000_000,
      fallback: defaults.sweepBatch
    })
  })

const storeError = (operation: string) => (error: SqlError.SqlError) =>
  new ResultStore.ResultStoreError({ operation, detail: error.message, cause: error })

const toNumber = (value: unknown): number => (typeof value === "number" ? value : Number(value))

interface ResultRow {
  readonly id: string
  readonly task: string
  readonly outcome: string
  readonly finished_at: string | number
  readonly expires_at: string | number
}

/**
 * Creates the tables if needed and returns the store; the sweeper lives as long as the Scope.
 * Fails with `InvalidOptions` (module `"PgResultStore"`) for a bad option, before any SQL runs.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options?: Options
): Effect.Effect<ResultStore.Service, SqlError.SqlError | InvalidOptions, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const { prefix, sweepBatch, sweepInterval } = yield* checkOptions(options)
    const sql = yield* SqlClient.SqlClient
    const results = sql(`${prefix}_task_results`)
    const keys = sql(`${prefix}_task_keys`)
    const resultsExpiry = sql(`${prefix}_task_results_expires_at`)
    const keysExpiry = sql(`${prefix}_task_keys_expires_at`)

    // Concurrent `create table if not exists` can still collide in pg_type: serialise replicas.
    yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql`select pg_advisory_xact_lock(hashtext(${`effect-background/${prefix}/results`}))`
      yield* sql`create table if not exists ${results} (
        id text primary key,
        task text not null,
        outcome text not null,
        finished_at bigint not null,
        expires_at bigint not null
      )`
      yield* sql`create index if not exists ${resultsExpiry} on ${results} (expires_at)`
      yield* sql`create table if not exists ${keys} (
        task text not null,
        key text not null,
        task_id text not null,
        done boolean not null default false,
        expires_at bigint not null,
        stale_at bigint not null,
        primary key (task, key)
      )`
      yield* sql`create index if not exists ${keysExpiry} on ${keys} (expires_at)`
    }))

    const put: ResultStore.Service["put"] = (result) =>
      sql`insert into ${results} (id, task, outcome, finished_at, expires_at)
        values (${result.id}, ${result.task}, ${result.outcome}, ${result.finishedAt}, ${result.expiresAt})
        on conflict (id) do update set outcome = excluded.outcome, finished_at = excluded.finished_at,
          expires_at = excluded.expires_at`.pipe(Effect.asVoid, Effect.mapError(storeError("put")))

    const get: ResultStore.Service["get"] = (id, now) =>
      sql<ResultRow>`select id, task, outcome, finished_at, expires_at from ${results}
        where id = ${id} and expires_at > ${now}`.pipe(
        Effect.map((rows) =>
          Option.map(Option.fromNullable(rows[0]), (row) => ({
            id: row.id,
            task: row.task,
            outcome: row.outcome,
            finishedAt: toNumber(row.finished_at),
            expiresAt: toNumber(row.expires_at)
          }))
        ),
        Effect.mapError(storeError("get"))
      )

    // One statement decides: insert, or take over a claim that is done and past its window. Of
    // concurrent claims one inserts; the others wait on its row lock, see it live, and update nothing.
    const claimOnce = (claim: ResultStore.KeyClaim) =>
      Effect.gen(function*() {
        const won = yield* sql<{ task_id: string }>`insert into ${keys} (task, key, task_id, done, expires_at, stale_at)
          values (${claim.task}, ${claim.key}, ${claim.id}, false, ${claim.expiresAt}, ${claim.staleAt})
          on conflict (task, key) do update set task_id = excluded.task_id, done = false,
            expires_at = excluded.expires_at, stale_at = excluded.stale_at
          where ${keys}.expires_at <= ${claim.claimedAt} and (${keys}.done or ${keys}.stale_at <= ${claim.claimedAt})
          returning task_id`
        const first = won[0]
        if (first !== undefined) return Option.some(first.task_id)
        const holder = yield* sql<{ task_id: string }>`select task_id from ${keys}
          where task = ${claim.task} and key = ${claim.key}`
        return Option.fromNullable(holder[0]?.task_id)
      })

    const claim: ResultStore.Service["claim"] = (request) =>
      claimOnce(request).pipe(
        // None: the holder was released between the two statements; try again.
        Effect.repeat({ until: Option.isSome, times: 3 }),
        Effect.flatMap(Option.match({
          onNone: () =>
            Effect.fail(
              new ResultStore.ResultStoreError({ operation: "claim", detail: "key claim kept changing hands" })
            ),
          onSome: Effect.succeed
        })),
        Effect.catchTag("SqlError", (e) => Effect.fail(storeError("claim")(e)))
      )

    const release: ResultStore.Service["release"] = (task, key, id) =>
      sql`delete from ${keys} where task = ${task} and key = ${key} and task_id = ${id}`.pipe(
        Effect.asVoid,
        Effect.mapError(storeError("release"))
      )

    const complete: ResultStore.Service["complete"] = (task, key, id) =>
      sql`update ${keys} set done = true where task = ${task} and key = ${key} and task_id = ${id}`.pipe(
        Effect.asVoid,
        Effect.mapError(storeError("complete"))
      )

    const sweep = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      yield* sql`delete from ${results} where id in (
        select id from ${results} where expires_at <= ${now} limit ${sweepBatch})`
      yield* sql`delete from ${keys} where (task, key) in (
        select task, key from ${keys} where expires_at <= ${now} and (done or stale_at <= ${now}) limit ${sweepBatch})`
    })

    yield* sweep.pipe(
      Effect.tapErrorCause((cause) => Effect.logWarning("result store sweep failed", cause)),
      Effect.retry(Schedule.spaced("5 seconds")),
      Effect.repeat(Schedule.spaced(sweepInterval)),
      Effect.annotateLogs({ package: "effect-background", module: "PgResultStore" }),
      Effect.interruptible,
      Effect.forkScoped
    )

    return { put, get, claim, release, complete }
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: Options
): Layer.Layer<ResultStore.ResultStore, SqlError.SqlError | InvalidOptions, SqlClient.SqlClient> =>
  Layer.scoped(ResultStore.ResultStore, make(options))

/**
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<
  ResultStore.ResultStore,
  SqlError.SqlError | ConfigError.ConfigError | InvalidOptions,
  SqlClient.SqlClient
> => Layer.scoped(ResultStore.ResultStore, Effect.flatMap(Config.unwrap(config), make))

import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import type * as Pglite from "@electric-sql/pglite"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Predicate from "effect/Predicate"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { InvalidOptions } from "../InvalidOptions.js"
import * as options from "./options.js"

/** @internal */
export type Rows = ReadonlyArray<Record<string, unknown>>

/** @internal */
export type TransformRows = (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined

/**
 * What the connection needs from a PGlite instance; kept structural so the driver's types stay
 * out of the public API.
 *
 * @internal
 */
export interface Driver {
  readonly query: (
    sql: string,
    params: ReadonlyArray<unknown>,
    rowMode: "object" | "array"
  ) => Promise<{ readonly rows: ReadonlyArray<unknown> }>
  readonly exec: (sql: string) => Promise<ReadonlyArray<{ readonly rows: ReadonlyArray<unknown> }>>
}

const describe = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/** @internal */
export const sqlError = (action: string) => (cause: unknown): SqlError =>
  new SqlError({ cause, message: `PgliteClient: ${action}: ${describe(cause)}` })

/**
 * The driver's module, loaded when a client is made rather than when this library is imported:
 * `@electric-sql/pglite` is an optional peer dependency, so its absence is a typed failure of the
 * Layer, not an import error of the application.
 *
 * @internal
 */
export const loadDriver: Effect.Effect<typeof Pglite, SqlError> = Effect.tryPromise({
  try: () => import("@electric-sql/pglite"),
  catch: sqlError("cannot load @electric-sql/pglite (an optional peer dependency: add it to the application)")
})

const MODULE = "PgliteClient"

/**
 * The options as a caller may pass them (a JavaScript caller or a `Config` may hand over any
 * value); mirrors `PgliteClientConfig` without importing the public module.
 *
 * @internal
 */
export interface UncheckedConfig {
  readonly dataDir?: unknown
  readonly database?: unknown
  readonly username?: unknown
  readonly parsers?: unknown
  readonly spanAttributes?: unknown
  readonly transformResultNames?: unknown
  readonly transformQueryNames?: unknown
  readonly transformJson?: unknown
}

// PostgreSQL truncates names to NAMEDATALEN - 1 bytes; a longer one would name another database.
const MAX_NAME_BYTES = 63
const MAX_OID = 4_294_967_295

const ok: Either.Either<void, InvalidOptions> = Either.void

const text = (
  field: string,
  value: unknown,
  maxBytes: number | undefined
): Either.Either<void, InvalidOptions> => {
  if (value === undefined) return ok
  if (typeof value !== "string" || value.length === 0) {
    return Either.left(options.invalid(MODULE, field, value, "must be a non-empty string"))
  }
  if (value.includes("\u0000")) return Either.left(options.invalid(MODULE, field, value, "must not contain U+0000"))
  if (maxBytes !== undefined && new TextEncoder().encode(value).length > maxBytes) {
    return Either.left(options.invalid(MODULE, field, value, `must be at most ${maxBytes} bytes in UTF-8`))
  }
  return ok
}

const fn = (field: string, value: unknown): Either.Either<void, InvalidOptions> =>
  value === undefined || Predicate.isFunction(value)
    ? ok
    : Either.left(options.invalid(MODULE, field, value, "must be a function"))

const record = (field: string, value: unknown): Either.Either<void, InvalidOptions> =>
  value === undefined || Predicate.isRecord(value)
    ? ok
    : Either.left(options.invalid(MODULE, field, value, "must be an object"))

const parsers = (value: unknown): Either.Either<void, InvalidOptions> =>
  Either.gen(function*() {
    if (value === undefined) return
    if (!Predicate.isRecord(value)) {
      return yield* Either.left(options.invalid(MODULE, "parsers", value, "must be an object"))
    }
    for (const [key, parser] of Object.entries(value)) {
      const oid = /^[1-9][0-9]*$/.test(key) ? Number(key) : NaN
      if (!(oid <= MAX_OID)) {
        return yield* Either.left(options.invalid(MODULE, "parsers", key, "keys must be PostgreSQL type OIDs"))
      }
      yield* fn(`parsers.${key}`, parser)
    }
  })

/**
 * Every option of `PgliteClient.make` / `layer` / `layerConfig`, checked before the database
 * starts.
 *
 * @internal
 */
export const validate = (config: UncheckedConfig): Either.Either<void, InvalidOptions> =>
  Either.gen(function*() {
    yield* text("dataDir", config.dataDir, undefined)
    yield* text("database", config.database, MAX_NAME_BYTES)
    yield* text("username", config.username, MAX_NAME_BYTES)
    yield* parsers(config.parsers)
    yield* record("spanAttributes", config.spanAttributes)
    yield* fn("transformResultNames", config.transformResultNames)
    yield* fn("transformQueryNames", config.transformQueryNames)
    if (config.transformJson !== undefined && typeof config.transformJson !== "boolean") {
      return yield* Either.left(options.invalid(MODULE, "transformJson", config.transformJson, "must be a boolean"))
    }
  })

const isRow = (row: unknown): row is Record<string, unknown> => typeof row === "object" && row !== null

const asRows = (rows: ReadonlyArray<unknown>): Rows => rows.filter(isRow)

const asValues = (rows: ReadonlyArray<unknown>): ReadonlyArray<ReadonlyArray<unknown>> =>
  rows.filter((row): row is ReadonlyArray<unknown> => Array.isArray(row))

/**
 * One connection over the single PGlite backend. Callers serialise access (the client hands it out
 * under a one-permit semaphore), exactly like a pool of size one.
 *
 * @internal
 */
export const makeConnection = (driver: Driver): Connection => {
  // Without parameters node-postgres uses the simple protocol, which accepts several statements
  // (migrations and `sql.unsafe` scripts rely on it); PGlite's `exec` is the same protocol.
  const run = (sql: string, params: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<unknown>, SqlError> =>
    params.length > 0 ?
      Effect.tryPromise({
        try: () => driver.query(sql, params, "object"),
        catch: sqlError("failed to execute statement")
      }).pipe(Effect.map((result) => asRows(result.rows))) :
      Effect.tryPromise({
        try: () => driver.exec(sql),
        catch: sqlError("failed to execute statement")
      }).pipe(
        Effect.map((results) => {
          const only = results.length === 1 ? results[0] : undefined
          return only !== undefined ? asRows(only.rows) : results.map((result) => asRows(result.rows))
        })
      )

  const transform = <A>(rows: A, transformRows: TransformRows): A =>
    transformRows !== undefined && Array.isArray(rows) ? transformRows(asRows(rows)) as A : rows

  return {
    execute: (sql, params, transformRows) => Effect.map(run(sql, params), (rows) => transform(rows, transformRows)),
    executeRaw: (sql, params) =>
      Effect.tryPromise({
        try: () => driver.query(sql, params, "object"),
        catch: sqlError("failed to execute statement")
      }),
    executeStream: (sql, params, transformRows) =>
      // PGlite has no cursors over its in-process protocol: the result is already in memory.
      Stream.flatMap(
        Stream.fromEffect(run(sql, params)),
        (rows) => Stream.fromIterable(transform(rows, transformRows))
      ),
    executeValues: (sql, params) =>
      Effect.tryPromise({
        try: () => driver.query(sql, params, "array"),
        catch: sqlError("failed to execute statement")
      }).pipe(Effect.map((result) => asValues(result.rows))),
    executeUnprepared: (sql, params, transformRows) =>
      Effect.map(run(sql, params), (rows) => transform(rows, transformRows))
  }
}

/** @internal */
export interface PgJson extends Statement.Custom<"PgJson", unknown> {}

/** @internal */
export const PgJson = Statement.custom<PgJson>("PgJson")

const escape = Statement.defaultEscape("\"")

/** @internal */
export const escapeIdentifier = escape

/**
 * The PostgreSQL dialect as `@effect/sql-pg` compiles it (`$n` placeholders, `"` identifiers,
 * `json` fragments), so statements behave the same on PGlite and on a server.
 *
 * @internal
 */
export const makeCompiler = (
  transform?: (name: string) => string,
  transformJson = true
): Statement.Compiler => {
  const transformValue = transformJson && transform !== undefined
    ? Statement.defaultTransforms(transform).value
    : undefined
  return Statement.makeCompiler<PgJson>({
    dialect: "pg",
    placeholder: (index) => `$${index}`,
    onIdentifier: transform !== undefined ?
      (value, withoutTransform) => withoutTransform ? escape(value) : escape(transform(value)) :
      escape,
    onRecordUpdate: (placeholders, valueAlias, valueColumns, values, returning) => [
      `(values ${placeholders}) AS ${valueAlias}${valueColumns}${returning ? ` RETURNING ${returning[0]}` : ""}`,
      returning ? values.flat().concat(returning[1]) : values.flat()
    ],
    onCustom: (type, placeholder, withoutTransform) => [
      placeholder(undefined),
      [JSON.stringify(withoutTransform || transformValue === undefined ? type.i0 : transformValue(type.i0))]
    ]
  })
}

/**
 * A first-come first-served lock. Effect's Semaphore lets a fiber that releases and re-takes in
 * one synchronous run jump the queue, which starves waiters under a busy loop (an outbox
 * dispatcher claiming batch after batch); here the lock is handed to the oldest waiter.
 *
 * @internal
 */
export interface Lock {
  /** Holds the lock until the enclosing Scope closes. */
  readonly acquire: Effect.Effect<void, never, Scope.Scope>
  readonly withLock: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/** @internal */
export const makeLock: Effect.Effect<Lock> = Effect.sync(() => {
  let held = false
  const waiters: Array<Deferred.Deferred<void>> = []

  const release = Effect.sync(() => {
    const next = waiters.shift()
    if (next === undefined) held = false
    else Deferred.unsafeDone(next, Exit.void)
  })

  const take = (restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>) =>
    Effect.suspend((): Effect.Effect<void> => {
      if (!held) {
        held = true
        return Effect.void
      }
      return Effect.flatMap(Deferred.make<void>(), (turn) => {
        waiters.push(turn)
        return restore(Deferred.await(turn)).pipe(
          Effect.onInterrupt(() =>
            Effect.suspend(() => {
              const index = waiters.indexOf(turn)
              if (index >= 0) {
                waiters.splice(index, 1)
                return Effect.void
              }
              // Handed over just as we were interrupted: pass it on.
              return release
            })
          )
        )
      })
    })

  return {
    acquire: Effect.uninterruptibleMask((restore) =>
      Effect.zipRight(take(restore), Effect.asVoid(Effect.addFinalizer(() => release)))
    ),
    withLock: (effect) =>
      Effect.uninterruptibleMask((restore) => Effect.zipRight(take(restore), Effect.ensuring(restore(effect), release)))
  }
})

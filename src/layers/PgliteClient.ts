/**
 * An `@effect/sql` `SqlClient` over PGlite, PostgreSQL compiled to WASM and run in-process: the
 * embedded default of the examples and a PostgreSQL for tests without a server. It compiles
 * statements as `@effect/sql-pg` does and parses values as node-postgres does (`int8` and
 * `numeric` as strings), so code written against `PgClient` runs unchanged.
 *
 * PGlite has one backend, so the client behaves like a pool of one connection: statements
 * queue, and a transaction holds the connection until it commits or rolls back. Do not
 * `reserve` a second connection inside a transaction (it would wait for itself).
 *
 * `@electric-sql/pglite` is an optional peer dependency of this package: an application that
 * uses this module adds it to its own dependencies. It is loaded when a client is made, so
 * without it the Layer fails with a `SqlError` that says so.
 *
 * @since 0.1.0
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as internal from "../internal/pglite.js"
import type { InvalidOptions } from "../InvalidOptions.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-background/PgliteClient")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * Parses a column's text value; keyed by PostgreSQL type OID.
 *
 * @since 0.1.0
 * @category models
 */
export type Parser = (value: string, typeId?: number) => unknown

/**
 * @since 0.1.0
 * @category models
 */
export interface PgliteClientConfig {
  /** Where the database files live (a non-empty path); in memory when omitted (or `memory://`). */
  readonly dataDir?: string | undefined
  /** A non-empty name of at most 63 bytes. */
  readonly database?: string | undefined
  /** A non-empty name of at most 63 bytes. */
  readonly username?: string | undefined
  /** Extra or replacement value parsers keyed by type OID (defaults follow node-postgres). */
  readonly parsers?: Readonly<Record<number, Parser>> | undefined
  readonly spanAttributes?: Readonly<Record<string, unknown>> | undefined
  readonly transformResultNames?: ((name: string) => string) | undefined
  readonly transformQueryNames?: ((name: string) => string) | undefined
  readonly transformJson?: boolean | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PgliteClient extends SqlClient.SqlClient {
  readonly [TypeId]: TypeId
  readonly config: PgliteClientConfig
  /** A `jsonb`/`json` parameter, as `PgClient.json`. */
  readonly json: (value: unknown) => Statement.Fragment
  /** Payloads sent with `NOTIFY` on the channel while the stream runs. */
  readonly listen: (channel: string) => Stream.Stream<string, SqlError>
  readonly notify: (channel: string, payload: string) => Effect.Effect<void, SqlError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export const PgliteClient = Context.GenericTag<PgliteClient>("effect-background/PgliteClient")

const INT8 = 20

// node-postgres returns int8 as a string (JavaScript numbers lose precision past 2^53);
// PGlite would return a number. Code tested here must see what production sees.
const defaultParsers: Readonly<Record<number, Parser>> = { [INT8]: (value) => value }

/**
 * Starts a PGlite database for the lifetime of the Scope and builds a client over it. Fails with
 * `InvalidOptions` (module `"PgliteClient"`) for an option out of range, before anything starts,
 * and with `SqlError` when the database cannot start.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  config: PgliteClientConfig = {}
): Effect.Effect<PgliteClient, SqlError | InvalidOptions, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function*() {
    yield* internal.validate(config)
    const { PGlite } = yield* internal.loadDriver
    const db = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          PGlite.create({
            ...(config.dataDir !== undefined ? { dataDir: config.dataDir } : {}),
            ...(config.database !== undefined ? { database: config.database } : {}),
            ...(config.username !== undefined ? { username: config.username } : {}),
            parsers: { ...defaultParsers, ...config.parsers }
          }),
        catch: internal.sqlError("failed to start PGlite")
      }),
      (db) =>
        Effect.tryPromise(() => db.close()).pipe(
          Effect.catchAll((error) => Effect.logWarning("PgliteClient: closing the database failed", error))
        )
    )

    const driver: internal.Driver = {
      query: (sql, params, rowMode) => db.query(sql, [...params], { rowMode }),
      exec: (sql) => db.exec(sql)
    }
    const connection = internal.makeConnection(driver)

    // One backend: a permit per statement outside transactions, one for a whole transaction.
    const lock = yield* internal.makeLock
    const acquirer = Effect.as(lock.acquire, connection)

    const compiler = internal.makeCompiler(config.transformQueryNames, config.transformJson)
    const transformRows = config.transformResultNames !== undefined
      ? Statement.defaultTransforms(config.transformResultNames, config.transformJson).array
      : undefined

    const client = yield* SqlClient.make({
      acquirer,
      transactionAcquirer: acquirer,
      compiler,
      spanAttributes: [
        ...(config.spanAttributes !== undefined ? Object.entries(config.spanAttributes) : []),
        ["db.system.name", "postgresql"],
        ["db.namespace", config.database ?? "postgres"],
        ["server.address", "pglite"]
      ],
      transformRows
    })

    // LISTEN is transactional: it must not run inside another fiber's open transaction.
    const exclusive = <A>(f: () => Promise<A>, action: string): Effect.Effect<A, SqlError> =>
      lock.withLock(Effect.tryPromise({ try: f, catch: internal.sqlError(action) }))

    const listen = (channel: string): Stream.Stream<string, SqlError> =>
      Stream.asyncPush<string, SqlError>((emit) => {
        const quoted = internal.escapeIdentifier(channel)
        const onNotification = (payload: string) => emit.single(payload)
        // The function PGlite's `listen` returns re-issues UNLISTEN with the unquoted name, which
        // breaks for names that need quotes; `unlisten` with the quoted name does not.
        return Effect.acquireRelease(
          exclusive(() => db.listen(quoted, onNotification), `failed to listen on ${channel}`),
          () =>
            exclusive(() => db.unlisten(quoted, onNotification), `failed to unlisten ${channel}`).pipe(
              Effect.catchAll((error) => Effect.logWarning("PgliteClient: UNLISTEN failed", error))
            )
        )
      })

    const notify = (channel: string, payload: string): Effect.Effect<void, SqlError> =>
      Effect.asVoid(client`SELECT pg_notify(${channel}, ${payload})`)

    const extension: Omit<PgliteClient, keyof SqlClient.SqlClient> = {
      [TypeId]: TypeId,
      config,
      json: (value: unknown) => internal.PgJson(value, undefined, undefined),
      listen,
      notify
    }
    return Object.assign(client, extension)
  })

const toContext = (client: PgliteClient) =>
  Context.make(PgliteClient, client).pipe(Context.add(SqlClient.SqlClient, client))

/**
 * A fresh database for the lifetime of the Layer (in memory unless `dataDir` is set); fails to
 * build as {@link make} does.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: PgliteClientConfig = {}
): Layer.Layer<PgliteClient | SqlClient.SqlClient, SqlError | InvalidOptions> =>
  Layer.scopedContext(Effect.map(make(config), toContext)).pipe(Layer.provide(Reactivity.layer))

/**
 * As {@link layer}, reading the configuration (e.g. `Config.all({ dataDir: Config.option(...) })`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<PgliteClientConfig>
): Layer.Layer<PgliteClient | SqlClient.SqlClient, SqlError | InvalidOptions | ConfigError.ConfigError> =>
  Layer.scopedContext(
    Config.unwrap(config).pipe(Effect.flatMap(make), Effect.map(toContext))
  ).pipe(Layer.provide(Reactivity.layer))

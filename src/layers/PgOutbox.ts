/**
 * The Outbox on PostgreSQL: an `OutboxStore` on the `SqlClient` (the table, created idempotently
 * on Layer build; `FOR UPDATE SKIP LOCKED` claims; LISTEN/NOTIFY wake-ups on a connection of its
 * own, taken from the `PgClient`'s config), and the Layers that put the `Outbox` service and a
 * dispatcher on it.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import type * as Pg from "pg"
import type * as Broker from "../Broker.js"
import * as checks from "../internal/options.js"
import * as outboxChecks from "../internal/outbox/checks.js"
import * as Dispatcher from "../internal/outbox/dispatcher.js"
import * as PgStore from "../internal/outbox/pgStore.js"
import * as Sql from "../internal/outbox/sql.js"
import type { InvalidOptions } from "../InvalidOptions.js"
import * as Outbox from "../Outbox.js"
import * as OutboxStore from "../OutboxStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Table name prefix (a plain SQL identifier of at most 40 bytes): the table is `<prefix>_outbox`. Default `eb`. */
  readonly prefix?: string | undefined
  /**
   * After each `add`, wake dispatchers in other processes with a `pg_notify` sent on a separate
   * connection, coalesced to at most one per `notifyInterval` (never inside the caller's
   * transaction). Default true.
   */
  readonly notify?: boolean | undefined
  /** Finite, non-negative. Default 20 milliseconds (the first NOTIFY after a quiet period goes at once). */
  readonly notifyInterval?: Duration.DurationInput | undefined
  /**
   * `application_name` of a dispatcher's LISTEN connection (1-63 bytes, PostgreSQL's limit).
   * Default `eb-outbox-listen`.
   */
  readonly listenApplicationName?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface DispatcherOptions extends Options, Outbox.DispatcherOptions {}

/**
 * @since 0.1.0
 * @category models
 */
export const defaults = {
  prefix: "eb",
  notifyInterval: "20 millis",
  listenApplicationName: "eb-outbox-listen"
} as const

const module = "PgOutbox"

/** PostgreSQL keeps the first 63 bytes of an `application_name` (NAMEDATALEN - 1). */
const maxApplicationNameBytes = 63

interface Resolved {
  readonly tables: Sql.Tables
  readonly notify: boolean
  readonly notifyInterval: Duration.Duration
  readonly listenApplicationName: string
}

const resolve = (options: Options | undefined): checks.Checked<Resolved> =>
  Either.all({
    tables: Sql.tables(options?.prefix),
    notify: outboxChecks.boolean(module, "notify", options?.notify, true),
    notifyInterval: checks.duration(module, "notifyInterval", options?.notifyInterval, {
      fallback: Duration.decode(defaults.notifyInterval)
    }),
    listenApplicationName: Either.map(
      outboxChecks.text(module, "listenApplicationName", options?.listenApplicationName, {
        maxBytes: maxApplicationNameBytes
      }),
      (name) => name ?? defaults.listenApplicationName
    )
  })

const listenConfig = (config: PgClient.PgClientConfig, applicationName: string): Pg.ClientConfig => ({
  connectionString: config.url === undefined ? undefined : Redacted.value(config.url),
  host: config.path ?? config.host,
  port: config.port,
  database: config.database,
  user: config.username,
  password: config.password === undefined ? undefined : Redacted.value(config.password),
  ssl: config.ssl,
  application_name: applicationName,
  keepAlive: true
})

/**
 * The `OutboxStore` on the `SqlClient` in context; creates the table if needed. Its LISTEN
 * wake-ups need a `PgClient` in context (they open their own connection from its config);
 * without one (another SqlClient, such as PGlite) dispatchers on it are woken in-process and by
 * their poll interval.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeOutboxStore = (
  options?: Options
): Effect.Effect<OutboxStore.Service, SqlError | InvalidOptions, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const resolved = yield* resolve(options)
    const sql = yield* SqlClient.SqlClient
    const pg = yield* Effect.serviceOption(PgClient.PgClient)
    return yield* PgStore.make(sql, {
      tables: resolved.tables,
      notify: resolved.notify,
      notifyInterval: resolved.notifyInterval,
      listen: Option.map(pg, (client) => listenConfig(client.config, resolved.listenApplicationName))
    })
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layerOutboxStore = (
  options?: Options
): Layer.Layer<OutboxStore.OutboxStore, SqlError | InvalidOptions, SqlClient.SqlClient> =>
  Layer.scoped(OutboxStore.OutboxStore, makeOutboxStore(options))

/**
 * Creates the table if needed and returns the `Outbox` service.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options?: Options
): Effect.Effect<Outbox.Service, SqlError | InvalidOptions, SqlClient.SqlClient | Scope.Scope> =>
  Effect.flatMap(makeOutboxStore(options), Outbox.make)

/**
 * The `Outbox` service alone (producers that do not dispatch).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerStore = (
  options?: Options
): Layer.Layer<Outbox.Outbox, SqlError | InvalidOptions, SqlClient.SqlClient> =>
  Layer.scoped(Outbox.Outbox, make(options))

/** Every option checked before anything touches the database. */
const validated = <A, E, R>(options: DispatcherOptions | undefined, layer: Layer.Layer<A, E, R>) =>
  Layer.unwrapEffect(Effect.as(Effect.zipRight(resolve(options), Dispatcher.resolve(options)), layer))

/**
 * Runs a dispatcher for as long as the Layer lives (see `Outbox.dispatcher`) on a store of its
 * own. Batches run on the `SqlClient` it is given (give it its own pool with an
 * `applicationName` to tell its connections apart). Creates the table if needed.
 *
 * LISTEN opens its own connection from the `PgClient`'s config; without a `PgClient` in the
 * context (another SqlClient, such as PGlite) the dispatcher is woken by in-process signals and
 * the poll interval, and says so in the log.
 *
 * @since 0.1.0
 * @category layers
 */
export const dispatcher = (
  options?: DispatcherOptions
): Layer.Layer<never, SqlError | InvalidOptions, SqlClient.SqlClient | Broker.Broker> =>
  validated(options, Outbox.dispatcher(options).pipe(Layer.provide(layerOutboxStore(options))))

/**
 * The `Outbox` service and a dispatcher in this process, on one store (in-process wake-ups skip
 * the NOTIFY round trip).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: DispatcherOptions
): Layer.Layer<Outbox.Outbox, SqlError | InvalidOptions, SqlClient.SqlClient | Broker.Broker> =>
  validated(
    options,
    Outbox.dispatcher(options).pipe(Layer.provideMerge(Outbox.layer), Layer.provide(layerOutboxStore(options)))
  )

/**
 * As `layer`, with the table prefix and notify settings read from `Config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>,
  dispatcherOptions?: Outbox.DispatcherOptions
): Layer.Layer<
  Outbox.Outbox,
  SqlError | InvalidOptions | ConfigError.ConfigError,
  SqlClient.SqlClient | Broker.Broker
> => Layer.unwrapEffect(Effect.map(Config.unwrap(config), (options) => layer({ ...dispatcherOptions, ...options })))
